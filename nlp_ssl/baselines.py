"""The classical labels-only baseline: TF-IDF features + logistic regression (scikit-learn).

Not a neural model, so not the training engine: it is here so every study shows where
pretraining stands against what a few lines of scikit-learn do. It reads the same recipe
``data`` section as ``task: sentiment`` and so sees exactly the same examples: the same
validation split (or held-out fraction), the same seeded class-balanced ``train_samples``,
and the same label checks. ``C`` is chosen on validation, as fine-tuning picks its best epoch
there. Writes ``metrics.json`` (``validation_*`` / ``test_*`` from the shipped
``classification`` metric, as fine-tuning does) and ``predictions.jsonl``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nlp_ssl.errors import ConfigError
from nlp_ssl.finetune import PREDICTIONS_FILE, SentimentDataConfig, load_sentiment_data

logger = logging.getLogger(__name__)

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


@dataclass
class TfidfConfig:
    """Recipe of the ``baseline`` stage (used by studies; ``nlp-ssl baseline RECIPE.yaml`` alone)."""

    output_dir: str
    data: SentimentDataConfig
    method: Literal["tfidf_logreg"] = "tfidf_logreg"
    task: Literal["sentiment"] = "sentiment"
    ngram_max: int = 2
    """Word n-grams 1..ngram_max."""
    min_df: int = 1
    max_features: int | None = 200_000
    C: list[float] = field(default_factory=lambda: list(C_GRID))
    """Inverse regularisation strengths tried; the best on validation is kept."""
    seed: int = 0

    def __post_init__(self):
        if self.ngram_max < 1 or self.min_df < 1:
            raise ConfigError("'ngram_max' and 'min_df' must be >= 1")
        if not self.C or any(c <= 0 for c in self.C):
            raise ConfigError(f"'C' must be a non-empty list of positive numbers, got {self.C}")


class _Texts:
    """Stands in for a tokenizer in ``load_sentiment_data``: keeps the (cleaned) text, so the
    baseline goes through the same loading, label checks and subsampling as fine-tuning."""

    def __call__(self, *texts, truncation=True, max_length=None):
        return {"baseline_text": [" ".join(parts) for parts in zip(*texts)]}


def run(cfg: TfidfConfig, overwrite: bool = False) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from nlp_ssl import metrics
    from nlp_ssl.outputs import check_output_dir, now, read_metrics, staged_output, write_jsonl, write_run_files

    started, t0 = now(), time.perf_counter()
    out = Path(cfg.output_dir).absolute()
    check_output_dir(out, overwrite)
    splits, labels, train_index = load_sentiment_data(cfg, _Texts())
    text = {name: split["baseline_text"] for name, split in splits.items()}
    y = {name: np.asarray(split["label_id"]) for name, split in splits.items()}
    train_text = [text["train"][i] for i in train_index]
    train_y = y["train"][train_index]
    if len(np.unique(train_y)) < 2:
        raise ConfigError(f"data.train_samples={cfg.data.train_samples}: the sample holds one class only")
    vectorizer = TfidfVectorizer(ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df, max_features=cfg.max_features,
                                 sublinear_tf=True, lowercase=True)
    features = {"train": vectorizer.fit_transform(train_text)}
    for name in ("eval", "test"):
        if name in splits:
            features[name] = vectorizer.transform(text[name])
    scorer = metrics.load("classification")
    best = None
    for c in cfg.C:
        model = LogisticRegression(C=c, max_iter=2000, random_state=cfg.seed).fit(features["train"], train_y)
        accuracy = float((model.predict(features["eval"]) == y["eval"]).mean())
        logger.info("tfidf_logreg C=%g: validation accuracy %.4f", c, accuracy)
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    _, chosen, model = best
    scores = {}
    for name, prefix in (("eval", "validation"), ("test", "test")):
        if name in features:
            result = scorer.compute(predictions=model.predict(features[name]).tolist(), references=y[name].tolist(),
                                    num_labels=len(labels.names))
            for key, value in result.items():
                head, _, tail = key.rpartition("_")
                scores[f"{prefix}_{head}_{labels.names[int(tail)]}" if tail.isdigit() else f"{prefix}_{key}"] = value
    shown = "test" if "test" in features else "eval"
    probs = model.predict_proba(features[shown])
    records = [{"text": t, "label": labels.names[int(g)], "prediction": labels.names[int(p.argmax())],
                "probability": round(float(p.max()), 6),
                "probabilities": {n: round(float(v), 6) for n, v in zip(labels.names, p)}}
               for t, g, p in zip(text[shown], y[shown], probs)]
    summary = {"task": cfg.task, "method": cfg.method, "train_examples": int(len(train_index)), "C": chosen,
               "features": int(features["train"].shape[1]), "train_seconds": round(time.perf_counter() - t0, 3),
               **scores, "predictions_split": "test" if shown == "test" else "validation"}
    with staged_output(out, overwrite=overwrite) as staging:
        write_jsonl(staging / PREDICTIONS_FILE, records)
        write_run_files(staging, stage="baseline", config=cfg, seed=cfg.seed, started_at=started, metrics=summary)
    logger.info("tfidf_logreg on %d examples (C=%g): test accuracy %s", len(train_index), chosen,
                scores.get("test_accuracy"))
    return read_metrics(out)
