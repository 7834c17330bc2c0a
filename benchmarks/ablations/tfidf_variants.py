"""Screen: which sparse features to put beside a skip-gram run's frozen vectors, all labels.

rotten_tomatoes, every training sentence, one fit per setting; ``C`` (and the weight of the
frozen block, 0.5 / 1 / 2) chosen on validation as ``nlp-ssl baseline`` does. Prints validation
and test accuracy of each sparse feature set alone and beside the frozen vectors:
word 1-2-grams (the baseline's), word 1-3-grams, character 2-5-grams, words + characters, and
NB-weighted (log-count ratio, Wang & Manning 2012) versions of the word and word + character
sets. A screen: the verdict is the study (``char_ngrams`` in recipes/study/sentiment_rt_embeddings_32k.yaml).

    python benchmarks/ablations/tfidf_variants.py runs/study-embeddings-32k/pretrain-sg/model
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rt_screen import REPO  # first: it puts the repository on the import path
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from nlp_ssl.baselines import unit_norm_scaler

DATA = Path(os.environ.get("NLP_SSL_DATA_DIR", REPO.parent / "shared" / "data")) / "rotten_tomatoes"
C_GRID = (0.1, 0.3, 1, 3, 10, 30)


def load(split: str):
    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


def words(n=2):
    return TfidfVectorizer(ngram_range=(1, n), sublinear_tf=True, max_features=200_000)


def chars():
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)


class NBWeighted:
    """A vectorizer's features scaled by the log-count ratio of the two classes on train."""

    def __init__(self, make, y):
        self.vectorizer, self.y = make(), y

    def fit_transform(self, texts):
        x = self.vectorizer.fit_transform(texts)
        p, q = 1 + x[self.y == 1].sum(0), 1 + x[self.y == 0].sum(0)
        self.ratio = np.asarray(np.log((p / p.sum()) / (q / q.sum()))).ravel()
        return x.multiply(self.ratio).tocsr()

    def transform(self, texts):
        return self.vectorizer.transform(texts).multiply(self.ratio).tocsr()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vectors", help="a skip-gram run's model/ folder (sentence-transformers)")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    (train, y), (val, yv), (test, yt) = load("train"), load("validation"), load("test")
    encoder = SentenceTransformer(args.vectors, device="cpu")
    dense = [encoder.encode(t, batch_size=64) for t in (train, val, test)]
    scaler = unit_norm_scaler(dense[0])  # unit-norm rows, as the baseline does
    dense = [scaler.transform(d) for d in dense]
    both = lambda: FeatureUnion([("w", words()), ("c", chars())])  # noqa: E731
    variants = {
        "word 1-2": words,
        "word 1-3": lambda: words(3),
        "char 2-5": chars,
        "word 1-2 + char 2-5": both,
        "NB word 1-2": lambda: NBWeighted(words, y),
        "NB word 1-2 + char 2-5": lambda: NBWeighted(both, y),
    }
    for name, make in variants.items():
        vectorizer = make()
        sparse = [vectorizer.fit_transform(train), vectorizer.transform(val), vectorizer.transform(test)]
        for with_dense in (False, True):
            best = None
            for weight in (0.5, 1.0, 2.0) if with_dense else (1.0,):
                x = (
                    [sp.hstack([s, sp.csr_matrix(weight * d)], format="csr") for s, d in zip(sparse, dense)]
                    if with_dense
                    else sparse
                )
                for c in C_GRID:
                    model = LogisticRegression(C=c, max_iter=3000).fit(x[0], y)
                    score = (model.predict(x[1]) == yv).mean()
                    if best is None or score > best[0]:
                        best = (score, (model.predict(x[2]) == yt).mean(), c, weight)
            print(
                f"{name:24s} {'+ vectors' if with_dense else '         '}  validation {100 * best[0]:.2f}  "
                f"test {100 * best[1]:.2f}  C={best[2]:g} weight={best[3]:g}",
                flush=True,
            )


if __name__ == "__main__":
    main()
