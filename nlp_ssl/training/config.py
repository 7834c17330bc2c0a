"""The ``train:`` section every training stage shares, and how a run is sized from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from nlp_ssl.errors import ConfigError

Tracker = Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "none"]
"""Where a stage sends its curves besides ``train_log.jsonl`` (Accelerate's trackers)."""


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation, logging and checkpointing; shared by all stages."""

    max_steps: int = 1000
    """Optimizer steps. Pretraining is sized in steps (streams have no length)."""
    epochs: float | None = None
    """When set, replaces ``max_steps`` by ``ceil(epochs x steps per epoch)`` (not for streams).
    An epoch is ``n_train // global batch`` steps; each epoch draws a fresh permutation."""
    micro_batch_size: int = 16
    """Examples per process per forward pass."""
    grad_accum_steps: int = 1
    """Global batch = micro_batch_size x grad_accum_steps x processes."""
    lr: float = 5e-4
    scheduler: Literal["linear", "cosine", "constant_with_warmup", "constant"] = "cosine"
    warmup_steps: int | None = None
    warmup_ratio: float = 0.05
    """Used when warmup_steps is not set."""
    weight_decay: float = 0.01
    """Decoupled (AdamW) decay; never applied to biases, norms or embeddings' LayerNorm."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables clipping)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """bf16 on GPUs that support it. On CPU only where it has AVX512-BF16 or AMX, which run
    bf16 matmuls natively; other CPUs gain nothing (figures: docs/benchmarks.md)."""
    gradient_checkpointing: bool = False
    compile: bool = False
    """torch.compile the model; the first step pays for the compilation."""
    group_by_length: bool = False
    """Batch training examples of similar length together (tasks that pad, not pack): each
    epoch's shuffled examples are cut into groups of ``length_group_batches`` global batches,
    each group sorted by length and cut into batches, and the batches shuffled; less padding,
    the same examples."""
    length_group_batches: int = 50
    """Global batches per length-sorted group (``group_by_length``). Fewer batches per group mix
    lengths more within each batch: more padding (slower), and on translation a better model
    (docs/benchmarks.md, "what length grouping costs in quality")."""
    eval_every: int | Literal["epoch"] = 200
    """Evaluate every this many steps, or at the end of every epoch; and always at the end."""
    eval_batch_size: int | None = None
    """Examples per process per evaluation batch (default: ``micro_batch_size``); evaluation
    keeps no activations for a backward pass, so it fits more."""
    eval_max_batches: int | None = None
    """Score only the first ``eval_max_batches x micro_batch_size`` examples (per process) of
    the validation split; counted in training batches, so ``eval_batch_size`` does not change
    which examples a run is compared on."""
    log_every: int = 10
    save_every: int | Literal["epoch"] = 500
    metric_for_best: str | None = None
    """An evaluation metric (``loss``, ``accuracy``, ``f1_macro``, ...): the model with the best
    value is kept in ``best_model/`` and becomes the run's final model."""
    greater_is_better: bool | None = None
    """Default: False for ``loss``/``perplexity``, True for anything else."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of ``metric_for_best``."""
    early_stopping_threshold: float = 0.0
    """An improvement must exceed this to count."""
    keep_last: int = 2
    """Checkpoints to keep (older ones are deleted after a newer one is complete)."""
    resume: str | None = None
    """``latest`` (newest complete checkpoint in output_dir, or a fresh start) or a checkpoint path."""
    tracker: Tracker = "tensorboard"
    peak_flops: float | None = None
    """Device peak FLOP/s for MFU; default: ``hardware.default_peak_flops`` (a table for GPUs, a
    measured fp32 matmul peak on CPU)."""

    def __post_init__(self):
        positive = (
            "max_steps",
            "micro_batch_size",
            "grad_accum_steps",
            "eval_every",
            "log_every",
            "save_every",
            "length_group_batches",
        )
        for name in positive:
            value = getattr(self, name)
            if value == "epoch" and name in ("eval_every", "save_every"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name!r} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"'lr' must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("'weight_decay' and 'max_grad_norm' must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"'warmup_ratio' must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps is not None and (
            self.warmup_steps < 0 or (self.epochs is None and self.warmup_steps > self.max_steps)
        ):
            raise ConfigError(f"'warmup_steps' must be in [0, max_steps], got {self.warmup_steps}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name!r} must be in [0, 1), got {getattr(self, name)}")
        if not self.adam_eps > 0:
            raise ConfigError(f"'adam_eps' must be positive, got {self.adam_eps}")
        if self.early_stopping_threshold < 0:
            raise ConfigError(f"'early_stopping_threshold' must be >= 0, got {self.early_stopping_threshold}")
        if self.peak_flops is not None and not self.peak_flops > 0:
            raise ConfigError(f"'peak_flops' must be positive, got {self.peak_flops}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ConfigError(f"'eval_batch_size' must be >= 1, got {self.eval_batch_size}")
        if self.eval_max_batches is not None and self.eval_max_batches < 1:
            raise ConfigError(f"'eval_max_batches' must be >= 1, got {self.eval_max_batches}")
        if self.keep_last < 1:
            raise ConfigError(f"'keep_last' must be >= 1, got {self.keep_last}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"'epochs' must be positive, got {self.epochs}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ConfigError(f"'early_stopping_patience' must be >= 1, got {self.early_stopping_patience}")
            if self.metric_for_best is None:
                raise ConfigError("'early_stopping_patience' needs 'metric_for_best' (the metric to watch)")

    @classmethod
    def check_given(cls, data: dict) -> None:
        """``max_steps`` given while ``epochs`` (set, or this section's default) sizes the run
        would be ignored. A saved recipe writes both, with ``max_steps`` at its default."""
        fields = cls.__dataclass_fields__
        default = fields["max_steps"].default
        steps = data.get("max_steps", default)
        epochs = data.get("epochs", fields["epochs"].default)
        if epochs is not None and steps != default:
            raise ConfigError(
                f"'max_steps' ({steps}) would be ignored: 'epochs' ({epochs}) sizes the run; set "
                f"epochs: null (train.epochs=null) to train {steps} steps, or leave max_steps out"
            )

    @property
    def higher_is_better(self) -> bool:
        if self.greater_is_better is not None:
            return self.greater_is_better
        return self.metric_for_best not in ("loss", "perplexity")

    def total_steps(self, steps_per_epoch: int | None) -> int:
        if self.epochs is None:
            return self.max_steps
        if steps_per_epoch is None:
            raise ConfigError("'epochs' cannot size a run over streaming data (no length); set 'max_steps'")
        return max(1, math.ceil(self.epochs * steps_per_epoch))

    def warmup_for(self, total: int) -> int:
        if self.warmup_steps is not None:
            if self.warmup_steps > total:
                raise ConfigError(f"'warmup_steps' ({self.warmup_steps}) exceeds the run's {total} steps")
            return self.warmup_steps
        return int(self.warmup_ratio * total)


@dataclass(frozen=True)
class StepPlan:
    global_batch: int
    steps_per_epoch: int | None
    """None when the training data streams."""
    total: int
    warmup: int
    eval_every: int
    save_every: int


def plan_steps(n_train: int | None, cfg: TrainConfig, world: int) -> StepPlan:
    """How a run of ``n_train`` examples (None: a stream) is sized; every setting that does
    not fit the data is a ``ConfigError`` here, which a stage calls before it creates its
    output folder."""
    global_batch = cfg.micro_batch_size * cfg.grad_accum_steps * world
    steps_per_epoch = None if n_train is None else n_train // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"global batch {global_batch} (micro_batch_size x grad_accum_steps x {world} processes) "
            f"exceeds the {n_train} training examples"
        )
    total = cfg.total_steps(steps_per_epoch)
    return StepPlan(
        global_batch,
        steps_per_epoch,
        total,
        cfg.warmup_for(total),
        _every(cfg.eval_every, steps_per_epoch, "eval_every"),
        _every(cfg.save_every, steps_per_epoch, "save_every"),
    )


def _every(value, steps_per_epoch: int | None, name: str) -> int:
    if value != "epoch":
        return value
    if steps_per_epoch is None:
        raise ConfigError(f"'{name}: epoch' needs data with a length; streaming data has no epochs")
    return steps_per_epoch
