"""Pretraining stage: ``nlp-ssl pretrain RECIPE.yaml`` (alone, or under ``accelerate launch``).

setup (tokenizer, model, packed data) -> ``training.fit`` -> final model folder + run files.
One flow for every transformer objective: what differs between them (recipe schema, model,
loss, batches) comes from the objective's module, found by ``nlp_ssl.objectives.get_objective``.
Output: ``<output_dir>/model/`` (``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``, or for
``rtd`` the encoder body for ``AutoModel`` / ``AutoModelForSequenceClassification``; +
tokenizer), ``checkpoints/``, ``logs/`` (TensorBoard), ``train_log.jsonl`` and the
run files of every stage (``metrics.json`` last).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from nlp_ssl.errors import ConfigError
from nlp_ssl.models import (
    check_same_tokenizer,
    check_vocab,
    config_positions,
    copy_token_embeddings,
    max_positions,
    resolve_model_dir,
)
from nlp_ssl.objectives import OBJECTIVES, get_objective
from nlp_ssl.objectives.base import PretrainConfig, PretrainDataConfig  # noqa: F401  (the stage's recipe)
from nlp_ssl.outputs import MODEL_DIR, locks_output
from nlp_ssl.packing import PackedStream
from nlp_ssl.stage import run_training_stage
from nlp_ssl.tokenizer import load_tokenizer
from nlp_ssl.training import save_model_folder

logger = logging.getLogger(__name__)


def recipe_class(raw: dict, source: str) -> type:
    """The config class for a pretrain recipe: its ``objective``'s (``nlp_ssl.objectives``).
    The shallow embedding objectives (``skipgram``, ``cbow``) have a recipe of their own that
    shares nothing with ``PretrainConfig``."""
    objective = raw.get("objective")
    if objective is None:
        raise ConfigError(f"{source}: missing required key 'objective' (one of: {', '.join(OBJECTIVES)})")
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ConfigError(f"{source}: 'objective' must be one of: {', '.join(OBJECTIVES)}; got {objective!r}")
    return get_objective(objective).config


def load_tokenizer_and_model(cfg: PretrainConfig):
    """A fresh model sized by ``cfg.model``, or the ``init`` checkpoint to continue; the
    tokenizer checked against it."""
    from accelerate.utils import set_seed

    objective = get_objective(cfg.objective)
    if cfg.init is None:
        tokenizer = load_tokenizer(cfg.tokenizer)
        set_seed(cfg.seed)  # the initial weights are part of what a seed reproduces
        model = objective.build(cfg, tokenizer)
        check_vocab(model, tokenizer, cfg.tokenizer)
        if cfg.init_embeddings is not None:
            rows = copy_token_embeddings(model, cfg.init_embeddings, tokenizer, cfg.tokenizer)
            logger.info("token embeddings of %d ids from %s", rows, cfg.init_embeddings)
        # positions past the blocks it trains on stay untrained: that is the model's real limit
        set_input_limit(tokenizer, model, cfg.data.block_size)
        return tokenizer, model
    model_dir = resolve_model_dir(cfg.init, key="init")
    positions = max_positions(model_dir, "init")
    if positions is not None and cfg.data.block_size > positions:
        raise ConfigError(
            f"'data.block_size' ({cfg.data.block_size}) exceeds the {positions} positions of the model in {model_dir}"
        )
    tokenizer_dir = cfg.tokenizer or model_dir
    tokenizer = load_tokenizer(tokenizer_dir)
    if objective.check_tokenizer is not None:
        objective.check_tokenizer(tokenizer, tokenizer_dir)
    check_same_tokenizer(tokenizer, model_dir, tokenizer_dir)
    set_seed(cfg.seed)  # a head the checkpoint lacks is initialised fresh
    model = objective.load(model_dir, cfg)
    check_vocab(model, tokenizer, tokenizer_dir)
    set_input_limit(tokenizer, model, tokenizer.model_max_length)
    logger.info("continuing %s pretraining from %s", cfg.objective, model_dir)
    return tokenizer, model


def set_input_limit(tokenizer, model, trained: int | None) -> None:
    """Save the model with the longest input it can take: the tokenizer's ``model_max_length``
    (what ``truncation=True`` cuts to in ``pipeline()`` and ``AutoTokenizer`` calls) and, for a
    model that generates, ``generation_config.max_length``, both within its positions."""
    positions = config_positions(model.config)
    limit = min(x for x in (positions, trained) if x) if (positions or trained) else None
    if limit is None:
        return
    tokenizer.model_max_length = limit
    if model.can_generate():
        model.generation_config.max_length = limit


def run(cfg, overwrite: bool = False, publisher=None) -> dict:
    """Pretrain with ``cfg``'s objective (``cfg`` is the class ``recipe_class`` picked: for
    skipgram / cbow an ``EmbeddingPretrainConfig``, run by its objective's own stage, which
    publishes nothing); ``publisher`` as in ``run_training_stage``."""
    objective = get_objective(cfg.objective)
    if objective.run is not None:
        return objective.run(cfg, overwrite=overwrite)
    return _run_transformer(cfg, overwrite=overwrite, publisher=publisher)


@locks_output()
def _run_transformer(cfg: PretrainConfig, overwrite: bool = False, publisher=None) -> dict:
    from nlp_ssl.objectives.blocks import load_data

    objective = get_objective(cfg.objective)
    word_starts = objective.word_starts(cfg)
    data: dict = {}

    def setup(accelerator):
        tokenizer, model = load_tokenizer_and_model(cfg)
        with accelerator.main_process_first():  # tokenize and pack once; the others read the cache
            train, train_idx, valid, eval_idx = load_data(cfg, tokenizer, word_starts)
        stream = None
        if cfg.data.streaming:
            stream = PackedStream(
                cfg.data.datasets,
                tokenizer,
                cfg.data.block_size,
                seed=cfg.seed,
                process_index=accelerator.process_index,
                num_processes=accelerator.num_processes,
                shuffle_buffer=cfg.data.shuffle_buffer,
                word_starts=word_starts,
            )
        data.update(train=train, valid=valid, stream=stream)
        task = objective.make_task(
            model,
            tokenizer,
            cfg,
            train_blocks=train.blocks if train else None,
            train_index=train_idx,
            eval_blocks=valid.blocks,
            eval_index=eval_idx,
            seed=cfg.seed,
            stream=stream,
            train_words=train.word_starts if train else None,
            eval_words=valid.word_starts,
        )
        info = task.describe()
        logger.info(
            "%s pretraining: %.2fM parameters, %s train blocks x %d tokens (%s docs), %d eval blocks, %d processes",
            cfg.objective,
            info["parameters"] / 1e6,
            info["train_blocks"],
            info["block_size"],
            train.n_docs if train else "streamed",
            info["eval_blocks"],
            accelerator.num_processes,
        )
        return task

    def finish(task, summary: dict, accelerator, folder: Path, final_eval: dict) -> dict:
        if not accelerator.is_main_process:
            return {}
        save_model_folder(task, folder / MODEL_DIR)
        train, valid, stream = data["train"], data["valid"], data["stream"]
        bpt = valid.bytes_per_token
        lm_loss = summary.get(objective.lm_loss_key)
        return {
            "objective": cfg.objective,
            **task.describe(),
            **summary,
            "eval_bits_per_byte": round(lm_loss / math.log(2) / bpt, 4) if lm_loss is not None else None,
            "bytes_per_token": round(bpt, 4),
            "corpus_tokens": train.n_tokens if train else stream.tokens_in,
            "corpus_docs": train.n_docs if train else "streamed",
        }

    return run_training_stage(cfg, overwrite, "pretrain", setup, finish, publisher)
