"""Copy a Hugging Face Hub dataset into the local-mirror layout nlp-ssl reads offline.

Run it where the Hub is reachable; copy the folder to the offline machine and point
``NLP_SSL_DATA_DIR`` at its parent. Layout: ``<out>/<folder>/<split>.jsonl[.gz]``.

    python data_scripts/mirror_from_hub.py rotten_tomatoes --out ~/nlp-data
    python data_scripts/mirror_from_hub.py nyu-mll/glue --config sst2 --out ~/nlp-data
    python data_scripts/mirror_from_hub.py roneneldan/TinyStories --gzip --max-rows 200000 --out ~/nlp-data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlp_ssl.data import mirror_candidates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="Hub dataset id")
    parser.add_argument("--config", default=None, help="configuration (subset) name")
    parser.add_argument("--out", required=True, type=Path, help="mirror root (NLP_SSL_DATA_DIR)")
    parser.add_argument("--splits", nargs="*", default=None, help="splits to copy (default: all)")
    parser.add_argument("--max-rows", type=int, default=None, help="first N rows of each split")
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz")
    args = parser.parse_args()

    import datasets

    folder = args.out / mirror_candidates(args.dataset, args.config)[0]
    folder.mkdir(parents=True, exist_ok=True)
    splits = datasets.load_dataset(args.dataset, args.config)
    for name, split in splits.items():
        if args.splits and name not in args.splits:
            continue
        if args.max_rows is not None:
            split = split.select(range(min(args.max_rows, len(split))))
        target = folder / f"{name}.jsonl{'.gz' if args.gzip else ''}"
        split.to_json(str(target), lines=True, force_ascii=False, compression="gzip" if args.gzip else None)
        print(f"{target}: {len(split)} rows")


if __name__ == "__main__":
    main()
