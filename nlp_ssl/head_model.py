"""The model folder of a ``baseline`` run (``<run>/model/``): a scikit-learn head over TF-IDF
and/or frozen, mean-pooled features, as a model anyone loads with well-kept libraries.

Layout: ``head.skops`` (skops, safe loading: no pickle) holds the fitted ``vectorizer`` (TF-IDF
words, and characters with ``char_ngrams``), ``scaler`` (the frozen block's standardisation)
and ``classifier`` (logistic regression over ``[tfidf, dense_weight * scaler(frozen)]``);
``body/`` is the frozen encoder as a ``sentence_transformers`` folder (static token vectors, or
a transformer with mean pooling); ``head_config.json`` names the labels, the blocks and
``dense_weight``. ``HeadModel`` is what ``evaluate``, ``predict`` and the stage itself score
with; the model card's snippet does the same in a few lines without nlp-ssl.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nlp_ssl.errors import DataError
from nlp_ssl.run_files import MODEL_DIR, atomic_dir, write_json
from nlp_ssl.run_format import FORMAT

HEAD_FILE = "head.skops"
HEAD_CONFIG = "head_config.json"
BODY_DIR = "body"


def head_folder(path: str | Path) -> Path | None:
    """The head folder of a baseline run (given the run or its ``model/``), or None."""
    path = Path(path).expanduser()
    for folder in (path, path / MODEL_DIR):
        if (folder / HEAD_CONFIG).is_file():
            return folder
    return None


def save_head_folder(target: Path, *, classifier, vectorizer, scaler, encoder, dense_weight, labels, method) -> None:
    """Write the head folder beside ``target`` and rename it over it."""
    import skops.io as sio

    blocks = [name for name, part in (("tfidf", vectorizer), ("frozen", encoder)) if part is not None]
    plain_vocabularies(vectorizer)
    with atomic_dir(target) as staging:
        sio.dump({"vectorizer": vectorizer, "scaler": scaler, "classifier": classifier}, staging / HEAD_FILE)
        if encoder is not None:
            encoder.save(str(staging / BODY_DIR))
        write_json(
            staging / HEAD_CONFIG,
            {
                "format": FORMAT,
                "method": method,
                "blocks": blocks,
                "dense_weight": dense_weight,
                "labels": list(labels),
                "max_seq_length": getattr(encoder, "max_seq_length", None),
            },
        )


def plain_vocabularies(vectorizer) -> None:
    """Make every fitted vocabulary's ids Python ints, in place. ``max_features`` leaves
    numpy ints, which skops stores one file each, re-listing its archive for every one: hours
    for the 200,000 terms of a word + character head, seconds as ints."""
    if vectorizer is None:
        return
    parts = [part for _, part in getattr(vectorizer, "transformer_list", [])] or [vectorizer]
    for part in parts:
        vocabulary = getattr(part, "vocabulary_", None)
        if isinstance(vocabulary, dict):
            part.vocabulary_ = {term: int(index) for term, index in vocabulary.items()}


class HeadModel:
    """A baseline run's head, loaded from its folder."""

    def __init__(self, folder: Path, *, body=None):
        import skops.io as sio

        self.folder = folder
        try:
            self.config = json.loads((folder / HEAD_CONFIG).read_text(encoding="utf-8"))
            parts = sio.load(folder / HEAD_FILE)
        except Exception as exc:
            raise DataError(
                f"checkpoint {folder}: the head cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
            ) from None
        self.vectorizer, self.scaler, self.classifier = parts["vectorizer"], parts["scaler"], parts["classifier"]
        self.labels: list[str] = list(self.config["labels"])
        self.body = body
        if self.body is None and "frozen" in self.config["blocks"]:
            from sentence_transformers import SentenceTransformer

            self.body = SentenceTransformer(str(folder / BODY_DIR), device="cpu")

    def features(self, texts: list[str], batch_size: int = 64, progress: bool = False):
        """The classifier's input rows for ``texts``: ``[tfidf, dense_weight * scaler(frozen)]``."""
        import scipy.sparse as sp

        blocks = []
        if self.vectorizer is not None:
            blocks.append(self.vectorizer.transform(texts))
        if self.body is not None:
            dense = self.body.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=progress)
            dense = self.config["dense_weight"] * self.scaler.transform(dense)
            blocks.append(sp.csr_matrix(dense) if self.vectorizer is not None else dense)
        return blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")

    def probabilities(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.classifier.predict_proba(self.features(texts, batch_size, progress))

    def records(self, texts: list[str], probabilities: np.ndarray) -> list[dict]:
        """What ``predict`` prints and ``predictions.jsonl`` holds, per text."""
        results = []
        for text, p in zip(texts, probabilities):
            k = int(p.argmax())
            results.append(
                {
                    "text": text,
                    "label": self.labels[k],
                    "probability": round(float(p[k]), 6),
                    "probabilities": {n: round(float(v), 6) for n, v in zip(self.labels, p)},
                }
            )
        return results

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        return self.records(texts, self.probabilities(texts, batch_size))

    def evaluate(self, spec, label_column: str, batch_size: int = 64) -> tuple[dict, list[dict]]:
        """Scores (the shipped ``classification`` metric) and prediction records on one split,
        its labels read by name as fine-tuning reads them."""
        from nlp_ssl import metrics
        from nlp_ssl.progress import is_main_process
        from nlp_ssl.tasks.classification_data import LabelSet, tokenize_labelled

        ds, labels = tokenize_labelled(spec, Texts(), LabelSet(self.labels), label_column)
        texts, gold = list(ds["baseline_text"]), np.asarray(ds["label_id"])
        probabilities = self.probabilities(texts, batch_size, progress=is_main_process())
        scores = score(probabilities.argmax(1), gold, labels.names, metrics.load("classification"))
        records = [
            {"text": r["text"], "label": labels.names[int(g)], "prediction": r["label"], **_rest(r)}
            for r, g in zip(self.records(texts, probabilities), gold)
        ]
        return scores, records


def score(predicted, gold, names: list[str], scorer) -> dict:
    """The ``classification`` metric's figures with per-class ones named by their label."""
    result = scorer.compute(
        predictions=list(map(int, predicted)), references=list(map(int, gold)), num_labels=len(names)
    )
    scores = {}
    for key, value in result.items():
        head, _, tail = key.rpartition("_")
        scores[f"{head}_{names[int(tail)]}" if tail.isdigit() else key] = value
    return scores


def _rest(record: dict) -> dict:
    return {k: v for k, v in record.items() if k in ("probability", "probabilities")}


class Texts:
    """The encoding of a classical head's labelled data (``tokenize_labelled``): the (cleaned)
    text itself, as ``baseline_text``, so a head reads exactly the rows and labels a fine-tuned
    classifier would, and the whole of each text."""

    def __call__(self, texts: list[list[str]]) -> dict:
        return {"baseline_text": [" ".join(parts) for parts in zip(*texts)]}
