"""Fine-tuning stage: ``nlp-ssl finetune RECIPE.yaml`` (alone, or under ``accelerate launch``).

The recipe's ``task`` picks its config class (``RECIPES``). Flow: model folder (ours or
anyone's) -> task data -> ``engine.fit`` (the same loop as pretraining; best model kept by
``train.metric_for_best``, optional early stopping) -> the best model scored on validation
and test -> ``<output_dir>/model/`` (loads with ``AutoModelFor...`` and ``pipeline``),
``predictions.jsonl`` and the run files (``metrics.json`` last).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nlp_ssl.data import DatasetSpec
from nlp_ssl.engine import BEST_DIR, TrainConfig, evaluate, fit, make_accelerator, save_model_folder
from nlp_ssl.errors import ConfigError
from nlp_ssl.publish import HubOptions, after_run, checkpoint_pusher, refuse_offline_push
from nlp_ssl.outputs import locks_output, now, open_run_dir, prepare_run_dir, write_jsonl, write_run_files

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
PREDICTIONS_FILE = "predictions.jsonl"


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
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")


@dataclass
class GenerationOptions:
    """How evaluation, ``evaluate`` and ``predict`` generate (saved as the model's
    ``generation_config.json``, so everyone uses the same settings)."""

    max_new_tokens: int = 64
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    early_stopping: bool = True

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError("'max_new_tokens' and 'num_beams' must be >= 1")


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
        if self.train_samples is not None and self.train_samples < 1:
            raise ConfigError(f"'train_samples' must be positive, got {self.train_samples}")
        if not 0 < self.validation_fraction < 0.5:
            raise ConfigError(f"'validation_fraction' must be in (0, 0.5), got {self.validation_fraction}")


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


@dataclass(kw_only=True)
class Seq2SeqConfig(HubOptions):
    """Recipe of ``finetune`` with ``task: translation`` or ``task: summarization``."""

    output_dir: str
    encoder: str
    """Encoder checkpoint: our masked-LM run (BERT), any encoder folder, ``pkg:``, a Hub id."""
    decoder: str | None = None
    """Decoder checkpoint (cross-attention is added): our next-token run (GPT-2), or a masked-LM
    run (BERT as decoder, its own copy of the weights: transformers 5 dropped shared
    encoder-decoder weights). Default: the encoder's checkpoint."""
    from_scratch: bool = False
    """The same shapes with fresh weights: the labels-only baseline."""
    tokenizer: str | None = None
    """Default: the encoder's tokenizer (the decoder's must be the same)."""
    dropout: float | None = 0.1
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    seed: int = 0

    def __post_init__(self):
        self.check_hub_options()
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True)
class TranslationConfig(Seq2SeqConfig):
    task: Literal["translation"]
    data: TranslationData


@dataclass(kw_only=True)
class SummarizationConfig(Seq2SeqConfig):
    task: Literal["summarization"]
    data: SummarizationData


RECIPES = {"sentiment": SentimentConfig, "translation": TranslationConfig, "summarization": SummarizationConfig}


def recipe_class(raw: dict, source: str) -> type:
    """The config class for a finetune recipe, chosen by its ``task`` key."""
    task = raw.get("task")
    if task is None:
        raise ConfigError(f"{source}: missing required key 'task' (one of: {', '.join(RECIPES)})")
    if task not in RECIPES:
        raise ConfigError(f"{source}: 'task' must be one of: {', '.join(RECIPES)}; got {task!r}")
    return RECIPES[task]


