"""Screen: how to pool a skip-gram run's token vectors into a sentence feature for the frozen head.

Same data path and label samples as ``nlp-ssl baseline`` (``load_sentiment_data`` with the
study's seeds), same logistic-regression grid and choice of ``C`` on validation; only the
sentence feature changes:
- ``mean``: the mean of the token vectors (what ``SentenceTransformer(run/model)`` gives, and
  what ``method: frozen_logreg`` uses);
- ``sif``: the mean with each token weighted by a / (a + p(token)), p from the run's corpus
  counts (Arora et al. 2017, without the principal-component removal);
- ``mean+max``: the mean and the element-wise max, side by side.

    python benchmarks/ablations/embedding_pooling.py runs/study-embeddings/pretrain-sg [--counts 200 1000 all]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rt_screen import DATA  # first: it puts the repository on the import path

from nlp_ssl.baselines import C_GRID, BaselineConfig, _Texts
from nlp_ssl.config import from_dict
from nlp_ssl.tasks.classification import load_sentiment_data
from nlp_ssl.vectors import load_vectors


def token_counts(run: Path, vocab: int) -> np.ndarray:
    from gensim.models import Word2Vec

    checkpoint = sorted((run / "checkpoints").glob("step-*"))[-1] / "word2vec.model"
    w2v = Word2Vec.load(str(checkpoint))
    counts = np.zeros(vocab)
    for key in w2v.wv.index_to_key:
        counts[int(key)] = w2v.wv.get_vecattr(key, "count")
    return counts


def pooled(texts, tokenizer, vectors, weights, how: str) -> np.ndarray:
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    rows = []
    for doc in ids:
        v = vectors[doc] if doc else np.zeros((1, vectors.shape[1]), dtype=vectors.dtype)
        if how == "mean":
            rows.append(v.mean(0))
        elif how == "sif":
            w = weights[doc][:, None] if doc else np.ones((1, 1))
            rows.append((v * w).mean(0))
        else:
            rows.append(np.concatenate([v.mean(0), v.max(0)]))
    return np.stack(rows)


def score(x: dict, y: dict, train_index: np.ndarray, seed: int, grid=C_GRID) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x["train"][train_index])
    dim = x["train"].shape[1]

    def scaled(v):  # as method: frozen_logreg does it
        return scaler.transform(v) / np.sqrt(dim)

    best = None
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(
            scaled(x["train"][train_index]), y["train"][train_index]
        )
        acc = (model.predict(scaled(x["eval"])) == y["eval"]).mean()
        if best is None or acc > best[0]:
            best = (acc, model)
    return float((best[1].predict(scaled(x["test"])) == y["test"]).mean())


def main() -> None:
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--counts", nargs="+", default=["50", "200", "1000", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sif-a", type=float, default=1e-3)
    parser.add_argument("--pooling", nargs="+", default=["mean", "sif", "mean+max"])
    parser.add_argument("--C", nargs="+", type=float, default=list(C_GRID), help="logistic-regression C grid")
    args = parser.parse_args()

    vectors, _, folder = load_vectors(args.run)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    counts = token_counts(args.run, len(vectors))
    weights = args.sif_a / (args.sif_a + counts / counts.sum())
    results = {}
    for how in args.pooling:
        results[how] = {}
        for n in args.counts:
            accs = []
            for seed in args.seeds if n != "all" else args.seeds[:1]:
                cfg = from_dict(
                    BaselineConfig,
                    {
                        "output_dir": "unused",
                        "seed": seed,
                        "data": {**DATA, "train_samples": None if n == "all" else int(n)},
                    },
                )
                splits, _, train_index = load_sentiment_data(cfg, _Texts())
                x = {k: pooled(s["baseline_text"], tokenizer, vectors, weights, how) for k, s in splits.items()}
                y = {k: np.asarray(s["label_id"]) for k, s in splits.items()}
                accs.append(score(x, y, train_index, seed, args.C))
            results[how][n] = {
                "mean": round(100 * float(np.mean(accs)), 1),
                "std": round(100 * float(np.std(accs, ddof=1)), 1) if len(accs) > 1 else None,
            }
            print(how, n, results[how][n], flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
