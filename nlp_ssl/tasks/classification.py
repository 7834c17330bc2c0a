"""Sequence classification (``task: sentiment``): labelled text -> label.

The recipe schema (``SentimentConfig``), setup, and what this task adds to the engine: reading
labelled splits (labels checked and mapped to ids, texts tokenized once with ``datasets.map``
and cached), the class-balanced few-label subsample, a loss module over any
``AutoModelForSequenceClassification`` (BERT-style from the [CLS] position, GPT-style from the
last non-pad token), dynamic padding with ``DataCollatorWithPadding`` (fine-tuning never packs:
examples must not see each other), and accuracy / macro and per-class F1 through the shipped
``evaluate`` module.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.data import DatasetSpec, column_texts, dig, hold_out, load_split, missing_column, resolve
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.hub_options import HubOptions
from nlp_ssl.models import count_parameters, flops_per_token
from nlp_ssl.tasks.base import FinetuneTask, FinetuneTrainConfig, TokenizedSplits, check_dropout, pad_multiple
from nlp_ssl.training.contract import Batch

logger = logging.getLogger(__name__)


class SequenceClassificationLoss(torch.nn.Module):
    """Sum of per-example cross-entropies (the engine normalises by the global count)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, labels: torch.Tensor, return_logits: bool = False, **inputs):
        logits = self.model(**inputs).logits
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        return (loss, logits) if return_logits else loss


@dataclass
class LabelSet:
    """Label names in id order; ids are what the model predicts."""

    names: list[str]

    @classmethod
    def of(cls, model) -> LabelSet:
        """The labels a saved classifier predicts, from its config."""
        return cls([model.config.id2label[i] for i in range(model.config.num_labels)])

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def to_ids(self, values: list, rows, where: str) -> list[int]:
        """Map a column of labels (ids or names) to ids, naming the first bad row."""
        lookup = self.label2id
        ids = []
        for row, value in zip(rows, values):
            value = _whole(value)
            if value is None:
                raise DataError(f"{where}: row {row}: label is missing (a blank cell or null)")
            if isinstance(value, (bool, np.bool_)):
                value = int(value)
            if isinstance(value, (int, np.integer)):
                if not 0 <= value < len(self.names):
                    raise DataError(
                        f"{where}: row {row}: label {value} is out of range (expected 0..{len(self.names) - 1}: "
                        f"{', '.join(self.names)})"
                    )
                ids.append(int(value))
            elif isinstance(value, str) and value in lookup:
                ids.append(lookup[value])
            else:
                raise DataError(f"{where}: row {row}: label {value!r} is not one of: {', '.join(self.names)}")
        return ids


