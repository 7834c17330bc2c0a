"""Heads trained in seconds with scikit-learn: the labels-only baseline and frozen features.

``method: tfidf_logreg``: TF-IDF features + logistic regression, the classical labels-only
baseline every study shows pretraining against. ``method: frozen_logreg``: the mean-pooled
token representations of a pretrained model (a skipgram/cbow run, or any of our or anyone's
transformer checkpoints), frozen, + logistic regression; with ``tfidf: true`` both feature
sets side by side. Not neural training, so not the training engine.

Both read the same recipe ``data`` section as ``task: sentiment`` and so see exactly the same
examples: the same validation split (or held-out fraction), the same seeded class-balanced
``train_samples``, and the same label checks. ``C`` (and, with both feature sets, the weight
of the dense block) is chosen on validation, as fine-tuning picks its best epoch there, or
(``selection: validation_and_cv``) on validation and cross-validated training predictions together.
Writes ``metrics.json`` (``validation_*`` / ``test_*`` from the shipped ``classification``
metric, as fine-tuning does), ``predictions.jsonl`` and ``head.joblib`` (the fitted
scikit-learn objects: ``joblib.load`` gives a dict with ``classifier``, ``vectorizer`` and
``scaler`` (or None; its ``transform`` gives the frozen block as fitted), ``dense_weight``
(the frozen block's factor beside TF-IDF: features = ``[tfidf, dense_weight * scaler(x)]``),
``labels``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from nlp_ssl.errors import ConfigError
from nlp_ssl.head_model import Texts as _Texts
from nlp_ssl.head_model import save_head_folder
from nlp_ssl.head_model import score as named_scores
from nlp_ssl.outputs import MODEL_DIR, PREDICTIONS_FILE
from nlp_ssl.tasks.classification import load_sentiment_data
from nlp_ssl.tasks.classification_recipe import LabelledDataConfig

logger = logging.getLogger(__name__)

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


@dataclass
class BaselineConfig:
    """Recipe of the ``baseline`` stage (used by studies; ``nlp-ssl baseline RECIPE.yaml`` alone)."""

    output_dir: str
    data: LabelledDataConfig
    method: Literal["tfidf_logreg", "frozen_logreg"] = "tfidf_logreg"
    task: Literal["sentiment"] = "sentiment"
    init: str | None = None
    """``frozen_logreg``: the model whose mean-pooled token representations are the features:
    a skipgram/cbow run (its static embeddings), one of our transformer runs, any Hugging Face
    model folder, ``pkg:<package>/<folder>`` or a Hub id."""
    tfidf: bool = False
    """``frozen_logreg``: put TF-IDF features beside the frozen ones."""
    batch_size: int = 64
    """``frozen_logreg``: texts encoded per batch."""
    ngram_max: int = 2
    """TF-IDF: word n-grams 1..ngram_max."""
    min_df: int = 1
    max_features: int | None = 200_000
    char_ngrams: list[int] | None = None
    """TF-IDF: ``[low, high]`` adds character n-grams of those lengths, read inside word
    boundaries (scikit-learn's ``char_wb``), beside the word n-grams: they catch the
    inflections and misspellings that word n-grams split, at some cost in features. None: words
    only."""
    C: list[float] = field(default_factory=lambda: list(C_GRID))
    """Inverse regularisation strengths tried; the best held-out accuracy (see ``selection``) is kept."""
    selection: Literal["validation", "validation_and_cv"] = "validation"
    """What picks ``C`` (and the dense weight or late share): ``validation``: accuracy on the
    validation split, as fine-tuning picks its best epoch; ``validation_and_cv``: accuracy over
    the validation predictions and ``cv_folds``-fold cross-validated predictions of the training
    sample together, so the choice rests on validation + training-sample many held-out sentences
    (with all 8,530 rotten_tomatoes labels, 9,596 against 1,066), at ``cv_folds`` + 1 fits per
    setting. The features (vocabulary, idf, scaling) are fitted once on the whole training
    sample; only the labels of each fold are held out."""
    cv_folds: int = 5
    """``selection: validation_and_cv``: stratified folds of the training sample."""
    fusion: Literal["concat", "late"] = "concat"
    """``frozen_logreg`` with ``tfidf``: ``concat`` fits one logistic regression over both
    feature sets side by side (``dense_weight`` scales the frozen block); ``late`` fits one per
    feature set (each with its own ``C`` from the grid, chosen by ``selection``) and averages
    their log-odds with the frozen side's share from ``late_weight``, chosen the same way.
    Either way the head is one linear classifier over ``[tfidf, frozen]``."""
    dense_weight: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    """``fusion: concat``: weights of the (standardised, unit-scale) frozen block beside the
    TF-IDF rows, tried with every ``C``."""
    late_weight: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """``fusion: late``: shares of the frozen head in the averaged log-odds, tried in turn."""
    seed: int = 0

    def __post_init__(self):
        if self.ngram_max < 1 or self.min_df < 1:
            raise ConfigError("'ngram_max' and 'min_df' must be >= 1")
        if not self.C or any(not (math.isfinite(c) and c > 0) for c in self.C):
            raise ConfigError(f"'C' must be a non-empty list of positive numbers, got {self.C}")
        if not self.dense_weight or any(not (math.isfinite(w) and w > 0) for w in self.dense_weight):
            raise ConfigError(f"'dense_weight' must be a non-empty list of positive numbers, got {self.dense_weight}")
        if not self.late_weight or any(not (0 < w < 1) for w in self.late_weight):
            raise ConfigError(
                f"'late_weight' must be a non-empty list of numbers between 0 and 1, got {self.late_weight}"
            )
        if self.char_ngrams is not None and not (
            len(self.char_ngrams) == 2 and 1 <= self.char_ngrams[0] <= self.char_ngrams[1]
        ):
            raise ConfigError(f"'char_ngrams' must be [low, high] with 1 <= low <= high, got {self.char_ngrams}")
        if self.cv_folds < 2:
            raise ConfigError(f"'cv_folds' must be >= 2, got {self.cv_folds}")
        if self.batch_size < 1:
            raise ConfigError(f"'batch_size' must be >= 1, got {self.batch_size}")
        if self.method == "frozen_logreg" and not self.init:
            raise ConfigError("method frozen_logreg needs 'init' (a skipgram/cbow run or a model folder)")
        if self.char_ngrams and self.method == "frozen_logreg" and not self.tfidf:
            raise ConfigError("'char_ngrams' adds TF-IDF features: method frozen_logreg needs 'tfidf: true' with it")
        if self.method == "tfidf_logreg" and (self.init or self.tfidf):
            raise ConfigError("'init' and 'tfidf' belong to method frozen_logreg; tfidf_logreg uses TF-IDF alone")
        if self.fusion == "late" and not self.tfidf:
            raise ConfigError(
                "'fusion: late' averages a TF-IDF head and a frozen-feature head: it needs method "
                "frozen_logreg with 'tfidf: true'"
            )


def frozen_encoder(init: str, max_length: int, key: str = "init"):
    """A ``SentenceTransformer`` that mean-pools ``init``'s token representations: a
    skipgram/cbow run's static-embedding folder as saved, any transformers folder wrapped with
    mean pooling and truncated to what its positions (and the recipe's ``max_length``) allow."""
    import logging as _logging

    from sentence_transformers import SentenceTransformer

    from nlp_ssl.models import max_positions, resolve_model_dir
    from nlp_ssl.vectors import vector_folder

    folder = vector_folder(init)
    if folder is not None:
        return SentenceTransformer(str(folder), device="cpu"), str(folder)
    model_dir = resolve_model_dir(init, key=key)
    # "No sentence-transformers model found ... Creating a new one with mean pooling" is what we ask for
    quiet = _logging.getLogger("sentence_transformers")
    level = quiet.level
    quiet.setLevel(_logging.ERROR)
    try:
        encoder = SentenceTransformer(model_dir, device="cpu")
    finally:
        quiet.setLevel(level)
    positions = max_positions(model_dir, "init") or max_length
    encoder.max_seq_length = min(max_length, positions)
    tokenizer = encoder.tokenizer
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # GPT-2-style: batches need a pad
        tokenizer.pad_token = tokenizer.eos_token
    return encoder, model_dir


def tfidf_vectorizer(cfg: BaselineConfig):
    """Word n-gram TF-IDF, with ``char_ngrams`` a union of it and character n-gram TF-IDF (each
    block L2-normalised on its own, so neither drowns the other)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    def block(**kind):
        return TfidfVectorizer(
            min_df=cfg.min_df, max_features=cfg.max_features, sublinear_tf=True, lowercase=True, **kind
        )

    words = block(ngram_range=(1, cfg.ngram_max))
    if not cfg.char_ngrams:
        return words
    return FeatureUnion([("words", words), ("chars", block(analyzer="char_wb", ngram_range=tuple(cfg.char_ngrams)))])


def run(cfg: BaselineConfig, overwrite: bool = False) -> dict:
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from nlp_ssl import metrics
    from nlp_ssl.outputs import (
        check_output_dir,
        config_inputs,
        now,
        output_path,
        read_metrics,
        staged_output,
        write_jsonl,
        write_run_files,
    )
    from nlp_ssl.progress import is_main_process

    started, t0 = now(), time.perf_counter()
    out = output_path(cfg.output_dir)
    sources = config_inputs(cfg)
    check_output_dir(out, overwrite, sources, kind="baseline")
    encoder = None
    if cfg.method == "frozen_logreg":  # a bad 'init' fails before any data is read
        encoder, model_dir = frozen_encoder(cfg.init, cfg.data.max_length)
    splits, labels, train_index = load_sentiment_data(cfg, _Texts())
    text = {name: split["baseline_text"] for name, split in splits.items()}
    y = {name: np.asarray(split["label_id"]) for name, split in splits.items()}
    train_text = [text["train"][i] for i in train_index]
    train_y = y["train"][train_index]
    if len(np.unique(train_y)) < 2:
        raise ConfigError(f"data.train_samples={cfg.data.train_samples}: the sample holds one class only")
    folds = held_out_folds(cfg, train_y)  # before any text is encoded: a bad cv_folds fails at once
    inputs = {"train": train_text, **{name: text[name] for name in ("eval", "test") if name in splits}}
    used = list(inputs)

    vectorizer = scaler = None
    sparse, dense = {}, {}
    if cfg.method == "tfidf_logreg" or cfg.tfidf:
        vectorizer = tfidf_vectorizer(cfg)
        sparse = {"train": vectorizer.fit_transform(train_text)}
        sparse.update({name: vectorizer.transform(inputs[name]) for name in used if name != "train"})
    if encoder is not None:
        t = time.perf_counter()
        for name in used:
            dense[name] = encoder.encode(
                inputs[name], batch_size=cfg.batch_size, convert_to_numpy=True, show_progress_bar=is_main_process()
            )
        encode_seconds = time.perf_counter() - t
        scaler = unit_norm_scaler(dense["train"])
        dense = {name: scaler.transform(v) for name, v in dense.items()}

    def features(name: str, weight: float):
        if not dense:
            return sparse[name]
        if not sparse:
            return dense[name]
        return sp.hstack([sparse[name], sp.csr_matrix(weight * dense[name])], format="csr")

    held_out = len(y["eval"]) + (len(train_y) if folds else 0)
    rule = "validation" + (f" + {cfg.cv_folds}-fold CV" if folds else "")

    def score(build, X: dict) -> tuple:
        """(held-out accuracy, the model ``build`` fits on the whole training sample);
        ``build(X, rows, fold)`` fits on ``rows``, ``fold`` being None for the whole sample."""
        model = build(X, np.arange(len(train_y)), None)
        right = int((model.predict(X["eval"]) == y["eval"]).sum())
        for fold, (fit_rows, held) in enumerate(folds):
            right += int((build(X, fit_rows, fold).predict(X["train"][held]) == train_y[held]).sum())
        return right / held_out, model

    def logreg(c: float):
        def build(X: dict, rows: np.ndarray, fold=None):
            return LogisticRegression(C=c, max_iter=3000, random_state=cfg.seed).fit(X["train"][rows], train_y[rows])

        return build

    def fit(X: dict, what: str, **shown) -> tuple:
        """The logistic regression of the ``C`` best on held-out accuracy: (accuracy, C, model)."""
        best = None
        for c in cfg.C:
            accuracy, model = score(logreg(c), X)
            logger.info(
                "%s C=%g%s: %s accuracy %.4f", what, c, "".join(f" {k}={v:g}" for k, v in shown.items()), rule, accuracy
            )
            if best is None or accuracy > best[0]:
                best = (accuracy, c, model)
        return best

    scorer = metrics.load("classification")
    fusion = None
    if dense and sparse and cfg.fusion == "late":
        X = {name: features(name, 1.0) for name in used}
        _, c_tfidf, tfidf_model = fit(sparse, "TF-IDF head")
        _, c_dense, dense_model = fit(dense, "frozen head")
        # both heads of each fold fitted once, for every share; the whole sample's are the ones above
        heads = [(logreg(c_tfidf)(sparse, rows), logreg(c_dense)(dense, rows)) for rows, _ in folds]
        best = None
        for share in cfg.late_weight:

            def averaged(_, rows, fold, share=share):
                return _averaged(*(heads[fold] if fold is not None else (tfidf_model, dense_model)), share)

            accuracy, model = score(averaged, X)
            logger.info("late fusion, frozen share %g: %s accuracy %.4f", share, rule, accuracy)
            if best is None or accuracy > best[0]:
                best = (accuracy, share, model)
        held_out_accuracy, share, model = best
        chosen, weight = None, 1.0  # two C values: C_tfidf and C_frozen
        fusion = {"fusion": "late", "C_tfidf": c_tfidf, "C_frozen": c_dense, "frozen_share": share}
    else:
        weights = cfg.dense_weight if (dense and sparse) else [1.0]
        best = None
        for weight in weights:
            X = {name: features(name, weight) for name in used}
            accuracy, c, model = fit(X, cfg.method, **({"dense_weight": weight} if len(weights) > 1 else {}))
            if best is None or accuracy > best[0]:
                best = (accuracy, c, weight, model, X)
        held_out_accuracy, chosen, weight, model, X = best
        if dense and sparse:
            fusion = {"fusion": "concat"}
    scores = {}
    for name, prefix in (("eval", "validation"), ("test", "test")):
        if name in X:
            found = named_scores(model.predict(X[name]), y[name], labels.names, scorer)
            scores.update({f"{prefix}_{key}": value for key, value in found.items()})
    shown = "test" if "test" in X else "eval"
    probs = model.predict_proba(X[shown])
    records = [
        {
            "text": t,
            "label": labels.names[int(g)],
            "prediction": labels.names[int(p.argmax())],
            "probability": round(float(p.max()), 6),
            "probabilities": {n: round(float(v), 6) for n, v in zip(labels.names, p)},
        }
        for t, g, p in zip(text[shown], y[shown], probs)
    ]
    summary = {
        "task": cfg.task,
        "method": cfg.method,
        "train_examples": int(len(train_index)),
        "C": chosen,
        "features": int(X["train"].shape[1]),
        "selection": cfg.selection,
        "selection_examples": held_out,
        "selection_accuracy": round(held_out_accuracy, 6),
        "train_seconds": round(time.perf_counter() - t0, 3),
    }
    if cfg.char_ngrams:  # the config allows them only beside TF-IDF
        summary["char_ngrams"] = "{}-{}".format(*cfg.char_ngrams)
    if encoder is not None:
        summary.update(
            {
                "init": cfg.init,
                "frozen_model_dir": model_dir,
                "tfidf": cfg.tfidf,
                "frozen_features": int(dense["train"].shape[1]),
                "encode_seconds": round(encode_seconds, 3),
            }
        )
        if sparse:
            summary.update({"dense_weight": weight, **fusion})
    summary.update({**scores, "predictions_split": "test" if shown == "test" else "validation"})
    summary["model_dir"] = str(out / MODEL_DIR)
    with staged_output(out, overwrite=overwrite, inputs=sources, kind="baseline") as staging:
        save_head_folder(
            staging / MODEL_DIR,
            classifier=model,
            vectorizer=vectorizer,
            scaler=scaler,
            encoder=encoder,
            dense_weight=weight if dense else None,
            labels=labels.names,
            method=cfg.method,
        )
        write_jsonl(staging / PREDICTIONS_FILE, records)
        write_run_files(staging, stage="baseline", config=cfg, seed=cfg.seed, started_at=started, metrics=summary)
    logger.info(
        "%s on %d examples (%s): test accuracy %s",
        cfg.method,
        len(train_index),
        f"C={chosen:g}" if chosen is not None else f"C={fusion['C_tfidf']:g} / {fusion['C_frozen']:g}, late fusion",
        scores.get("test_accuracy"),
    )
    return read_metrics(out)


def unit_norm_scaler(train_features: np.ndarray):
    """A ``StandardScaler`` fitted on the frozen block that also divides by sqrt(dim), so a row
    has about unit norm like an L2-normalised TF-IDF row; folded into the scaler, so
    head.joblib's ``scaler.transform`` is the whole step."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_features)
    scaler.scale_ = scaler.scale_ * math.sqrt(train_features.shape[1])
    return scaler


def held_out_folds(cfg: BaselineConfig, train_y: np.ndarray) -> list:
    """``selection: validation_and_cv``: stratified (fit rows, held-out rows) folds of the
    training sample, seeded; none for ``selection: validation``."""
    from sklearn.model_selection import StratifiedKFold

    if cfg.selection == "validation":
        return []
    fewest = int(np.unique(train_y, return_counts=True)[1].min())
    if fewest < cfg.cv_folds:
        raise ConfigError(
            f"selection: validation_and_cv with cv_folds={cfg.cv_folds} needs as many training "
            f"examples of every label; the sample has {fewest} of one (lower 'cv_folds' or use "
            "'selection: validation')"
        )
    folds = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    return list(folds.split(np.zeros(len(train_y)), train_y))


def _averaged(tfidf_model, dense_model, share: float):
    """One logistic regression over ``[tfidf, frozen]`` whose log-odds are the two heads'
    averaged, ``share`` of them the frozen head's: the late-fused head saved and applied like
    a concatenated one."""
    import copy

    import numpy as np

    model = copy.deepcopy(tfidf_model)
    model.coef_ = np.hstack([(1 - share) * tfidf_model.coef_, share * dense_model.coef_])
    model.intercept_ = (1 - share) * tfidf_model.intercept_ + share * dense_model.intercept_
    model.n_features_in_ = model.coef_.shape[1]
    return model
