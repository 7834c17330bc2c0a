"""The stage of every objective that trains a transformer on packed blocks (mlm, clm, rtd):
tokenizer and model (fresh, or a checkpoint to continue), packed data, ``training.fit``, the
model folder and the corpus figures. What differs between the objectives comes from their
``Objective`` (``build``, ``load``, ``make_task``...)."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

from nlp_ssl.models import (
    check_length_fits,
    check_same_tokenizer,
    check_vocab,
    config_positions,
    copy_init_embeddings,
    resolve_model_dir,
)
from nlp_ssl.objectives import get_objective
from nlp_ssl.objectives.blocks import LengthSchedule
from nlp_ssl.outputs import MODEL_DIR
from nlp_ssl.packing import PackedStream
from nlp_ssl.stage import FitStage
from nlp_ssl.tokenizer import load_tokenizer
from nlp_ssl.training import evaluate, save_model_folder

logger = logging.getLogger(__name__)


def load_tokenizer_and_model(cfg):
    """A fresh model sized by ``cfg.model``, or the ``init`` checkpoint to continue; the
    tokenizer checked against it."""
    from accelerate.utils import set_seed

    objective = get_objective(cfg.objective)
    if cfg.init is None:
        tokenizer = load_tokenizer(cfg.tokenizer)
        set_seed(cfg.seed)  # the initial weights are part of what a seed reproduces
        model = objective.build(cfg, tokenizer)
        check_vocab(model, tokenizer, cfg.tokenizer)
        copy_init_embeddings(model, cfg.init_embeddings, tokenizer, cfg.tokenizer, log=logger)
        # positions past the blocks it trains on stay untrained: that is the model's real limit
        set_input_limit(tokenizer, model, cfg.data.longest_block)
        return tokenizer, model
    model_dir = resolve_model_dir(cfg.init, key="init")
    key = "data.long_blocks.block_size" if cfg.data.long_blocks is not None else "data.block_size"
    check_length_fits(model_dir, key, cfg.data.longest_block, key="init")
    tokenizer_dir = cfg.tokenizer or model_dir
    tokenizer = load_tokenizer(tokenizer_dir)
    if objective.check_tokenizer is not None:
        objective.check_tokenizer(tokenizer, tokenizer_dir)
    check_same_tokenizer(tokenizer, model_dir, tokenizer_dir)
    set_seed(cfg.seed)  # a head the checkpoint lacks is initialised fresh
    model = objective.load(model_dir, cfg)
    check_vocab(model, tokenizer, tokenizer_dir)
    set_input_limit(tokenizer, model, max(tokenizer.model_max_length, cfg.data.longest_block))
    logger.info("continuing %s pretraining from %s", cfg.objective, model_dir)
    return tokenizer, model


def _block_shape(cfg, info: dict) -> str:
    long = cfg.data.long_blocks
    if long is None:
        return f"{info['block_size']} tokens"
    rows, first = cfg.data.rows_per_block, 1 - long.fraction
    return f"{long.block_size} tokens (read as {rows} x {info['block_size']} for the first {first:.0%} of the steps)"


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


class TransformerPretraining(FitStage):
    """``pretrain`` for a ``PretrainConfig`` (an objective's subclass of it)."""

    kind = "pretrain"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.objective = get_objective(cfg.objective)

    def make_task(self, accelerator):
        from nlp_ssl.objectives.blocks import load_data

        cfg, objective = self.cfg, self.objective
        word_starts = objective.word_starts(cfg)
        tokenizer, model = load_tokenizer_and_model(cfg)
        with accelerator.main_process_first():  # tokenize and pack once; the others read the cache
            self.train_data, train_idx, self.valid_data, eval_idx = load_data(cfg, tokenizer, word_starts)
        self.stream = None
        if cfg.data.streaming:
            self.stream = PackedStream(
                cfg.data.datasets,
                tokenizer,
                cfg.data.block_size,
                seed=cfg.seed,
                process_index=accelerator.process_index,
                num_processes=accelerator.num_processes,
                shuffle_buffer=cfg.data.shuffle_buffer,
                word_starts=word_starts,
            )
        train, valid = self.train_data, self.valid_data
        task = objective.make_task(
            model,
            tokenizer,
            cfg,
            train_blocks=train.blocks if train else None,
            train_index=train_idx,
            eval_blocks=valid.blocks,
            eval_index=eval_idx,
            seed=cfg.seed,
            stream=self.stream,
            train_words=train.word_starts if train else None,
            eval_words=valid.word_starts,
            schedule=LengthSchedule.of(cfg),
        )
        info = task.describe()
        logger.info(
            "%s pretraining: %.2fM parameters, %s train blocks x %s (%s docs), %d eval blocks, %d processes",
            cfg.objective,
            info["parameters"] / 1e6,
            info["train_blocks"],
            _block_shape(cfg, info),
            train.n_docs if train else "streamed",
            info["eval_blocks"],
            accelerator.num_processes,
        )
        return task

    def engine_config(self):
        # the engine's examples are packed blocks; under a length schedule each is several of
        # the recipe's (short) rows, so its batch sizes count blocks
        rows = self.cfg.data.rows_per_block
        train = self.cfg.train
        if rows == 1:
            return train
        return replace(
            train,
            micro_batch_size=train.micro_batch_size // rows,
            eval_batch_size=None if train.eval_batch_size is None else train.eval_batch_size // rows,
        )

    def train(self, work: Path, accelerator, on_checkpoint) -> dict:
        summary = super().train(work, accelerator, on_checkpoint)
        schedule = self.task.schedule
        if schedule is not None:  # the final weights' loss at each length they were trained at
            # the engine counted blocks; the recipe's batch is rows of block_size
            summary["long_global_batch"] = summary["global_batch"]
            summary["global_batch"] *= schedule.rows
            cfg = self.engine_config()
            for rows in (schedule.rows, 1):
                self.task.read_as(rows)
                loss = evaluate(self.task, self.task.module, accelerator, cfg)["loss"]
                summary[f"eval_loss_at_{self.task.block_size}"] = round(loss, 4)
        return summary

    def finish(self, summary: dict, accelerator, folder: Path) -> dict:
        if not accelerator.is_main_process:
            return {}
        task, train = self.task, self.train_data
        save_model_folder(task, folder / MODEL_DIR)
        bpt = self.valid_data.bytes_per_token
        lm_loss = summary.get(self.objective.lm_loss_key)
        return {
            "objective": self.cfg.objective,
            **task.describe(),
            **summary,
            "eval_bits_per_byte": round(lm_loss / math.log(2) / bpt, 4) if lm_loss is not None else None,
            "bytes_per_token": round(bpt, 4),
            "corpus_tokens": train.n_tokens if train else self.stream.tokens_in,
            "corpus_docs": train.n_docs if train else "streamed",
        }