def _whole(value):
    """A label as written: a CSV column with a blank cell loads as floats (``1.0``, and NaN for
    the blank), which are the ids ``1`` and missing."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return int(value)
    return value


def infer_labels(ds, column: str, where: str) -> LabelSet:
    """Label names from the data: a ``ClassLabel`` feature's names, ``0..max`` for integer
    labels, or the sorted distinct strings."""
    from datasets import ClassLabel

    feature = ds.features.get(column)
    if isinstance(feature, ClassLabel):
        return LabelSet(list(feature.names))
    values = [v for v in map(_whole, ds[column]) if v is not None]
    if not values:
        raise DataError(f"{where}: column {column!r} holds no labels")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        if low < 0:
            raise DataError(
                f"{where}: label {low} is negative; integer labels must be 0..K-1 "
                "(an unlabeled split, such as GLUE test, cannot be used for training or scoring)"
            )
        return LabelSet([str(i) for i in range(high + 1)])
    return LabelSet(sorted({str(v) for v in values}))


def tokenize_labelled(
    spec: DatasetSpec,
    tokenizer,
    labels: LabelSet | None,
    label_column: str,
    max_length: int,
    num_proc: int | None = None,
):
    """Load a split, check text and label columns, and tokenize it (``datasets.map``, cached).

    Returns the tokenized dataset (original columns kept, plus ``input_ids``,
    ``attention_mask`` and ``label_id``) and the label set (inferred when ``labels`` is None).
    """
    source = resolve(spec)
    ds = load_split(spec, source)
    where = f"dataset {source.label}"
    columns = spec.text_columns
    if len(columns) > 2:
        raise ConfigError(f"{where}: 'text_column' takes one column, or two for sentence pairs; got {columns}")
    for column in columns + [label_column]:
        if column.split(".")[0] not in ds.column_names:
            raise missing_column(where, column, ds.column_names, "label column" if column == label_column else "column")
    if labels is None:
        labels = infer_labels(ds, label_column, where)

    def encode(batch, indices):
        texts = [column_texts(batch, c, spec, source.label, rows=indices) for c in columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["label_id"] = labels.to_ids(batch[label_column], indices, where)
        return dict(enc)

    ds = ds.map(encode, batched=True, with_indices=True, num_proc=num_proc, desc=f"tokenizing {spec.describe()}")
    return ds, labels


def balanced_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` example indices with the classes as equally represented as the data allows.

    Seeded; a smaller ``n`` with the same seed picks a subset of a larger one (each class
    is read in one fixed shuffled order), so learning curves add labels rather than swap them.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 0xBA1])
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: n // len(classes) for c in classes}
    for c in rng.permutation(classes)[: n % len(classes)]:
        quota[c] += 1
    take = {c: min(quota[c], len(pools[c])) for c in classes}
    short = n - sum(take.values())
    while short > 0:  # a class ran out: the others fill in, one at a time
        for c in classes:
            if short and take[c] < len(pools[c]):
                take[c] += 1
                short -= 1
    return np.sort(np.concatenate([pools[c][: take[c]] for c in classes]))


class ClassificationTask(TokenizedSplits):
    """Engine task over tokenized labelled splits (``train``, ``eval`` and optionally ``test``)."""

    model_inputs = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(
        self,
        model,
        tokenizer,
        splits: dict,
        labels: LabelSet,
        train_index: np.ndarray | None = None,
        text_columns: list[str] | None = None,
    ):
        from transformers import DataCollatorWithPadding

        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        self.text_columns = text_columns or ["text"]
        """Columns copied into prediction records."""
        self.module = SequenceClassificationLoss(model)
        # GPT-2 would add token-type embeddings looked up in its word embeddings: only models
        # with a token-type table get token_type_ids
        keep = [c for c in self.model_inputs if c != "token_type_ids" or getattr(model.config, "type_vocab_size", 0)]
        self.init_splits(splits, keep + ["label_id"], train_index)
        self.collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple())
        self._mean_length = self._mean_tokens(next(iter(splits)))

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        rows, examples = self.examples(split, indices)
        for example in examples:
            example["labels"] = example.pop("label_id")
        inputs = self.collator(examples)
        return Batch(dict(inputs), n_targets=len(rows), n_tokens=int(inputs["attention_mask"].sum()))

    def eval_step(self, module, inputs: dict):
        loss, logits = module(**inputs, return_logits=True)
        probs = torch.softmax(logits.float(), dim=-1)
        return loss, {"prediction": probs.argmax(-1), "probs": probs, "label": inputs["labels"]}

    def compute_metrics(self, outputs: dict, split: str) -> dict:
        from nlp_ssl import metrics

        if not outputs:
            return {}
        result = metrics.load("classification").compute(
            predictions=outputs["prediction"], references=outputs["label"], num_labels=len(self.labels.names)
        )
        # per-class figures under the label's name (f1_positive) rather than its id
        named = {}
        for key, value in result.items():
            head, _, tail = key.rpartition("_")
            named[f"{head}_{self.labels.names[int(tail)]}" if tail.isdigit() else key] = value
        return named

    def records(self, split: str, outputs: dict) -> list[dict]:
        """One JSON-ready record per example of ``split`` (for ``predictions.jsonl``)."""
        names = self.labels.names
        out = []
        for k, example in enumerate(self.source_rows(split, outputs)):
            record = {c: dig(example, c) for c in self.text_columns}
            probs = outputs["probs"][k]
            pred = int(outputs["prediction"][k])
            record.update(
                {
                    "label": names[int(outputs["label"][k])],
                    "prediction": names[pred],
                    "probability": round(float(probs[pred]), 6),
                    "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
                }
            )
            out.append(record)
        return out

    def flops_per_token(self) -> float:
        # no vocabulary projection in a classifier: take it back out of the LM estimate
        cfg = self.model.config
        hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
        return flops_per_token(self.model, int(self._mean_length)) - 6 * cfg.vocab_size * hidden

    def describe(self) -> dict:
        return {
            "parameters": count_parameters(self.model),
            "num_labels": len(self.labels.names),
            "train_examples": self.n_train,
            **{f"{name}_examples": len(idx) for name, idx in self.index.items() if name != "train"},
        }

    def _mean_tokens(self, split: str) -> float:
        ds = self.splits[split]
        sample = ds[: min(len(ds), 2000)]["input_ids"]
        return float(np.mean([len(x) for x in sample])) if len(sample) else 1.0


def build_classifier(
    model_dir: str,
    labels: LabelSet,
    tokenizer,
    *,
    from_scratch: bool = False,
    dropout: float | None = None,
    key: str = "init",
):
    """A sequence classifier from a model folder, its vocabulary checked against ``tokenizer``.

    ``from_scratch`` keeps the folder's architecture and tokenizer but not its weights: the
    supervised-only baseline. Weights that the folder lacks (the classification head, BERT's
    pooler) are initialised fresh; the caller seeds first.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    from nlp_ssl.models import check_vocab, from_pretrained, load_model_config, set_dropout

    config = load_model_config(model_dir, key)
    config.num_labels = len(labels.names)
    config.id2label = dict(enumerate(labels.names))
    config.label2id = labels.label2id
    if getattr(config, "pad_token_id", None) is None:
        # causal models classify from the last non-pad token, which they find by this id
        config.pad_token_id = tokenizer.pad_token_id
    if dropout is not None:
        set_dropout(config, dropout)
    try:
        if from_scratch:
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            # a folder that is already a classifier with another label count gets a new head
            model = from_pretrained(
                AutoModelForSequenceClassification, model_dir, config=config, ignore_mismatched_sizes=True
            )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise DataError(
                f"{key}: {model_dir}: a {config.model_type!r} model cannot classify sequences "
                "(use an encoder such as BERT/RoBERTa or a decoder such as GPT-2)"
            ) from None
        raise
    except (OSError, SafetensorError) as exc:  # missing, truncated or corrupted weights
        raise DataError(
            f"{key}: {model_dir}: weights cannot be loaded ({str(exc).splitlines()[0][:160]}); "
            "the checkpoint may be incomplete or damaged"
        ) from None
    check_vocab(model, tokenizer, tokenizer.name_or_path)
    return model


