"""Streaming pretraining keeps memory flat: peak RSS against the amount of text streamed.

Generates a synthetic corpus (Zipf-distributed words in documents of 50-400 words, in shards),
trains a small BPE on a slice of it, then runs ``nlp-ssl pretrain`` with ``streaming: true`` in a
subprocess twice, in the same script: a baseline that streams ``--baseline-fraction`` of the
text, and the full run that streams all of it. The RSS of the run (and its children) is
sampled every 0.2 s. Flat memory means: the full run's peak is about the baseline's (ratio
near 1.0) and far under the corpus size, and the RSS in the last quarter of the run is not
above the RSS in its first quarter.

    python benchmarks/bench_stream_memory.py --gb 2.0 --limit-gb 1.5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BLOCK, BATCH = 128, 64


def write_corpus(root: Path, gb: float, shards: int, seed: int = 0) -> list[Path]:
    """``gb`` GB of text: words drawn from a 20k-word Zipf vocabulary, one document per line."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(20_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    per_shard = int(gb * 1e9 / shards)
    files = []
    for s in range(shards):
        path = root / f"shard-{s:02d}.txt"
        written = 0
        with open(path, "w", encoding="utf-8") as fh:
            while written < per_shard:
                ids = rng.choice(len(vocab), size=(512, 400), p=weights)
                lengths = rng.integers(50, 400, size=512)
                lines = "".join(" ".join(vocab[i] for i in row[:n]) + ".\n" for row, n in zip(ids, lengths))
                fh.write(lines)
                written += len(lines)
        files.append(path)
    return files


def rss_of_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_streaming(
    tmp: Path, name: str, tokenizer: Path, files: list[Path], valid: Path, steps: int, shuffle_buffer: int
) -> dict:
    recipe = {
        "output_dir": str(tmp / name),
        "tokenizer": str(tokenizer),
        "objective": "mlm",
        "data": {
            "datasets": [{"files": [str(f) for f in files], "streaming": True}],
            "validation": [{"files": str(valid)}],
            "block_size": BLOCK,
            "shuffle_buffer": shuffle_buffer,
            "cache_dir": str(tmp / "cache"),
        },
        # a 1-layer, 32-wide encoder: what is measured is the data path's memory, and 2 GB of text
        # is ~400M tokens to train on, so the model must be cheap per token
        "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "intermediate": 128, "max_positions": BLOCK},
        "train": {
            "max_steps": steps,
            "micro_batch_size": BATCH,
            "lr": 1e-3,
            "warmup_steps": 10,
            "eval_every": steps,
            "eval_max_batches": 2,
            "save_every": steps,
            "log_every": 50,
            "tracker": "none",
        },
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlp_ssl", "pretrain", str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[float, int]] = []

    def sample():
        while proc.poll() is None:
            samples.append((time.time() - started, rss_of_tree(proc.pid)))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    metrics = json.loads((tmp / name / "metrics.json").read_text())
    rss = np.array([r for _, r in samples])
    quarter = max(1, len(rss) // 4)
    return {
        "steps": steps,
        "tokens": metrics["tokens"],
        "text_bytes_streamed": int(metrics["tokens"] * metrics["bytes_per_token"]),
        "seconds": round(time.time() - started, 1),
        "peak_rss_mb": round(rss.max() / 2**20, 1),
        "first_quarter_max_rss_mb": round(rss[:quarter].max() / 2**20, 1),
        "last_quarter_max_rss_mb": round(rss[-quarter:].max() / 2**20, 1),
        "samples": len(rss),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=2.0, help="size of the generated corpus")
    ap.add_argument("--limit-gb", type=float, default=1.5, help="the memory budget the run must stay under")
    ap.add_argument("--baseline-fraction", type=float, default=0.125)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument(
        "--shuffle-buffer",
        type=int,
        default=0,
        help="data.shuffle_buffer (default 0, the recipes' default; 1,000 documents cost ~0.7 GB more)",
    )
    ap.add_argument("--keep", help="folder to keep the corpus and runs in (default: a temp folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        files = sorted(tmp.glob("shard-*.txt")) or write_corpus(tmp, args.gb, args.shards)
        corpus_bytes = sum(f.stat().st_size for f in files)
        print(f"corpus: {corpus_bytes / 1e9:.2f} GB in {len(files)} shards ({time.time() - t0:.0f} s)", flush=True)
        head = tmp / "head.txt"
        with open(files[0], encoding="utf-8") as src, open(head, "w", encoding="utf-8") as dst:
            for _, line in zip(range(20_000), src):
                dst.write(line)
        tok_recipe = tmp / "tokenizer.yaml"
        tok_recipe.write_text(
            yaml.safe_dump(
                {
                    "output_dir": str(tmp / "tokenizer"),
                    "model": "bpe",
                    "vocab_size": 4096,
                    "datasets": [{"files": str(head)}],
                }
            )
        )
        if not (tmp / "tokenizer").exists():
            subprocess.run(
                [sys.executable, "-m", "nlp_ssl", "tokenizer", str(tok_recipe)],
                cwd=REPO,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        from transformers import AutoTokenizer

        sample = head.read_text(encoding="utf-8")[:2_000_000]
        bytes_per_token = len(sample.encode()) / len(
            AutoTokenizer.from_pretrained(tmp / "tokenizer")(sample)["input_ids"]
        )
        full_steps = int(corpus_bytes / bytes_per_token / (BLOCK * BATCH) * 0.95)  # stop just before the end
        base = run_streaming(
            tmp,
            "baseline",
            tmp / "tokenizer",
            files,
            head,
            max(50, int(full_steps * args.baseline_fraction)),
            args.shuffle_buffer,
        )
        print("baseline:", json.dumps(base), flush=True)
        full = run_streaming(tmp, "full", tmp / "tokenizer", files, head, full_steps, args.shuffle_buffer)
        print("full:", json.dumps(full), flush=True)
        result = {
            "corpus_gb": round(corpus_bytes / 1e9, 2),
            "limit_gb": args.limit_gb,
            "shuffle_buffer": args.shuffle_buffer,
            "baseline": base,
            "full": full,
            "text_ratio": round(full["text_bytes_streamed"] / base["text_bytes_streamed"], 2),
            "peak_rss_ratio": round(full["peak_rss_mb"] / base["peak_rss_mb"], 3),
            "under_limit": bool(full["peak_rss_mb"] < args.limit_gb * 1024),
            "flat": bool(full["last_quarter_max_rss_mb"] <= full["first_quarter_max_rss_mb"] * 1.05),
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
