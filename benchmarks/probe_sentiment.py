"""Linear probe of a pretrained encoder on rotten_tomatoes: a fast screen for pretraining ablations.

Fine-tuning a checkpoint at several label counts and seeds takes minutes per run; freezing it and
fitting logistic regression on its pooled features takes seconds, and ranks pretraining recipes
by how much sentiment their representations already separate. It is a screen, not the verdict:
the study (``nlp-ssl study``) fine-tunes the survivors.

    python benchmarks/probe_sentiment.py runs/pretrain-mlm runs/abl/mlm-preln [--counts 200 all]

Prints, per run and pooling (first token, mean over tokens), test accuracy at each label count
(mean of 3 seeds for subsamples; C of the regression chosen on validation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer

from nlp_ssl.data import DatasetSpec, load_split

C_GRID = (0.01, 0.1, 1.0, 10.0)


def features(model_dir: Path, texts: list[str], batch: int = 128, max_length: int = 64):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    first, mean = [], []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            first.append(hidden[:, 0].numpy())
            mean.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return {"first": np.concatenate(first), "mean": np.concatenate(mean)}


def balanced(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    picks = [rng.permutation(np.flatnonzero(labels == c))[: n // len(classes)] for c in classes]
    return np.concatenate(picks)


def probe(x, y, train_idx, xv, yv, xt, yt) -> float:
    mu, sd = x[train_idx].mean(0), x[train_idx].std(0) + 1e-6
    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit((x[train_idx] - mu) / sd, y[train_idx])
        val = clf.score((xv - mu) / sd, yv)
        if best is None or val > best[0]:
            best = (val, clf.score((xt - mu) / sd, yt))
    return best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="pretraining run folders (their model/) or model folders")
    ap.add_argument("--counts", nargs="+", default=["50", "200", "1000", "all"])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()

    splits = {s: load_split(DatasetSpec(name="rotten_tomatoes", split=s)) for s in ("train", "validation", "test")}
    texts = {s: list(d["text"]) for s, d in splits.items()}
    labels = {s: np.asarray(d["label"]) for s, d in splits.items()}
    results = {}
    for run in args.runs:
        model_dir = Path(run) / "model" if (Path(run) / "model").is_dir() else Path(run)
        feats = {s: features(model_dir, texts[s]) for s in texts}
        for pooling in ("first", "mean"):
            row = {}
            for count in args.counts:
                if count == "all":
                    idx = [np.arange(len(labels["train"]))]
                else:
                    idx = [balanced(labels["train"], int(count), seed) for seed in range(args.seeds)]
                accs = [
                    probe(
                        feats["train"][pooling],
                        labels["train"],
                        i,
                        feats["validation"][pooling],
                        labels["validation"],
                        feats["test"][pooling],
                        labels["test"],
                    )
                    for i in idx
                ]
                row[count] = round(100 * float(np.mean(accs)), 1)
            results[f"{run} [{pooling}]"] = row
            print(f"{run:40s} {pooling:5s} " + "  ".join(f"{c}: {v:5.1f}" for c, v in row.items()), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