@dataclass
class SentimentDataConfig:
    train: DatasetSpec
    validation: DatasetSpec | None = None
    """When absent, ``validation_fraction`` of ``train`` is held out (seeded)."""
    test: DatasetSpec | None = None
    """Scored once, with the best model, at the end."""
    label_column: str = "label"
    labels: list[str] | None = None
    """Label names in id order (integer labels index this list; string labels must be in it).
    Default: a ClassLabel feature's names, else 0..max for integers, else the sorted strings."""
    max_length: int = 128
    """Tokens per example (longer texts are truncated)."""
    train_samples: int | None = None
    """Train on a seeded, class-balanced subsample of this many examples (few-label runs)."""
    validation_fraction: float = 0.1
    num_proc: int | None = None

    def __post_init__(self):
        if self.train_samples is not None and self.train_samples < 1:
            raise ConfigError(f"'train_samples' must be positive, got {self.train_samples}")
        if not 0 < self.validation_fraction < 0.5:
            raise ConfigError(f"'validation_fraction' must be in (0, 0.5), got {self.validation_fraction}")
        if self.max_length < 2:
            raise ConfigError(f"'max_length' must be >= 2, got {self.max_length}")
        if self.labels is not None and len(self.labels) < 2:
            raise ConfigError(
                f"'labels' must name at least 2 labels, in id order, got {self.labels}; or leave it "
                "unset to take them from the data"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"'labels' must be distinct names, got {self.labels}")
        if any(d.streaming for d in (self.train, self.validation, self.test) if d is not None):
            raise ConfigError("fine-tuning data cannot stream (labelled sets are loaded; set streaming: false)")


