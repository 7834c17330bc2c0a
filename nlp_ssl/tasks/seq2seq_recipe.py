"""The recipe schemas of ``task: translation`` and ``task: summarization``
(``TranslationConfig``, ``SummarizationConfig``): their data sections, training defaults and
generation settings, checked as they load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub_options import HubOptions
from nlp_ssl.tasks.base import FinetuneTrainConfig, check_dropout, check_split_options


@dataclass
class GenerationOptions:
    """How evaluation, ``evaluate`` and ``predict`` generate (saved as the model's
    ``generation_config.json``, so everyone uses the same settings)."""

    max_new_tokens: int = 64
    num_beams: int = 4
    """1 is greedy decoding; then ``length_penalty`` and ``early_stopping`` do not apply."""
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    early_stopping: bool | None = None
    """Beam search stops when ``num_beams`` finished candidates exist (default: true with
    beam search)."""

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError("'max_new_tokens' and 'num_beams' must be >= 1")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"'no_repeat_ngram_size' must be >= 0, got {self.no_repeat_ngram_size}")
        if self.num_beams == 1 and (self.early_stopping or self.length_penalty != 1.0):
            raise ConfigError(
                "'generation.early_stopping' and 'generation.length_penalty' apply to beam search only: "
                "set generation.num_beams > 1 or leave them unset"
            )
        from transformers import GenerationConfig

        try:  # every other combination transformers would refuse when the model is saved
            GenerationConfig(**self.kwargs()).validate(strict=True)
        except ValueError as exc:
            problems = [line.strip("- ") for line in str(exc).splitlines()[1:] if line.startswith("- ")]
            raise ConfigError(f"'generation': {problems[0] if problems else str(exc).splitlines()[0]}") from None

    def kwargs(self) -> dict:
        """``GenerationConfig`` arguments; beam-only ones only with beam search."""
        out = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        if self.num_beams > 1:
            out.update(
                length_penalty=self.length_penalty,
                early_stopping=True if self.early_stopping is None else self.early_stopping,
            )
        return out


@dataclass(kw_only=True)
class Seq2SeqData:
    """Splits and lengths shared by translation and summarization."""

    train: DatasetSpec
    validation: DatasetSpec | None = None
    """When absent, ``validation_fraction`` of ``train`` is held out (seeded). Every evaluation
    generates for each example: keep it small (``max_rows``)."""
    test: DatasetSpec | None = None
    max_source_length: int = 128
    max_target_length: int = 64
    """Target tokens including the final EOS."""
    train_samples: int | None = None
    """Train on a seeded random subsample of this many pairs."""
    validation_fraction: float = 0.05
    num_proc: int | None = None

    def __post_init__(self):
        if self.max_source_length < 2 or self.max_target_length < 2:
            raise ConfigError("'max_source_length' and 'max_target_length' must be >= 2")
        check_split_options(self.train_samples, self.validation_fraction)


@dataclass(kw_only=True)
class TranslationData(Seq2SeqData):
    source_lang: str
    """Key of the source language inside ``column`` (``en``)."""
    target_lang: str
    column: str = "translation"
    """The column holding ``{lang: text}`` pairs, as in the Hub's translation datasets."""

    @property
    def source_column(self) -> str:
        return f"{self.column}.{self.source_lang}"

    @property
    def target_column(self) -> str:
        return f"{self.column}.{self.target_lang}"


@dataclass(kw_only=True)
class SummarizationData(Seq2SeqData):
    source_column: str = "document"
    target_column: str = "summary"


@dataclass(kw_only=True)
class Seq2SeqTrainConfig(FinetuneTrainConfig):
    """Fine-tuning defaults, keeping the model with the lowest validation loss (generation-based
    metrics are computed at every evaluation too; ``metric_for_best: bleu`` selects on them)."""

    metric_for_best: str | None = "loss"
    lr: float = 3e-4
    group_by_length: bool = False
    """Random batches: length-sorted ones cost translation quality, and packed pairs take out
    most of the padding without sorting (docs/benchmarks.md)."""
    length_group_batches: int = 5
    """With ``group_by_length: true``: the coarser the groups, the more quality they cost."""
    pack_pairs: bool | None = None
    """Train on rows holding several pairs each (up to ``max_source_length`` /
    ``max_target_length`` tokens), every pair attending only to itself: the padding of a
    random batch is not computed, and the loss is the padded batch's. Needs BERT, RoBERTa or
    ModernBERT encoders, GPT-2, BERT or RoBERTa decoders, SDPA or eager attention. Default:
    pack when the model allows it, else one pair per row (logged); ``true`` requires it."""


@dataclass(kw_only=True)
class Seq2SeqConfig(HubOptions):
    """Recipe of ``finetune`` with ``task: translation`` or ``task: summarization``."""

    output_dir: str
    init: str
    """The checkpoint to start from, as the encoder (and as the decoder unless ``init_decoder``
    is set): our masked-LM run (BERT), any encoder folder, ``pkg:``, a Hub id."""
    init_decoder: str | None = None
    """The decoder's checkpoint (cross-attention is added): our next-token run (GPT-2), or a
    masked-LM run (BERT as decoder, its own copy of the weights: transformers 5 dropped shared
    encoder-decoder weights). Default: ``init``."""
    from_scratch: bool | Literal["decoder"] = False
    """``true``: the same shapes with fresh weights, the labels-only baseline. ``decoder``: the
    encoder from ``init``, a fresh decoder in the shapes of ``init_decoder`` (an encoder-only
    warm start)."""
    init_embeddings: str | None = None
    """A skipgram/cbow run (same tokenizer, as wide as both halves) whose vectors replace the
    token embeddings of the encoder and of the decoder (and so a tied output layer) before
    training; with ``from_scratch: true``, the embeddings are then the only pretrained part."""
    tokenizer: str | None = None
    """Default: the encoder's tokenizer (the decoder's must be the same)."""
    dropout: float | None = 0.1
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    seed: int = 0

    def __post_init__(self):
        self.check_hub_options()
        check_dropout(self.dropout)


@dataclass(kw_only=True)
class TranslationConfig(Seq2SeqConfig):
    task: Literal["translation"]
    data: TranslationData


@dataclass(kw_only=True)
class SummarizationConfig(Seq2SeqConfig):
    task: Literal["summarization"]
    data: SummarizationData
