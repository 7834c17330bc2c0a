"""The recipe schema of ``task: sentiment`` (``SentimentConfig`` and its ``data`` section),
checked as it loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub_options import HubOptions
from nlp_ssl.tasks.base import FinetuneTrainConfig, check_dropout, check_split_options
from nlp_ssl.tasks.windows import LongTexts, TrainWindows, Windows


@dataclass
class LabelledDataConfig:
    """A labelled text classification ``data`` section: what fine-tuning and the classical
    heads (``nlp-ssl baseline``) share."""

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
    """Tokens per model input; a longer text is read in windows of this many (``long_texts``)."""
    train_samples: int | None = None
    """Train on a seeded, class-balanced subsample of this many examples (few-label runs)."""
    validation_fraction: float = 0.1
    num_proc: int | None = None

    def __post_init__(self):
        check_split_options(self.train_samples, self.validation_fraction)
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
class SentimentDataConfig(LabelledDataConfig):
    """``task: sentiment``'s ``data``: labelled data, and how a model reads texts longer than
    one input."""

    long_texts: LongTexts = "windows"
    """A text longer than ``max_length``: ``windows``, read whole in overlapping windows whose
    logits are averaged into one prediction (evaluation, ``evaluate``, ``predict``); or
    ``truncate``, cut to its first ``max_length`` tokens."""
    window_overlap: int | None = None
    """Tokens each window repeats from the one before (the tokenizers' ``stride``), smaller than
    the window's text tokens. Default: a quarter of ``max_length``."""
    train_windows: TrainWindows = "random"
    """What training reads of a long text (with ``long_texts: windows``): ``random``, one
    window drawn anew each epoch; ``first``; or ``all``, every window, their logits averaged
    as in evaluation (as many forward passes as windows)."""

    def __post_init__(self):
        super().__post_init__()
        if self.long_texts == "truncate" and (self.window_overlap is not None or self.train_windows != "random"):
            raise ConfigError(
                "'window_overlap' and 'train_windows' choose how windows are read; with "
                "long_texts: truncate there are none (drop them, or set long_texts: windows)"
            )

    @property
    def windows(self) -> Windows:
        """How texts longer than ``max_length`` are read."""
        return Windows.of(self.max_length, self.long_texts, self.window_overlap, self.train_windows)


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