@dataclass
class SentimentConfig(HubOptions):
    """Recipe of ``finetune`` with ``task: sentiment`` (any single-label text classification;
    plus ``push_to_hub`` and the other ``HubOptions``)."""

    output_dir: str
    task: Literal["sentiment"]
    init: str
    """Model to start from: one of our pretraining runs (or its ``model/``, or a checkpoint),
    any Hugging Face model folder, ``pkg:<package>/<path>``, or a Hub id (online)."""
    data: SentimentDataConfig
    from_scratch: bool = False
    """Same architecture and tokenizer as ``init``, fresh weights: the labels-only baseline."""
    init_embeddings: str | None = None
    """A skipgram/cbow run (same tokenizer, as wide as the model) whose vectors replace the
    model's token embeddings before training; with ``from_scratch``, the embeddings are then
    the only pretrained part."""
    tokenizer: str | None = None
    """Tokenizer folder, when ``init`` has none."""
    dropout: float | None = 0.1
    """Set the model's dropout rates (None keeps the folder's; pretraining runs use 0)."""
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    seed: int = 0

    def __post_init__(self):
        self.check_hub_options()
        check_dropout(self.dropout)


def load_sentiment_data(cfg: SentimentConfig, tokenizer):
    """Tokenized train / eval / test splits, the label set, and the training indices."""
    d = cfg.data
    labels = LabelSet(list(d.labels)) if d.labels is not None else None
    train, labels = tokenize_labelled(d.train, tokenizer, labels, d.label_column, d.max_length, d.num_proc)
    splits = {"train": train}
    if d.validation is not None:
        splits["eval"], _ = tokenize_labelled(d.validation, tokenizer, labels, d.label_column, d.max_length, d.num_proc)
        pool = np.arange(len(train))
    else:
        pool, held = hold_out(
            len(train),
            d.validation_fraction,
            cfg.seed,
            f"data.train: {len(train)} examples are too few to hold out a validation set",
        )
        splits["eval"] = train.select(held)
    if d.test is not None:
        splits["test"], _ = tokenize_labelled(d.test, tokenizer, labels, d.label_column, d.max_length, d.num_proc)
    for name, key in (("eval", "validation"), ("test", "test")):
        if name in splits and len(set(splits[name]["label_id"])) < 2 <= len(labels.names):
            logger.warning(
                "data.%s holds examples of one label only: its accuracy says little (max_rows takes "
                "the first rows, and some datasets are sorted by label)",
                key,
            )
    train_index = pool
    if d.train_samples is not None:
        if d.train_samples > len(pool):
            logger.warning("train_samples=%d exceeds the %d training examples; using all", d.train_samples, len(pool))
        label_ids = np.asarray(train.select_columns(["label_id"])["label_id"])[pool]
        train_index = pool[balanced_subsample(label_ids, d.train_samples, cfg.seed)]
    return splits, labels, train_index


