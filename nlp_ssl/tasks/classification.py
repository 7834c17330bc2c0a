"""Sequence classification (``task: sentiment``): labelled text -> label.

Setup, and what this task adds to the engine: a loss module over any
``AutoModelForSequenceClassification`` (BERT-style from the [CLS] position, GPT-style from the
last non-pad token), dynamic padding with ``DataCollatorWithPadding`` (fine-tuning never packs:
examples must not see each other), and accuracy / macro and per-class F1 through the shipped
``evaluate`` module. The recipe schema (``SentimentConfig``) is in ``classification_recipe``;
reading labelled splits and the few-label subsample in ``classification_data``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.data import DatasetSpec, dig
from nlp_ssl.errors import DataError
from nlp_ssl.models import flops_per_token
from nlp_ssl.tasks.base import FinetuneTask, TokenizedSplits, pad_multiple, validation_split
from nlp_ssl.tasks.classification_data import LabelSet, balanced_subsample, infer_labels, tokenize_labelled
from nlp_ssl.tasks.classification_recipe import SentimentConfig, SentimentDataConfig
from nlp_ssl.training.contract import Batch

__all__ = [
    "SENTIMENT",
    "ClassificationTask",
    "LabelSet",
    "SentimentConfig",
    "SentimentDataConfig",
    "SequenceClassificationLoss",
    "balanced_subsample",
    "build_classifier",
    "evaluation_task",
    "infer_labels",
    "load_sentiment_data",
    "predict",
    "setup_sentiment",
    "tokenize_labelled",
]

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
        # per-class keys by the label's name (f1_positive): an id means nothing to a reader of metrics.json
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

    def describe_model(self) -> dict:
        return {"num_labels": len(self.labels.names)}

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


def load_sentiment_data(cfg: SentimentConfig, tokenizer):
    """Tokenized train / eval / test splits, the label set, and the training indices."""
    d = cfg.data
    labels = LabelSet(list(d.labels)) if d.labels is not None else None
    train, labels = tokenize_labelled(d.train, tokenizer, labels, d.label_column, d.max_length, d.num_proc)

    def labelled(spec):  # with the training split's labels
        return tokenize_labelled(spec, tokenizer, labels, d.label_column, d.max_length, d.num_proc)[0]

    splits = {"train": train}
    splits["eval"], pool = validation_split(
        train, d.validation, labelled, fraction=d.validation_fraction, seed=cfg.seed, noun="examples"
    )
    if d.test is not None:
        splits["test"] = labelled(d.test)
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

    from nlp_ssl.models import check_length_fits, copy_init_embeddings, resolve_model_dir
    from nlp_ssl.tokenizer import load_tokenizer_for

    model_dir = resolve_model_dir(cfg.init)
    check_length_fits(model_dir, "data.max_length", cfg.data.max_length, key="init", suggest=True)
    tokenizer = load_tokenizer_for(model_dir, cfg.tokenizer)
    # saved with the model: evaluate/predict then truncate as training did
    tokenizer.model_max_length = cfg.data.max_length
    with accelerator.main_process_first():  # tokenize once; the other processes read the cache
        splits, labels, train_index = load_sentiment_data(cfg, tokenizer)
    set_seed(cfg.seed)  # the new head's initial weights are part of what a seed reproduces
    model = build_classifier(model_dir, labels, tokenizer, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
    copy_init_embeddings(model, cfg.init_embeddings, tokenizer, cfg.tokenizer or model_dir, log=logger)
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
