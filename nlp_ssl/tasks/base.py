"""What every fine-tuning task shares: its descriptor (``FinetuneTask``), the fine-tuning
training defaults, the checks and the validation hold-out of its data section, and tokenized
``datasets`` splits read by row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from nlp_ssl.data import hold_out
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import count_parameters
from nlp_ssl.training.config import TrainConfig


@dataclass(frozen=True)
class FinetuneTask:
    """One fine-tuning task as the rest of the toolkit sees it. ``nlp_ssl.tasks.TASKS`` maps
    a recipe's ``task`` to its module; ``finetune``, ``inference``, ``model_card``, ``pipeline``
    and ``study`` look everything task-specific up here."""

    name: str
    config: type
    """The recipe's typed config."""
    setup: Callable
    """``setup(cfg, accelerator) -> (engine task, origin)``: tokenizer, data and model, every
    check done before the run folder is touched; ``origin`` says where the weights came from
    (written into ``metrics.json``)."""
    model_noun: str
    """What a saved model of this task is called in messages ("sequence classifier")."""
    auto_model: str
    """The ``transformers`` Auto class that loads a saved model (``evaluate``, ``predict``)."""
    recognises: Callable[[dict], bool]
    """``recognises(config_json) -> bool``: whether a saved model folder is one this task
    produces (any Hugging Face model of that kind counts, not only ours)."""
    evaluation_task: Callable
    """``evaluation_task(finetuned, dataset_spec, options) -> engine task`` over one ``test``
    split, for ``nlp-ssl evaluate``."""
    predict: Callable
    """``predict(finetuned, texts, max_length, options) -> one dict per text`` (one batch, under
    ``torch.no_grad``), for ``nlp-ssl predict``; ``options`` (``inference.ReadingOptions``)
    says how a classifier reads texts longer than ``max_length``."""
    pipeline_tag: str
    """The Hub's pipeline tag (``text-classification``...)."""
    title: str
    """The task as a model card names it."""
    headline: tuple[str, ...]
    """``metrics.json`` keys that summarise a run, most important first (a study compares the
    first by default)."""
    starts_from: dict[str, str]
    """Recipe keys naming the checkpoint(s) fine-tuning starts from, in card order, and what
    the card calls each (``{"init": "the encoder", "init_decoder": "the decoder"}``)."""
    examples: str
    """What one training example is, for the card ("labelled examples")."""
    purpose: Callable[[dict, dict], str]
    """``purpose(recipe, model_config) -> str``: what the model does, for the card
    ("sentiment classification (labels: neg, pos)")."""
    usage: Callable[[str], str]
    """``usage(repo_or_path) -> str``: a Python snippet for the model card."""
    classical_heads: bool = False
    """Whether ``nlp-ssl baseline`` (TF-IDF / frozen features + logistic regression) can run
    on this task's data (a study arm with ``method: tfidf_logreg`` or ``frozen_logreg``)."""
    limitations: str = ""
    """Added to the card's generic limitations."""
    warm_start_note: str = ""
    """Appended to the card's list of starting checkpoints when there are several."""
    languages: Callable[[dict], str | list[str]] | None = None
    """``languages(recipe)``: the card's language codes (default ``en``)."""

    def pretrained_starts(self, recipe: dict) -> list[str]:
        """The keys of ``starts_from`` whose weights a run with ``recipe`` loads: none with
        ``from_scratch: true``, the encoder's alone with ``from_scratch: decoder`` (the
        decoder only lends its shapes)."""
        keys = list(self.starts_from)
        scratch = recipe.get("from_scratch")
        return [] if scratch is True else keys[:1] if scratch == "decoder" else keys


@dataclass
class FinetuneTrainConfig(TrainConfig):
    """``TrainConfig`` with fine-tuning defaults: sized in epochs, evaluated every epoch, the
    most accurate model kept."""

    max_steps: int = 1000
    epochs: float | None = 3.0
    micro_batch_size: int = 32
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    eval_every: int | Literal["epoch"] = "epoch"
    save_every: int | Literal["epoch"] = "epoch"
    keep_last: int = 1
    metric_for_best: str | None = "accuracy"
    group_by_length: bool = True


def pad_multiple() -> int | None:
    """What batches are padded to a multiple of: 8 on a GPU (tensor cores take matrices in
    multiples of 8), none on a CPU, where every padded position is computed for nothing."""
    import torch

    return 8 if torch.cuda.is_available() else None


