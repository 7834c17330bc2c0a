"""Screen: how much of a seq2seq training batch is padding, padded one pair per row against
packed pairs (``train.pack_pairs``), with no model run.

Tokenizes a dataset's training pairs as the task does (``tokenize_pairs``: sources truncated to
``--max-source-length``, targets to ``--max-target-length`` with EOS), draws the epochs' random
batches as the engine does (seed, epoch), and counts for each layout, as laid out on a CPU (no
padding to multiples of 8)
- real tokens / computed positions (source + target, every row padded to its batch's longest),
- attention-score work (query x key positions summed over encoder self-, decoder self- and
  cross-attention), relative to padded batches: packed rows are wider, and attention grows
  with the square of the width.

    python benchmarks/ablations/packing_padding.py                      # Multi30k en->de, as bench_seq2seq
    python benchmarks/ablations/packing_padding.py --dataset knkarthick/dialogsum --source document \
        --target summary --train-rows 0 --max-source-length 128 --max-target-length 64 --batch-size 16 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NLP_SSL_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from nlp_ssl.data import DatasetSpec  # noqa: E402
from nlp_ssl.tasks.pair_packing import assign_rows  # noqa: E402


def layouts(sources: np.ndarray, targets: np.ndarray, batch: int, widths: tuple[int, int]) -> dict:
    """Computed positions and attention-score work of one batch, padded and packed."""
    s_max, t_max = sources.max(), targets.max()
    padded = {
        "positions": batch * (s_max + t_max),
        "attention": batch * (s_max * s_max + t_max * t_max + t_max * s_max),
    }
    rows = assign_rows(sources, targets, *widths)
    s_width = max(sources[row].sum() for row in rows)
    t_width = max(targets[row].sum() for row in rows)
    packed = {
        "positions": len(rows) * (s_width + t_width),
        "attention": len(rows) * (s_width * s_width + t_width * t_width + t_width * s_width),
        "rows": len(rows),
    }
    return {"padded": padded, "packed": packed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="bentrevett/multi30k")
    parser.add_argument("--source", default="translation.en")
    parser.add_argument("--target", default="translation.de")
    parser.add_argument("--train-rows", type=int, default=8000, help="0: the whole split")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="a tokenizer folder (default: an 8,000-token BPE trained on both columns of the "
        "whole train split, as bench_seq2seq.py does)",
    )
    parser.add_argument("--max-source-length", type=int, default=64)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--widths",
        type=int,
        nargs=2,
        action="append",
        default=None,
        help="packed row widths (source, target) to try; repeatable (default: the max lengths)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nlp_ssl.tasks.seq2seq import tokenize_pairs
    from nlp_ssl.tokenizer import TokenizerConfig, load_tokenizer
    from nlp_ssl.tokenizer import run as train_tokenizer

    rows = args.train_rows or None
    spec = DatasetSpec(name=args.dataset, split="train", max_rows=rows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.tokenizer
        if folder is None:
            folder = Path(tmp) / "tok"
            train_tokenizer(
                TokenizerConfig(
                    output_dir=str(folder),
                    vocab_size=8000,
                    datasets=[DatasetSpec(name=args.dataset, split="train", text_column=[args.source, args.target])],
                )
            )
        tokenizer = load_tokenizer(folder)
        pairs = tokenize_pairs(
            spec, tokenizer, args.source, args.target, args.max_source_length, args.max_target_length
        )
    sources = np.array([len(ids) for ids in pairs["input_ids"]])
    targets = np.array([len(ids) for ids in pairs["labels"]])
    real = 0
    totals: dict[str, dict[str, float]] = {}
    widths_tried = list(dict.fromkeys(map(tuple, args.widths or [(args.max_source_length, args.max_target_length)])))
    for epoch in range(args.epochs):
        order = np.random.default_rng([args.seed, epoch]).permutation(len(sources))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = order[start : start + args.batch_size]
            real += int(sources[batch].sum() + targets[batch].sum())
            for k, widths in enumerate(widths_tried):
                for layout, counts in layouts(sources[batch], targets[batch], args.batch_size, widths).items():
                    if layout == "padded" and k > 0:  # the same for every width
                        continue
                    key = "padded" if layout == "padded" else f"packed {widths[0]}/{widths[1]}"
                    for name, value in counts.items():
                        totals.setdefault(key, {}).setdefault(name, 0)
                        totals[key][name] += value
    steps = args.epochs * (len(sources) // args.batch_size)
    padded = totals["padded"]
    result = {
        "settings": vars(args) | {"tokenizer": str(args.tokenizer), "widths": args.widths},
        "pairs": len(sources),
        "source_tokens": {"mean": round(float(sources.mean()), 1), "max": int(sources.max())},
        "target_tokens": {"mean": round(float(targets.mean()), 1), "max": int(targets.max())},
        "layouts": {
            key: {
                "real_over_computed": round(real / t["positions"], 3),
                "attention_vs_padded": round(t["attention"] / padded["attention"], 3),
                **({"rows_per_batch": round(t["rows"] / steps, 1)} if "rows" in t else {}),
            }
            for key, t in totals.items()
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
