"""Tokenizer stage vs. the bare ``tokenizers`` trainer on the same corpus and settings.

The baseline is what a user would write by hand: read the JSONL(.gz) with ``gzip``/``json``,
clean the <br /> tags, and call ``Tokenizer.train_from_iterator`` with the same trainer.
The stage adds the data layer (``datasets`` loading and validation), byte counting,
progress, and saving the folder with its run files. Reports seconds and the ratio.

    python benchmarks/bench_tokenizer.py [--vocab-size 8192] [--repeats 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import tempfile
from pathlib import Path

# the tokenizer trainer's own threads are part of what is timed (the harness turns them off)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from harness import timed  # first: the repository on the import path, offline defaults  # noqa: E402

from nlp_ssl.data import DatasetSpec, resolve
from nlp_ssl.tokenizer import TokenizerConfig, build_tokenizer, run


def baseline(cfg: TokenizerConfig, files: list[str]) -> float:
    tok, trainer = build_tokenizer(cfg)
    br = re.compile(r"<br\s*/?>", re.IGNORECASE)

    def batches():
        batch = []
        for path in files:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    batch.append(br.sub("\n", json.loads(line)["text"]))
                    if len(batch) == cfg.batch_size:
                        yield batch
                        batch = []
        if batch:
            yield batch

    return timed(lambda: tok.train_from_iterator(batches(), trainer=trainer))[1]


def stage(cfg: TokenizerConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir = str(Path(tmp) / "tok")
        return timed(lambda: run(cfg))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imdb_unsup_lm")
    parser.add_argument("--model", default="bpe", choices=["bpe", "wordpiece", "unigram"])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--streaming", action="store_true")
    args = parser.parse_args()

    spec = DatasetSpec(name=args.dataset, clean_html=True, streaming=args.streaming)
    files = resolve(spec).files
    cfg = TokenizerConfig(output_dir="unused", datasets=[spec], model=args.model, vocab_size=args.vocab_size)
    size = sum(os.path.getsize(f) for f in files)
    print(f"corpus: {', '.join(files)} ({size / 1e6:.1f} MB on disk), {args.model} vocab {args.vocab_size}")
    base_times, stage_times = [], []
    for i in range(args.repeats):
        base_times.append(baseline(cfg, files))
        stage_times.append(stage(cfg))
        print(f"  repeat {i + 1}: tokenizers direct {base_times[-1]:.2f} s, nlp-ssl stage {stage_times[-1]:.2f} s")
    b, s = min(base_times), min(stage_times)
    result = {
        "baseline_seconds": round(b, 3),
        "stage_seconds": round(s, 3),
        "stage_over_baseline_time": round(s / b, 3),
        "stage_throughput_ratio": round(b / s, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