def check_dropout(dropout: float | None) -> None:
    if dropout is not None and not 0 <= dropout < 1:
        raise ConfigError(f"'dropout' must be in [0, 1), got {dropout}")


def check_split_options(train_samples: int | None, validation_fraction: float) -> None:
    """The checks on a data section's ``train_samples`` and ``validation_fraction``: at least
    one example to train on, and a hold-out that leaves most of ``train`` for training."""
    if train_samples is not None and train_samples < 1:
        raise ConfigError(f"'train_samples' must be positive, got {train_samples}")
    if not 0 < validation_fraction < 0.5:
        raise ConfigError(f"'validation_fraction' must be in (0, 0.5), got {validation_fraction}")


def validation_split(train, validation, tokenize: Callable, *, fraction: float, seed: int, noun: str) -> tuple:
    """``(eval split, training positions of train)``: the ``validation`` split tokenized by
    ``tokenize(spec)`` when the recipe gives one, all of ``train`` then training; else a seeded
    ``fraction`` of ``train`` held out (``noun`` names its rows in the error when it is too
    small to spare them: "examples", "pairs")."""
    if validation is not None:
        return tokenize(validation), np.arange(len(train))
    pool, held = hold_out(
        len(train),
        fraction,
        seed,
        f"data.train: {len(train)} {noun} are too few to hold out a validation set",
    )
    # in a seeded random order: train.eval_max_batches scores the first ones, and labelled
    # files are often sorted by label (imdb, rotten_tomatoes)
    return train.select(np.random.default_rng([seed, 0x0DE5]).permutation(held)), pool


class TokenizedSplits:
    """Splits (``train``, ``eval``, ``test``) of tokenized examples, each read through an index
    (the training index may be a subsample), and the untouched rows for prediction records."""

    def init_splits(self, splits: dict, columns: list[str], train_index=None) -> None:
        self.texts = splits
        """The full rows (original columns kept), for predictions.jsonl."""
        self.splits = {
            name: ds.select_columns([c for c in columns if c in ds.column_names]) for name, ds in splits.items()
        }
        self.index = {name: np.arange(len(ds)) for name, ds in splits.items()}
        if train_index is not None:
            self.index["train"] = np.asarray(train_index)
        self.n_train = len(self.index["train"]) if "train" in splits else 0
        self._lengths: dict[str, np.ndarray] = {}

    def eval_indices(self, split: str = "eval") -> np.ndarray:
        if split not in self.splits:
            raise ConfigError(f"no {split!r} split to evaluate")
        return np.arange(len(self.index[split]))

    length_columns: tuple[str, ...] = ("input_ids",)
    """The token columns whose lengths make an example's cost (``LengthAware``)."""

    def lengths(self, split: str) -> np.ndarray:
        """Tokens per example at each position of ``split`` (computed once per split)."""
        if split not in self._lengths:
            import pyarrow.compute as pc

            # list lengths in Arrow, not row by row in Python (the selection's indices applied)
            table = self.splits[split].select_columns(list(self.length_columns)).with_format("arrow")[:]
            per_row = sum(pc.list_value_length(table[c]).to_numpy().astype(np.int64) for c in self.length_columns)
            self._lengths[split] = per_row[self.index[split]]
        return self._lengths[split]

    def examples(self, split: str, indices) -> tuple[np.ndarray, list[dict]]:
        """Dataset rows for positions ``indices`` of a split, as one dict per example."""
        rows = self.index[split][np.asarray(indices)]
        features = self.splits[split][rows.tolist()]
        return rows, [{k: features[k][i] for k in features} for i in range(len(rows))]

    def describe(self) -> dict:
        """What ``metrics.json`` and the setup log say about the run: the trainable parameters,
        what ``describe_model`` adds, then the examples of each split."""
        return {
            "parameters": count_parameters(self.model),
            **self.describe_model(),
            "train_examples": self.n_train,
            **{f"{name}_examples": len(idx) for name, idx in self.index.items() if name != "train"},
        }

    def describe_model(self) -> dict:
        """What a task adds to ``describe`` about its model (a classifier: its label count)."""
        return {}

    def source_rows(self, split: str, outputs: dict) -> list[dict]:
        """The original rows behind gathered evaluation outputs, in their order."""
        ds = self.texts[split]
        return [ds[int(r)] for r in self.index[split][outputs["index"]]]
