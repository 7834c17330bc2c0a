"""Pretraining stage: ``nlp-ssl pretrain RECIPE.yaml`` (alone, or under ``accelerate launch``).

setup (tokenizer, model, packed data) -> ``engine.fit`` -> final model folder + run files.
Output: ``<output_dir>/model/`` (``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``, or for
``rtd`` the encoder body for ``AutoModel`` / ``AutoModelForSequenceClassification``; +
tokenizer), ``checkpoints/``, ``logs/`` (TensorBoard), ``train_log.jsonl`` and the
run files of every stage (``metrics.json`` last).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nlp_ssl.data import DatasetSpec
from nlp_ssl.engine import TrainConfig, fit, make_accelerator, save_model_folder
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models import (
    ModelConfig,
    build_generator,
    build_model,
    check_same_tokenizer,
    check_vocab,
    copy_token_embeddings,
    load_pretrained_lm,
    max_positions,
    resolve_model_dir,
)
from nlp_ssl.outputs import locks_output, now, open_run_dir, prepare_run_dir, write_run_files
from nlp_ssl.packing import PackedStream, pack
from nlp_ssl.publish import HubOptions, after_run, checkpoint_pusher, refuse_offline_push
from nlp_ssl.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

MODEL_DIR = "model"


@dataclass
class MaskingConfig:
    probability: float = 0.15
    """Fraction of tokens selected for prediction."""
    mask_replace_prob: float = 0.8
    """Of the selected: replaced by <mask>."""
    random_replace_prob: float = 0.1
    """Of the selected: replaced by a random token (the rest stay unchanged)."""
    whole_word: bool = False
    """Select whole words (from the tokenizer's word ids, any tokenizer type). The library's
    whole-word masking replaces every selected token by <mask> (no random/unchanged share)."""

    def __post_init__(self):
        if not 0 < self.probability < 1:
            raise ConfigError(f"'probability' must be in (0, 1), got {self.probability}")
        if self.mask_replace_prob < 0 or self.random_replace_prob < 0 or self.mask_replace_prob + self.random_replace_prob > 1:
            raise ConfigError("'mask_replace_prob' and 'random_replace_prob' must be >= 0 and sum to at most 1")


@dataclass
class ReplacedTokenDetectionConfig:
    """``objective: rtd`` (ELECTRA): a small generator fills the masked positions, the encoder
    learns to tell replaced tokens from originals at every position."""

    generator_layers: int = 1
    """Layers of the generator (same width as the encoder, word embeddings shared). ELECTRA
    found generators 1/4 to 1/2 the discriminator's size best: too strong a generator makes
    the task too hard for a small discriminator."""
    disc_weight: float = 50.0
    """Weight of the discriminator's per-token loss against the generator's masked-LM loss
    (ELECTRA's lambda)."""

    def __post_init__(self):
        if self.generator_layers < 1:
            raise ConfigError(f"'generator_layers' must be >= 1, got {self.generator_layers}")
        if self.disc_weight <= 0:
            raise ConfigError(f"'disc_weight' must be positive, got {self.disc_weight}")


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
    also costs memory far beyond the documents themselves: 1,000 of them added ~0.33 GB to the
    stream's RSS and ~0.7 GB to a training run's in ``benchmarks/bench_stream_memory.py``."""

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
            raise ConfigError("'validation' datasets cannot stream: a held-out set is small, load it (streaming: false)")
        if self.streaming and not self.validation:
            raise ConfigError("streaming 'datasets' need 'validation' datasets (no fraction can be held out of a stream)")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"'shuffle_buffer' must be >= 0, got {self.shuffle_buffer}")

    @property
    def streaming(self) -> bool:
        return self.datasets[0].streaming


@dataclass
class PretrainConfig(HubOptions):
    """Recipe of the ``pretrain`` stage (plus ``push_to_hub`` and the other ``HubOptions``)."""

    output_dir: str
    objective: Literal["mlm", "clm", "rtd"]
    """``mlm`` masked-LM (BERT-style), ``clm`` next-token LM (GPT-style), ``rtd`` replaced-token
    detection (ELECTRA-style: saves the encoder body, for fine-tuning). ``skipgram`` and
    ``cbow`` (token embeddings only) have their own recipe: ``nlp_ssl.embeddings``."""
    data: PretrainDataConfig
    tokenizer: str | None = None
    """Tokenizer folder (the tokenizer stage's output_dir). With ``init_from``: default the
    checkpoint's own tokenizer; any other must have the same vocabulary."""
    init_from: str | None = None
    """Continue pretraining an existing checkpoint (domain- or task-adaptive pretraining): one
    of our runs, any Hugging Face model folder, ``pkg:<package>/<folder>``, or a Hub id. Its
    architecture and size are kept (``model.*`` is ignored but ``model.dropout``)."""
    init_embeddings: str | None = None
    """A skipgram/cbow run (same tokenizer, ``model.dim`` = the model's hidden size) whose
    vectors become the fresh model's initial token embeddings."""
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Which tokens ``mlm`` predicts, or ``rtd``'s generator fills."""
    rtd: ReplacedTokenDetectionConfig = field(default_factory=ReplacedTokenDetectionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self):
        self.check_hub_options()
        if self.objective == "rtd" and self.init_from is not None:
            raise ConfigError("'init_from' continues mlm or clm pretraining; 'rtd' trains its encoder and generator "
                              "from scratch")
        if self.objective == "rtd" and self.rtd.generator_layers > self.model.resolved()[0]:
            raise ConfigError(f"'rtd.generator_layers' ({self.rtd.generator_layers}) exceeds the encoder's "
                              f"{self.model.resolved()[0]} layers")
        if self.init_embeddings is not None and self.init_from is not None:
            raise ConfigError("'init_embeddings' initialises a fresh model's token embeddings; 'init_from' continues a "
                              "checkpoint that has its own: set one of them")
        if self.tokenizer is None and self.init_from is None:
            raise ConfigError("missing required key 'tokenizer' (a tokenizer folder; optional only with 'init_from')")
        if self.init_from is None and self.data.block_size > self.model.max_positions:
            raise ConfigError(
                f"'data.block_size' ({self.data.block_size}) exceeds 'model.max_positions' ({self.model.max_positions})"
            )


def recipe_class(raw: dict, source: str) -> type:
    """The config class for a pretrain recipe, chosen by its ``objective``: the shallow
    embedding objectives (``skipgram``, ``cbow``) have their own recipe and module."""
    from nlp_ssl.embeddings import OBJECTIVES, EmbeddingPretrainConfig

    objective = raw.get("objective")
    choices = ("mlm", "clm", "rtd", *OBJECTIVES)
    if objective is None:
        raise ConfigError(f"{source}: missing required key 'objective' (one of: {', '.join(choices)})")
    if objective not in choices:
        raise ConfigError(f"{source}: 'objective' must be one of: {', '.join(choices)}; got {objective!r}")
    return EmbeddingPretrainConfig if objective in OBJECTIVES else PretrainConfig


def load_data(cfg: PretrainConfig, tokenizer):
    """Packed train and validation blocks, and which block indices each split uses
    (train blocks are None when the training data streams)."""
    d = cfg.data
    words = cfg.objective != "clm" and cfg.masking.whole_word
    if d.streaming:
        valid = pack(d.validation, tokenizer, d.block_size, d.cache_dir, d.num_proc, words)
        return None, None, valid, np.arange(len(valid.blocks))
    train = pack(d.datasets, tokenizer, d.block_size, d.cache_dir, d.num_proc, words)
    if d.validation:
        valid = pack(d.validation, tokenizer, d.block_size, d.cache_dir, d.num_proc, words)
        return train, np.arange(len(train.blocks)), valid, np.arange(len(valid.blocks))
    # hold out a seeded sample of blocks; training sees the rest
    n = len(train.blocks)
    held = max(1, int(round(n * d.validation_fraction)))
    if n - held < 1:
        raise ConfigError(f"data: only {n} blocks of {d.block_size} tokens; need more text to hold out validation")
    order = np.random.default_rng([cfg.seed, 12345]).permutation(n)
    return train, np.sort(order[held:]), train, np.sort(order[:held])


def load_tokenizer_and_model(cfg: PretrainConfig):
    """A fresh model sized by ``cfg.model``, or the ``init_from`` checkpoint to continue; the
    tokenizer checked against it."""
    from accelerate.utils import set_seed

    if cfg.init_from is None:
        tokenizer = load_tokenizer(cfg.tokenizer)
        set_seed(cfg.seed)  # the initial weights are part of what a seed reproduces
        model = build_model(cfg.objective, cfg.model, tokenizer)
        check_vocab(model, tokenizer, cfg.tokenizer)
        if cfg.init_embeddings is not None:
            rows = copy_token_embeddings(model, cfg.init_embeddings, tokenizer, cfg.tokenizer)
            logger.info("token embeddings of %d ids from %s", rows, cfg.init_embeddings)
        return tokenizer, model
    model_dir = resolve_model_dir(cfg.init_from, key="init_from")
    positions = max_positions(model_dir)
    if positions is not None and cfg.data.block_size > positions:
        raise ConfigError(f"'data.block_size' ({cfg.data.block_size}) exceeds the {positions} positions of the "
                          f"model in {model_dir}")
    tokenizer_dir = cfg.tokenizer or model_dir
    tokenizer = load_tokenizer(tokenizer_dir)
    if cfg.objective == "mlm" and tokenizer.mask_token_id is None:
        raise DataError(f"tokenizer {tokenizer_dir}: has no mask token, which masked-LM pretraining needs")
    check_same_tokenizer(tokenizer, model_dir, tokenizer_dir)
    set_seed(cfg.seed)  # a head the checkpoint lacks is initialised fresh
    model = load_pretrained_lm(cfg.objective, model_dir, cfg.model.dropout)
    check_vocab(model, tokenizer, tokenizer_dir)
    logger.info("continuing %s pretraining from %s", cfg.objective, model_dir)
    return tokenizer, model


def run(cfg, overwrite: bool = False) -> dict:
    """Pretrain with ``cfg``'s objective (a ``PretrainConfig`` or, for skipgram / cbow, an
    ``EmbeddingPretrainConfig``)."""
    from nlp_ssl import embeddings

    if isinstance(cfg, embeddings.EmbeddingPretrainConfig):
        return embeddings.run(cfg, overwrite=overwrite)
    return _run_transformer(cfg, overwrite=overwrite)


@locks_output()
def _run_transformer(cfg: PretrainConfig, overwrite: bool = False) -> dict:
    from nlp_ssl.tasks.pretrain import PretrainTask, ReplacedTokenDetectionTask

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown the training bar
    started = now()
    out = Path(cfg.output_dir).absolute()
    tcfg = cfg.train
    accelerator = make_accelerator(tcfg, out)
    prepare_run_dir(out, tcfg.resume, overwrite)
    refuse_offline_push(cfg)
    # everything that can reject the input runs before output_dir is touched
    tokenizer, model = load_tokenizer_and_model(cfg)
    with accelerator.main_process_first():  # tokenize and pack once; the others read the cache
        train, train_idx, valid, eval_idx = load_data(cfg, tokenizer)
    open_run_dir(out, cfg, overwrite, accelerator)
    stream = None
    if cfg.data.streaming:
        stream = PackedStream(cfg.data.datasets, tokenizer, cfg.data.block_size, seed=cfg.seed,
                              process_index=accelerator.process_index, num_processes=accelerator.num_processes,
                              shuffle_buffer=cfg.data.shuffle_buffer,
                              word_starts=cfg.objective != "clm" and cfg.masking.whole_word)
    data = dict(train_blocks=train.blocks if train else None, train_index=train_idx, eval_blocks=valid.blocks,
                eval_index=eval_idx, seed=cfg.seed, masking=cfg.masking, stream=stream,
                train_words=train.word_starts if train else None, eval_words=valid.word_starts)
    if cfg.objective == "rtd":
        generator = build_generator(cfg.model, cfg.rtd.generator_layers, model, tokenizer)
        task = ReplacedTokenDetectionTask(model, tokenizer, generator=generator, disc_weight=cfg.rtd.disc_weight, **data)
    else:
        task = PretrainTask(cfg.objective, model, tokenizer, **data)
    info = task.describe()
    logger.info(
        "%s pretraining: %.2fM parameters, %s train blocks x %d tokens (%s docs), %d eval blocks, %d processes",
        cfg.objective, info["parameters"] / 1e6, info["train_blocks"], info["block_size"],
        train.n_docs if train else "streamed",
        info["eval_blocks"], accelerator.num_processes,
    )
    try:
        summary = fit(task, tcfg, out, seed=cfg.seed, hparams=cfg, accelerator=accelerator,
                      on_checkpoint=checkpoint_pusher(cfg))

        if accelerator.is_main_process:
            save_model_folder(task, out / MODEL_DIR)
            bpt = valid.bytes_per_token
            # rtd: the generator's masked-LM loss is the one in nats per token
            lm_loss = summary.get("eval_generator_loss" if cfg.objective == "rtd" else "eval_loss")
            metrics = {
                "objective": cfg.objective,
                **info,
                **summary,
                "eval_bits_per_byte": round(lm_loss / math.log(2) / bpt, 4) if lm_loss is not None else None,
                "bytes_per_token": round(bpt, 4),
                "corpus_tokens": train.n_tokens if train else stream.tokens_in,
                "corpus_docs": train.n_docs if train else "streamed",
                "model_dir": str(out / MODEL_DIR),
            }
            write_run_files(out, stage="pretrain", config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
        accelerator.wait_for_everyone()
    finally:
        accelerator.end_training()
    return after_run(cfg, out, accelerator.is_main_process)
