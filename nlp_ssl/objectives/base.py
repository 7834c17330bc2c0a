"""The recipe keys every transformer pretraining objective shares; each objective's config
class (``nlp_ssl.objectives.*``) extends ``PretrainConfig`` with its own sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub_options import HubOptions
from nlp_ssl.models import ModelConfig
from nlp_ssl.objectives import get_objective
from nlp_ssl.training.config import TrainConfig


@dataclass
class LongBlocks:
    """The long phase of a length schedule: the last ``fraction`` of the optimizer steps read
    blocks of ``block_size`` tokens, the steps before them blocks of ``data.block_size``."""

    block_size: int = 512
    """A multiple of ``data.block_size``. A long block is that many consecutive short blocks of
    the same text, so every step reads as many tokens in either phase (the short phase reads
    each long block as consecutive short rows)."""
    fraction: float = 0.1
    """Of ``max_steps`` (BERT: the last 10% at 512 tokens, 90% at 128 before them)."""

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"'fraction' must be in (0, 1], got {self.fraction}")


@dataclass
class PretrainDataConfig:
    datasets: list[DatasetSpec]
    """Corpora, concatenated in order, then packed."""
    validation: list[DatasetSpec] = field(default_factory=list)
    """Held-out corpora; when empty, ``validation_fraction`` of the packed blocks is held out."""
    validation_fraction: float = 0.01
    block_size: int = 128
    num_proc: int | None = None
    """Processes for tokenization (datasets.map)."""
    cache_dir: str | None = None
    """Where packed blocks are cached (default: $NLP_SSL_CACHE or ~/.cache/nlp_ssl)."""
    shuffle_buffer: int = 0
    """Streaming only: shuffle documents through a buffer of this many. ``datasets`` does not
    checkpoint the buffer, so a resumed run is exact only with 0 (a pre-shuffled corpus). It
    also holds memory far beyond the documents themselves (docs/benchmarks.md, streaming memory)."""
    long_blocks: LongBlocks | None = None
    """A sequence-length schedule: most steps at ``block_size``, then a phase of longer blocks,
    so the model learns the positions it is saved with (``long_blocks.block_size``) at a
    fraction of the cost of training at that length throughout."""

    def __post_init__(self):
        if not self.datasets:
            raise ConfigError("'datasets' must list at least one dataset")
        if self.block_size < 8:
            raise ConfigError(f"'block_size' must be >= 8, got {self.block_size}")
        if not 0 < self.validation_fraction < 0.5:
            raise ConfigError(f"'validation_fraction' must be in (0, 0.5), got {self.validation_fraction}")
        streaming = {d.streaming for d in self.datasets}
        if len(streaming) > 1:
            raise ConfigError("'datasets' must all stream or all not (streaming: true on every one, or none)")
        if any(d.streaming for d in self.validation):
            raise ConfigError(
                "'validation' datasets cannot stream: a held-out set is small, load it (streaming: false)"
            )
        if self.streaming and not self.validation:
            raise ConfigError(
                "streaming 'datasets' need 'validation' datasets (no fraction can be held out of a stream)"
            )
        if self.shuffle_buffer < 0:
            raise ConfigError(f"'shuffle_buffer' must be >= 0, got {self.shuffle_buffer}")
        long = self.long_blocks
        if long is not None:
            if long.block_size <= self.block_size or long.block_size % self.block_size:
                raise ConfigError(
                    f"'long_blocks.block_size' ({long.block_size}) must be a multiple of 'block_size' "
                    f"({self.block_size}) larger than it (a long block is consecutive short ones)"
                )
            if self.streaming:
                raise ConfigError(
                    "'long_blocks' needs packed data (streaming: false): a long block is cut from packed ones"
                )

    @property
    def longest_block(self) -> int:
        """Tokens of the longest block the model trains on: the positions it learns."""
        return self.long_blocks.block_size if self.long_blocks is not None else self.block_size

    @property
    def rows_per_block(self) -> int:
        """Short rows per packed block (1 without a length schedule)."""
        return self.longest_block // self.block_size

    @property
    def streaming(self) -> bool:
        return self.datasets[0].streaming


@dataclass
class PretrainConfig(HubOptions):
    """What the recipe of every transformer objective has (``pretrain``, plus ``push_to_hub``
    and the other ``HubOptions``); each objective's config class adds its own sections
    (``nlp_ssl.objectives``), and ``recipe_class`` picks that class by ``objective``."""

    SECTIONS_ELSEWHERE: ClassVar[dict[str, str]] = {
        "masking": "applies to objectives mlm and rtd only",
        "rtd": "applies to objective rtd only",
    }
    """Sections of other objectives' recipes, named in the error when one is given here."""

    output_dir: str
    objective: str
    """``mlm`` masked-LM (BERT-style), ``clm`` next-token LM (GPT-style), ``rtd`` replaced-token
    detection (ELECTRA-style: saves the encoder body, for fine-tuning). ``skipgram`` and
    ``cbow`` (token embeddings only) have their own recipe: ``nlp_ssl.objectives.word2vec``."""
    data: PretrainDataConfig
    tokenizer: str | None = None
    """Tokenizer folder (the tokenizer stage's output_dir). With ``init``: default the
    checkpoint's own tokenizer; any other must have the same vocabulary."""
    init: str | None = None
    """Continue pretraining an existing checkpoint (domain- or task-adaptive pretraining): one
    of our runs, any Hugging Face model folder, ``pkg:<package>/<folder>``, or a Hub id. Its
    architecture and size are kept (``model.*`` is ignored but ``model.dropout``)."""
    init_embeddings: str | None = None
    """A skipgram/cbow run (same tokenizer, ``model.dim`` = the model's hidden size) whose
    vectors become the fresh model's initial token embeddings."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self):
        self.check_hub_options()
        self.check_objective()
        if self.init is not None and get_objective(self.objective).load is None:
            raise ConfigError(
                f"'init': objective {self.objective!r} trains from scratch and cannot continue a checkpoint"
            )
        if self.init_embeddings is not None and self.init is not None:
            raise ConfigError(
                "'init_embeddings' initialises a fresh model's token embeddings; 'init' continues a "
                "checkpoint that has its own: set one of them"
            )
        if self.tokenizer is None and self.init is None:
            raise ConfigError("missing required key 'tokenizer' (a tokenizer folder; optional only with 'init')")
        longest = self.data.longest_block
        if self.init is None and longest > self.model.max_positions:
            key = "long_blocks.block_size" if self.data.long_blocks is not None else "block_size"
            raise ConfigError(f"'data.{key}' ({longest}) exceeds 'model.max_positions' ({self.model.max_positions})")
        rows = self.data.rows_per_block
        if rows > 1 and (self.train.metric_for_best is not None or self.train.early_stopping_patience is not None):
            raise ConfigError(
                "'train.metric_for_best' / 'early_stopping_patience' compare evaluations, and with "
                "data.long_blocks they are at two lengths: leave them unset"
            )
        for key in ("micro_batch_size", "eval_batch_size"):
            value = getattr(self.train, key)
            if rows > 1 and value is not None and value % rows:
                raise ConfigError(
                    f"'train.{key}' ({value}) must be a multiple of {rows} with data.long_blocks: a step "
                    f"reads {rows} short rows in place of each long block"
                )

    def check_objective(self) -> None:
        """What one objective's recipe does not allow; its config class overrides this. Runs
        before the shared checks, so that an objective's own error is the one reported."""