def load_sentiment_data(cfg: SentimentConfig, tokenizer):
    """Tokenized train / eval / test splits, the label set, and the training indices."""
    from nlp_ssl.tasks.classification import LabelSet, balanced_subsample, tokenize_labelled

    d = cfg.data
    labels = LabelSet(list(d.labels)) if d.labels is not None else None
    train, labels = tokenize_labelled(d.train, tokenizer, labels, d.label_column, d.max_length, d.num_proc)
    splits = {"train": train}
    if d.validation is not None:
        splits["eval"], _ = tokenize_labelled(d.validation, tokenizer, labels, d.label_column, d.max_length, d.num_proc)
        pool = np.arange(len(train))
    else:
        order = np.random.default_rng([cfg.seed, 0xE7A1]).permutation(len(train))
        held = max(1, int(round(len(train) * d.validation_fraction)))
        if len(train) - held < 1:
            raise ConfigError(f"data.train: {len(train)} examples are too few to hold out a validation set")
        splits["eval"] = train.select(np.sort(order[:held]))
        pool = np.sort(order[held:])
    if d.test is not None:
        splits["test"], _ = tokenize_labelled(d.test, tokenizer, labels, d.label_column, d.max_length, d.num_proc)
    for name, key in (("eval", "validation"), ("test", "test")):
        if name in splits and len(set(splits[name]["label_id"])) < 2 <= len(labels.names):
            logger.warning("data.%s holds examples of one label only: its accuracy says little (max_rows takes "
                           "the first rows, and some datasets are sorted by label)", key)
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
    from nlp_ssl.tasks.classification import ClassificationTask, build_classifier
    from nlp_ssl.tokenizer import load_tokenizer_for

    model_dir = resolve_model_dir(cfg.init)
    positions = max_positions(model_dir)
    if positions is not None and cfg.data.max_length > positions:
        raise ConfigError(f"'data.max_length' ({cfg.data.max_length}) exceeds the {positions} positions of the model "
                          f"in {model_dir}; set data.max_length={positions} or less")
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
    logger.info("sentiment fine-tuning from %s%s: %.2fM parameters, %d labels, %d train / %d validation examples",
                model_dir, " (fresh weights)" if cfg.from_scratch else "", task.describe()["parameters"] / 1e6,
                len(labels.names), task.n_train, len(task.index["eval"]))
    return task, origin


