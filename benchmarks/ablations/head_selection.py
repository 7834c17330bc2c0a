"""Screen: how the frozen head + TF-IDF picks its ``C`` and dense weight, and what that costs on test.

Same data path, label samples and features as ``nlp-ssl baseline`` with ``method: frozen_logreg,
tfidf: true`` (a skip-gram run's mean-pooled vectors, standardised to unit-norm rows, beside
TF-IDF word n-grams and optionally character n-grams); only the rule that picks the
(``C``, dense weight) pair changes:
- ``validation``: accuracy on the validation split (what the stage does);
- ``cv``: 5-fold cross-validated accuracy on the training sample (no validation labels);
- ``pooled``: the cross-validated predictions and the validation predictions together.
Every pair is fitted once on the whole training sample; the test accuracy of the pair each rule
picks is printed, beside the best and worst test accuracy over the grid (the range any rule could
land in). The vectorizer is fitted once on the training sample, also for the folds (its idf sees
the held-out fold: a screen's shortcut).

    python benchmarks/ablations/head_selection.py runs/study-embeddings-32k/pretrain-sg --counts all
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rt_screen import DATA  # first: it puts the repository on the import path

from nlp_ssl.baselines import C_GRID, BaselineConfig, _Texts, held_out_folds, tfidf_vectorizer, unit_norm_scaler
from nlp_ssl.config import from_dict
from nlp_ssl.tasks.classification import load_sentiment_data


def main() -> None:
    import scipy.sparse as sp
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a skipgram/cbow run (its model/ folder is read)")
    parser.add_argument("--counts", nargs="+", default=["50", "200", "1000", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--char-ngrams", nargs=2, type=int, default=[2, 5], metavar=("LOW", "HIGH"))
    parser.add_argument("--words-only", action="store_true", help="no character n-grams")
    parser.add_argument("--C", nargs="+", type=float, default=list(C_GRID))
    parser.add_argument("--weights", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-vectors", action="store_true", help="TF-IDF alone (the labels-only baseline)")
    args = parser.parse_args()

    encoder = None if args.no_vectors else SentenceTransformer(str(args.run / "model"), device="cpu")
    results: dict = {}
    for n in args.counts:
        picked: dict = {"validation": [], "cv": [], "pooled": [], "best": [], "worst": []}
        for seed in args.seeds if n != "all" else args.seeds[:1]:
            cfg = from_dict(
                BaselineConfig,
                {
                    "output_dir": "unused",
                    "seed": seed,
                    "selection": "validation_and_cv",
                    "cv_folds": args.folds,
                    "char_ngrams": None if args.words_only else args.char_ngrams,
                    "data": {**DATA, "train_samples": None if n == "all" else int(n)},
                },
            )
            splits, _, train_index = load_sentiment_data(cfg, _Texts())
            text = {k: s["baseline_text"] for k, s in splits.items()}
            text["train"] = [text["train"][i] for i in train_index]
            y = {k: np.asarray(s["label_id"]) for k, s in splits.items()}
            y["train"] = y["train"][train_index]
            vectorizer = tfidf_vectorizer(cfg)
            sparse = {"train": vectorizer.fit_transform(text["train"])}
            sparse.update({k: vectorizer.transform(text[k]) for k in ("eval", "test")})
            if not args.no_vectors:
                dense = {k: encoder.encode(text[k], batch_size=64) for k in ("train", "eval", "test")}
                scaler = unit_norm_scaler(dense["train"])
                dense = {k: scaler.transform(v) for k, v in dense.items()}
            folds = held_out_folds(cfg, y["train"])  # the stage's own folds
            rows = []
            for weight in [None] if args.no_vectors else args.weights:
                x = {
                    k: sparse[k]
                    if weight is None
                    else sp.hstack([sparse[k], sp.csr_matrix(weight * dense[k])], format="csr")
                    for k in sparse
                }
                for c in args.C:

                    def fit(rows_, c=c, seed=seed, x=x, y=y):  # called at once, in this iteration
                        return LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(
                            x["train"][rows_], y["train"][rows_]
                        )

                    model = fit(np.arange(len(y["train"])))
                    right_val = int((model.predict(x["eval"]) == y["eval"]).sum())
                    right_cv = sum(int((fit(tr).predict(x["train"][te]) == y["train"][te]).sum()) for tr, te in folds)
                    rows.append(
                        {
                            "C": c,
                            "weight": weight,
                            "validation": right_val / len(y["eval"]),
                            "cv": right_cv / len(y["train"]),
                            "pooled": (right_val + right_cv) / (len(y["eval"]) + len(y["train"])),
                            "test": float((model.predict(x["test"]) == y["test"]).mean()),
                        }
                    )
            for rule in ("validation", "cv", "pooled"):
                best = max(rows, key=lambda r: r[rule])  # first of ties: the smaller C, then the smaller weight
                picked[rule].append(best["test"])
                print(
                    f"{n} seed {seed} {rule:10s} C={best['C']:g} weight={best['weight']} "
                    f"{rule} {100 * best[rule]:.2f} test {100 * best['test']:.2f}",
                    flush=True,
                )
            picked["best"].append(max(r["test"] for r in rows))
            picked["worst"].append(min(r["test"] for r in rows))
        results[n] = {
            rule: {
                "mean": round(100 * float(np.mean(v)), 2),
                "std": round(100 * float(np.std(v, ddof=1)), 2) if len(v) > 1 else None,
            }
            for rule, v in picked.items()
        }
        print(n, json.dumps(results[n]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