def setup_sentiment(cfg: SentimentConfig, accelerator):
    """Tokenizer, labelled splits and classifier for ``task: sentiment``; returns the engine
    task and what to report about where it started."""
    from accelerate.utils import set_seed

    from nlp_ssl.models import copy_token_embeddings, max_positions, resolve_model_dir
    from nlp_ssl.tokenizer import load_tokenizer_for

    model_dir = resolve_model_dir(cfg.init)
    positions = max_positions(model_dir, "init")
    if positions is not None and cfg.data.max_length > positions:
        raise ConfigError(
            f"'data.max_length' ({cfg.data.max_length}) exceeds the {positions} positions of the model "
            f"in {model_dir}; set data.max_length={positions} or less"
        )
    tokenizer = load_tokenizer_for(model_dir, cfg.tokenizer)
    # saved with the model: evaluate/predict then truncate as training did
    tokenizer.model_max_length = cfg.data.max_length
    with accelerator.main_process_first():  # tokenize once; the other processes read the cache
        splits, labels, train_index = load_sentiment_data(cfg, tokenizer)
    set_seed(cfg.seed)  # the new head's initial weights are part of what a seed reproduces
    model = build_classifier(model_dir, labels, tokenizer, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
    if cfg.init_embeddings is not None:
        rows = copy_token_embeddings(model, cfg.init_embeddings, tokenizer, cfg.tokenizer or model_dir)
        logger.info("token embeddings of %d ids from %s", rows, cfg.init_embeddings)
    task = ClassificationTask(model, tokenizer, splits, labels, train_index, text_columns=cfg.data.train.text_columns)
    origin = {"init": cfg.init, "from_scratch": cfg.from_scratch, "init_embeddings": cfg.init_embeddings}
    logger.info(
        "sentiment fine-tuning from %s%s: %.2fM parameters, %d labels, %d train / %d validation examples",
        model_dir,
        " (fresh weights)" if cfg.from_scratch else "",
        task.describe()["parameters"] / 1e6,
        len(labels.names),
        task.n_train,
        len(task.index["eval"]),
    )
    return task, origin


def evaluation_task(ft, data: DatasetSpec, options) -> ClassificationTask:
    """A saved classifier over one ``test`` split (``nlp-ssl evaluate``): ``options`` carries
    ``label_column`` and ``max_length``."""
    labels = LabelSet.of(ft.model)
    ds, _ = tokenize_labelled(data, ft.tokenizer, labels, options.label_column, options.max_length)
    return ClassificationTask(ft.model, ft.tokenizer, {"test": ds}, labels, text_columns=data.text_columns)


def predict(ft, texts: list[str], max_length: int) -> list[dict]:
    """Label and probability (and every label's) per text."""
    use_types = bool(getattr(ft.model.config, "type_vocab_size", 0))
    enc = ft.tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
        return_token_type_ids=use_types,
    )
    probs = torch.softmax(ft.model(**enc).logits.float(), dim=-1)
    names = LabelSet.of(ft.model).names
    results = []
    for text, p in zip(texts, probs):
        k = int(p.argmax())
        results.append(
            {
                "text": text,
                "label": names[k],
                "probability": round(float(p[k]), 6),
                "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)},
            }
        )
    return results


def _purpose(recipe: dict, model_config: dict) -> str:
    labels = ", ".join(model_config.get("id2label", {}).values())
    return f"{recipe.get('task', 'sentiment')} classification (labels: {labels})"


def _usage(where: str) -> str:
    return (
        f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{where}")\n'
        'classify("a gripping, beautifully shot film", truncation=True)  # longer texts: cut to the trained length'
    )


SENTIMENT = FinetuneTask(
    name="sentiment",
    config=SentimentConfig,
    setup=setup_sentiment,
    model_noun="sequence classifier",
    auto_model="AutoModelForSequenceClassification",
    recognises=lambda config: any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []),
    evaluation_task=evaluation_task,
    predict=predict,
    pipeline_tag="text-classification",
    title="Sentiment analysis",
    headline=("test_accuracy", "test_f1_macro"),
    starts_from={"init": "the checkpoint"},
    classical_heads=True,
    examples="labelled examples",
    purpose=_purpose,
    usage=_usage,
    limitations="Sentiment labels are binary polarity of short English movie-review text; other domains, "
    "sarcasm and mixed opinions are out of scope.",
)