@locks_output()
def run(cfg, overwrite: bool = False) -> dict:
    """Fine-tune on any task in ``RECIPES``: the task's setup, then one shared flow."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = now()
    out = Path(cfg.output_dir).absolute()
    tcfg = cfg.train
    accelerator = make_accelerator(tcfg, out)
    prepare_run_dir(out, tcfg.resume, overwrite)
    refuse_offline_push(cfg)
    # everything that can reject the input runs before output_dir is touched
    task, origin = SETUPS[cfg.task](cfg, accelerator)
    info = task.describe()
    open_run_dir(out, cfg, overwrite, accelerator)
    try:
        summary = fit(task, tcfg, out, seed=cfg.seed, hparams=cfg, accelerator=accelerator,
                      on_checkpoint=checkpoint_pusher(cfg))
        best_dir = out / BEST_DIR
        accelerator.wait_for_everyone()
        if tcfg.metric_for_best is not None and best_dir.is_dir():
            _load_weights(task.model, best_dir)
        scores, predictions = {}, None
        for split, prefix in (("eval", "validation"), ("test", "test")):
            if split in task.splits:
                m, outputs = evaluate(task, task.module, accelerator, tcfg, split=split, outputs=True)
                scores.update({f"{prefix}_{k}": v for k, v in m.items()})
                predictions = (split, outputs)  # test when there is one, else validation
        if accelerator.is_main_process:
            save_model_folder(task, out / MODEL_DIR)
            split, outputs = predictions
            write_jsonl(out / PREDICTIONS_FILE, task.records(split, outputs))
            shutil.rmtree(best_dir, ignore_errors=True)  # model/ now holds it
            train_summary = {k: v for k, v in summary.items() if not k.startswith("eval_")}
            metrics = {
                "task": cfg.task,
                **origin,
                **info,
                **train_summary,
                **scores,
                "predictions_split": "test" if split == "test" else "validation",
                "model_dir": str(out / MODEL_DIR),
            }
            write_run_files(out, stage="finetune", config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
        accelerator.wait_for_everyone()
    finally:
        accelerator.end_training()
    return after_run(cfg, out, accelerator.is_main_process)


def setup_seq2seq(cfg: Seq2SeqConfig, accelerator):
    """Tokenizer, source/target splits and encoder-decoder for translation and summarization."""
    from accelerate.utils import set_seed

    from nlp_ssl.models import check_same_tokenizer, max_positions, resolve_model_dir
    from nlp_ssl.tokenizer import load_tokenizer_for
    from nlp_ssl.tasks.seq2seq import Seq2SeqTask, build_seq2seq, tokenize_pairs

    d = cfg.data
    encoder = resolve_model_dir(cfg.encoder, key="encoder")
    decoder = resolve_model_dir(cfg.decoder, key="decoder") if cfg.decoder else encoder
    for folder, length, key in ((encoder, d.max_source_length, "max_source_length"),
                                (decoder, d.max_target_length, "max_target_length")):
        positions = max_positions(folder)
        if positions is not None and length > positions:
            raise ConfigError(f"'data.{key}' ({length}) exceeds the {positions} positions of the model in {folder}")
    tokenizer = load_tokenizer_for(encoder, cfg.tokenizer)
    if decoder != encoder:
        check_same_tokenizer(tokenizer, decoder, cfg.tokenizer or encoder)
    tokenizer.model_max_length = d.max_source_length

    def pairs(spec):
        return tokenize_pairs(spec, tokenizer, d.source_column, d.target_column, d.max_source_length,
                              d.max_target_length, d.num_proc)

    with accelerator.main_process_first():
        train = pairs(d.train)
        splits = {"train": train}
        pool = np.arange(len(train))
        if d.validation is not None:
            splits["eval"] = pairs(d.validation)
        else:
            order = np.random.default_rng([cfg.seed, 0xE7A1]).permutation(len(train))
            held = max(1, int(round(len(train) * d.validation_fraction)))
            splits["eval"], pool = train.select(np.sort(order[:held])), np.sort(order[held:])
        if d.test is not None:
            splits["test"] = pairs(d.test)
    if d.train_samples is not None and d.train_samples < len(pool):
        pool = np.sort(np.random.default_rng([cfg.seed, 0x5A3]).permutation(pool)[: d.train_samples])
    set_seed(cfg.seed)
    model = build_seq2seq(encoder, decoder, tokenizer, from_scratch=cfg.from_scratch, dropout=cfg.dropout,
                          generation=cfg.generation)
    # what evaluate/predict need to know about this model, saved in its config.json
    model.config.nlp_ssl = {"task": cfg.task, "source_column": d.source_column, "target_column": d.target_column}
    metric = "sacrebleu_chrf" if cfg.task == "translation" else "rouge"
    task = Seq2SeqTask(model, tokenizer, splits, source_column=d.source_column, target_column=d.target_column,
                       metric=metric, train_index=pool)
    origin = {"encoder": cfg.encoder, "decoder": cfg.decoder or cfg.encoder, "from_scratch": cfg.from_scratch}
    logger.info("%s fine-tuning, encoder %s, decoder %s%s: %.2fM parameters, %d train / %d validation pairs",
                cfg.task, encoder, decoder, " (fresh weights)" if cfg.from_scratch else "",
                task.describe()["parameters"] / 1e6, task.n_train, len(task.index["eval"]))
    return task, origin


SETUPS = {"sentiment": setup_sentiment, "translation": setup_seq2seq, "summarization": setup_seq2seq}


def _load_weights(model, folder: Path) -> None:
    """Put the weights saved in ``folder`` into ``model`` (same architecture), in place, so
    that the engine's wrapped copy sees them too."""
    best = type(model).from_pretrained(str(folder))
    missing, unexpected = model.load_state_dict(best.state_dict(), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{folder}: weights do not match the model (missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]})")
