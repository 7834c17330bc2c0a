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
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.data import DatasetSpec, dig
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models import flops_per_token
from nlp_ssl.tasks.base import FinetuneTask, TokenizedSplits, pad_multiple, validation_split
from nlp_ssl.tasks.classification_data import LabelSet, balanced_subsample, infer_labels, tokenize_labelled
from nlp_ssl.tasks.classification_recipe import SentimentConfig, SentimentDataConfig
from nlp_ssl.tasks.windows import COUNT_COLUMN, Windows, cut_share, encode_windows, pool_logits, report_cuts
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

EVAL_WINDOWS = 256
"""Windows per forward pass when a batch of long texts is scored."""


class SequenceClassificationLoss(torch.nn.Module):
    """Sum of per-example cross-entropies (the engine normalises by the global count)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, labels: torch.Tensor, return_logits: bool = False, window_owner=None, **inputs):
        if window_owner is not None and not torch.is_grad_enabled():
            # evaluation of long texts: a batch of texts may be hundreds of windows
            pieces = [
                self.model(**{k: v[start : start + EVAL_WINDOWS] for k, v in inputs.items()}).logits
                for start in range(0, len(window_owner), EVAL_WINDOWS)
            ]
            logits = torch.cat(pieces)
        else:
            logits = self.model(**inputs).logits
        if window_owner is not None:  # several windows of one text: one prediction per text
            logits = pool_logits(logits, window_owner, len(labels))
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        return (loss, logits) if return_logits else loss


class ClassificationTask(TokenizedSplits):
    """Engine task over labelled splits (``train``, ``eval`` and optionally ``test``) encoded
    by ``Windows.encode``: each example is a text and its token windows, of which a batch reads
    every one in evaluation and what ``windows.train`` says in training."""

    model_inputs = ("input_ids", "token_type_ids")

    def __init__(
        self,
        model,
        tokenizer,
        splits: dict,
        labels: LabelSet,
        windows: Windows,
        train_index: np.ndarray | None = None,
        text_columns: list[str] | None = None,
        seed: int = 0,
    ):
        from transformers import DataCollatorWithPadding

        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        self.windows = windows
        self.seed = seed
        """Seeds the window a training batch draws from a long text (with the text and epoch)."""
        self.text_columns = text_columns or ["text"]
        """Columns copied into prediction records."""
        self.module = SequenceClassificationLoss(model)
        # GPT-2 would add token-type embeddings looked up in its word embeddings: only models
        # with a token-type table get token_type_ids
        self.inputs = [
            c for c in self.model_inputs if c != "token_type_ids" or getattr(model.config, "type_vocab_size", 0)
        ]
        self.init_splits(splits, self.inputs + ["label_id", COUNT_COLUMN], train_index)
        self.collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple())
        self._window_lengths: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        first = next(iter(splits))
        self._mean_length = float(np.mean(self._windows_of(first)[1])) if len(splits[first]) else 1.0

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        rows, examples = self.examples(split, indices)
        windows, owner, labels = [], [], []
        for k, (row, example) in enumerate(zip(rows, examples)):
            n = len(example["input_ids"])
            for w in self.windows.picked(n, int(row), epoch, self.seed, training=split == "train"):
                windows.append({c: example[c][w] for c in self.inputs if c in example})
                owner.append(k)
            labels.append(example["label_id"])
        inputs = dict(self.collator(windows))
        inputs["labels"] = torch.tensor(labels)
        if len(windows) > len(examples):
            inputs["window_owner"] = torch.tensor(owner)
        return Batch(inputs, n_targets=len(rows), n_tokens=int(inputs["attention_mask"].sum()))

    def lengths(self, split: str) -> np.ndarray:
        """Tokens a batch reads of each example: every window's in evaluation and with
        ``train_windows: all``, else one window's (the first stands for a drawn one)."""
        if split not in self._lengths:
            owner, sizes = self._windows_of(split)
            n = len(self.splits[split])
            if split == "train" and self.windows.train != "all":
                first = np.ones(len(owner), dtype=bool)
                first[1:] = owner[1:] != owner[:-1]
                per_row = np.zeros(n, dtype=np.int64)
                per_row[owner[first]] = sizes[first]
            else:
                per_row = np.bincount(owner, weights=sizes, minlength=n).astype(np.int64)
            self._lengths[split] = per_row[self.index[split]]
        return self._lengths[split]

    def _windows_of(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Each stored window's row and token count, in row order (read in Arrow)."""
        if split not in self._window_lengths:
            import pyarrow.compute as pc

            column = self.splits[split].select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
            owner = pc.list_parent_indices(column).to_numpy().astype(np.int64)
            sizes = pc.list_value_length(pc.list_flatten(column)).to_numpy().astype(np.int64)
            self._window_lengths[split] = owner, sizes
        return self._window_lengths[split]

    def cut_shares(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per split: the share of texts the model does not read whole, and the share longer
        than one window."""
        cut, long = {}, {}
        for name, ds in self.splits.items():
            counts = ds.select_columns([COUNT_COLUMN]).with_format("numpy")[:][COUNT_COLUMN]
            owner, _ = self._windows_of(name)
            stored = np.bincount(owner, minlength=len(ds))
            counts, stored = counts[self.index[name]], stored[self.index[name]]
            cut[name] = cut_share(counts, stored, self.windows, training=name == "train")
            long[name] = float(np.mean(counts > 1)) if len(counts) else 0.0
        return cut, long

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

    def describe(self) -> dict:
        cut, long = self.cut_shares()
        return {
            **super().describe(),
            **self.windows.saved(),
            **({"train_windows": self.windows.train} if self.windows.whole else {}),
            **{f"{name}_long_share": round(v, 4) for name, v in long.items()},
            **{f"{name}_truncated_share": round(v, 4) for name, v in cut.items()},
        }


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


def load_sentiment_data(cfg: SentimentConfig, encode):
    """Encoded train / eval / test splits, the label set, and the training indices.
    ``encode`` turns a batch of texts into columns (``tokenize_labelled``)."""
    d = cfg.data
    labels = LabelSet(list(d.labels)) if d.labels is not None else None
    train, labels = tokenize_labelled(d.train, encode, labels, d.label_column, d.num_proc)

    def labelled(spec):  # with the training split's labels
        return tokenize_labelled(spec, encode, labels, d.label_column, d.num_proc)[0]

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
    # saved with the model: a window of evaluate/predict is as long as training's
    tokenizer.model_max_length = cfg.data.max_length
    windows = cfg.data.windows
    windows.check(tokenizer)
    with accelerator.main_process_first():  # tokenize once; the other processes read the cache
        splits, labels, train_index = load_sentiment_data(cfg, encoder(windows, tokenizer))
    set_seed(cfg.seed)  # the new head's initial weights are part of what a seed reproduces
    model = build_classifier(model_dir, labels, tokenizer, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
    model.config.nlp_ssl = {"task": cfg.task, **windows.saved()}
    if not getattr(model.config, "type_vocab_size", 0) and "token_type_ids" in tokenizer.model_input_names:
        # GPT-2 would look token-type ids up as words: pipeline() and the card's snippet must not pass them
        names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
        tokenizer.model_input_names = names
        tokenizer.init_kwargs["model_input_names"] = names  # what save_pretrained writes
    copy_init_embeddings(model, cfg.init_embeddings, tokenizer, cfg.tokenizer or model_dir, log=logger)
    task = ClassificationTask(
        model,
        tokenizer,
        splits,
        labels,
        windows,
        train_index,
        text_columns=cfg.data.train.text_columns,
        seed=cfg.seed,
    )
    report_cuts(*task.cut_shares(), windows)
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


def encoder(windows: Windows, tokenizer):
    """What ``tokenize_labelled`` maps over the texts: their windows (a partial of plain
    values, so that the ``datasets`` cache is keyed by them, not by ``train_windows``)."""
    return partial(encode_windows, tokenizer, windows.length, windows.overlap)


def reading(ft, max_length: int, options=None) -> Windows:
    """How a saved classifier reads long texts: ``options`` (``long_texts``, ``window_overlap``:
    ``evaluate``'s and ``predict``'s options) where given, else as it was evaluated in
    fine-tuning (``config.nlp_ssl``), else (anyone's classifier) in windows. A saved overlap
    that does not fit a window of another ``max_length`` falls back to the default."""
    saved = ft.saved
    asked_mode, overlap = getattr(options, "long_texts", None), getattr(options, "window_overlap", None)
    if asked_mode == "truncate" and overlap is not None:
        raise ConfigError("--window-overlap chooses how windows overlap; --long-texts truncate reads none")
    # an overlap asked for means windows, whatever the model was evaluated with
    mode = asked_mode or ("windows" if overlap is not None else saved.get("long_texts") or "windows")
    windows = Windows.of(max_length, mode, overlap)
    if overlap is None and windows.whole and saved.get("window_overlap") is not None:
        trained = Windows.of(max_length, mode, saved["window_overlap"])
        try:
            trained.check(ft.tokenizer)
            windows = trained
        except ConfigError:
            logger.info(
                "the saved window_overlap %d does not fit windows of %d tokens: overlapping by %d",
                saved["window_overlap"],
                max_length,
                windows.overlap,
            )
    windows.check(ft.tokenizer, key="--window-overlap" if overlap is not None else f"--max-length {max_length}")
    return windows


def evaluation_task(ft, data: DatasetSpec, options) -> ClassificationTask:
    """A saved classifier over one ``test`` split (``nlp-ssl evaluate``): ``options`` carries
    ``label_column``, ``max_length`` and how to read long texts (``reading``)."""
    labels = LabelSet.of(ft.model)
    windows = reading(ft, options.max_length, options)
    ds, _ = tokenize_labelled(data, encoder(windows, ft.tokenizer), labels, options.label_column)
    task = ClassificationTask(ft.model, ft.tokenizer, {"test": ds}, labels, windows, text_columns=data.text_columns)
    report_cuts(*task.cut_shares(), windows, option="--long-texts windows")
    return task


def predict(ft, texts: list[str], max_length: int, options=None, window_batch: int = 64) -> list[dict]:
    """Label and probability (and every label's) per text, a long text's from the mean of its
    windows' logits (``reading``); the windows run ``window_batch`` at a time."""
    windows = reading(ft, max_length, options)
    enc = windows.encode(ft.tokenizer, [texts])
    keep = [c for c in ClassificationTask.model_inputs if c in enc]
    if not getattr(ft.model.config, "type_vocab_size", 0):
        keep = [c for c in keep if c != "token_type_ids"]
    flat = [{c: enc[c][t][w] for c in keep} for t in range(len(texts)) for w in range(len(enc["input_ids"][t]))]
    owner = torch.tensor([t for t in range(len(texts)) for _ in enc["input_ids"][t]])
    pieces = []
    for start in range(0, len(flat), window_batch):
        batch = ft.tokenizer.pad(flat[start : start + window_batch], return_tensors="pt")
        pieces.append(ft.model(**batch).logits.float())
    probs = torch.softmax(pool_logits(torch.cat(pieces), owner, len(texts)), dim=-1)
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
    return f"""from transformers import pipeline

classify = pipeline("text-classification", model="{where}")
classify("a gripping, beautifully shot film", truncation=True)
# pipeline() reads a longer text's first window only (the tokenizer's model_max_length tokens)

# A whole text of any length, as nlp-ssl evaluate and predict read it (unless the model was
# fine-tuned with long_texts: truncate): the tokenizer's overlapping windows, logits averaged
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{where}")
model = AutoModelForSequenceClassification.from_pretrained("{where}").eval()
text = "a gripping, beautifully shot film. " * 200
overlap = getattr(model.config, "nlp_ssl", {{}}).get("window_overlap")
overlap = tokenizer.model_max_length // 4 if overlap is None else overlap
windows = tokenizer(
    text, truncation=True, stride=overlap, return_overflowing_tokens=True, padding=True, return_tensors="pt"
)
windows.pop("overflow_to_sample_mapping")
with torch.no_grad():
    logits = model(**windows).logits.mean(0)
print(model.config.id2label[int(logits.argmax())], logits.softmax(-1).max().item())"""


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
