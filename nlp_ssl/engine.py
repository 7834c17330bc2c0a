"""THE training loop, shared by every stage.

A task hands the engine three things (the ``Task`` protocol below spells out every member):
a training module whose forward returns the *sum* of per-target losses, the number of training
examples, and a function that builds a ``Batch`` from example indices. A task whose training
data streams is also a ``StreamingTask``; one with metrics beyond the loss is also a
``ScoredTask``. The engine owns everything else: Accelerate, AdamW, the schedule, gradient
accumulation, clipping, evaluation, logging, checkpoints.

Following a batch: ``step_indices`` (inside ``fit``) picks the example indices of optimizer
step ``s`` from a per-epoch permutation seeded by ``(seed, epoch)`` and splits them over
processes and micro-steps; ``task.make_batch`` reads and collates them; the loop normalises each
micro-batch's loss sum by the number of targets in the *whole* accumulated global batch, so
accumulation and multi-process training give the gradient of one big batch. Because the
data position is a pure function of the step count (and any randomness in a batch is seeded
by example), resuming needs nothing but the step: no batches are replayed or skipped.

The LR scheduler is stepped exactly once per optimizer step, on every process; it is not
passed to ``accelerator.prepare`` (whose wrapper would step it once per process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from nlp_ssl import checkpoint as ckpt
from nlp_ssl import train_log
from nlp_ssl.errors import ConfigError, Interrupted, NlpSslError, OutputError
from nlp_ssl.hardware import default_peak_flops, fast_adamw_kwargs
from nlp_ssl.memory import RELEASE_MEMORY_EVERY, release_free_memory
from nlp_ssl.outputs import replace_dir
from nlp_ssl.progress import launched, progress_bar

logger = logging.getLogger(__name__)


# Tied weights (GPT-2's output layer is its token embedding) are stored once in a checkpoint by
# design and tied again on load, which the resume tests check: accelerate's warning about it
# on every save reads like a fault.
logging.getLogger("accelerate.utils.other").addFilter(lambda record: "Removed shared tensor" not in record.getMessage())


class TrainingError(NlpSslError):
    """Training cannot go on (non-finite loss, ...); the last good checkpoint is kept."""


class TrainingInterrupted(Interrupted):
    """SIGINT/SIGTERM: a checkpoint was saved; ``resume: latest`` continues."""


Tracker = Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "none"]
"""Where a stage sends its curves besides ``train_log.jsonl`` (Accelerate's trackers)."""


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation, logging and checkpointing; shared by all stages."""

    ADDED: ClassVar[dict[str, Any]] = {"group_by_length": False, "eval_batch_size": None, "length_group_batches": 50}
    """Keys added since runs were first saved, with the value those runs had: a saved recipe
    without one is the same recipe as one that sets it to that value."""

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
        steps = getattr(data.get("max_steps"), "parsed", data.get("max_steps", default))
        epochs = getattr(data.get("epochs"), "parsed", data.get("epochs", fields["epochs"].default))
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


@dataclass
class Batch:
    """One micro-batch, built by ``Task.make_batch`` or ``StreamingTask.next_batch``."""

    inputs: dict[str, torch.Tensor]
    """Keyword arguments of ``Task.module``'s forward (and of ``ScoredTask.eval_step``); the
    engine moves tensors to the device and passes anything else as it is."""
    n_targets: int
    """Positions (or examples) that carry a loss: the normaliser. The engine divides the summed
    loss of a whole accumulated, all-process batch by the sum of its ``n_targets``."""
    n_tokens: int
    """Input tokens processed, for throughput and MFU."""


@runtime_checkable
class Task(Protocol):
    """What ``fit`` and ``evaluate`` need of every task.

    Stages may ask more of their tasks (fine-tuning writes ``records`` of predictions per
    split); the engine asks nothing beyond this protocol, ``StreamingTask`` and ``ScoredTask``.
    """

    module: torch.nn.Module
    """What the engine trains: ``module(**batch.inputs)`` returns a scalar fp32 tensor, the
    *sum* (not the mean) of the per-target losses of the batch, so that micro-batches and
    processes add up to the global batch's loss before the engine divides by its
    ``n_targets``. Its parameters are the ones optimised: ``model``'s, plus any the loss
    trains beside it (ELECTRA's generator and head)."""
    model: torch.nn.Module
    """The ``transformers`` model inside ``module``, what every checkpoint's ``model/`` folder
    and ``best_model/`` hold: ``model.save_pretrained(directory, safe_serialization=True)``.
    With ``gradient_checkpointing`` the engine also enables it here."""
    tokenizer: object
    """Saved beside the model in every model folder (``nlp_ssl.tokenizer.save_tokenizer``:
    ``save_pretrained(directory)``, which must write ``tokenizer_config.json``)."""
    n_train: int | None
    """Training examples: ``make_batch`` takes positions ``0 .. n_train - 1``. None when the
    training data streams; the task is then a ``StreamingTask``."""

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        """The ``Batch`` of examples at positions ``indices`` of ``split``.

        ``fit`` calls it with ``split="train"``, this process's share of one micro-batch (drawn
        from a permutation seeded per epoch) and the epoch number; ``evaluate`` with
        ``split="eval"`` (or ``"test"``), ``epoch=0`` and a slice of ``eval_indices(split)``.
        The result must depend on its arguments only (any randomness seeded by example and
        epoch): resuming rebuilds batches from the step count, without replaying them.
        """
        ...

    def eval_indices(self, split: str = "eval") -> np.ndarray:
        """The positions of ``split`` that ``evaluate`` scores (``make_batch`` reads them);
        ``train.eval_max_batches`` keeps only the first ones of ``eval``."""
        ...

    def flops_per_token(self) -> float:
        """Training FLOPs (forward and backward) per input token, for MFU; called once per run."""
        ...

    def describe(self) -> dict:
        """JSON-ready facts about the task (parameters, example counts); the stages put them in
        the run's metrics. Not called by the engine."""
        ...


@runtime_checkable
class Stream(Protocol):
    """A streaming task's data position, saved in every checkpoint and restored on resume."""

    epoch: int
    """Passes over the training data so far (the ``train/epoch`` logged)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class StreamingTask(Task, Protocol):
    """A task whose training data has no length (``n_train`` is None): ``fit`` asks it for
    batches in order instead of drawing example positions. Runs are sized in steps, not epochs.

    ``fit`` tells a streaming task by ``n_train is None``, not by this protocol: a task class
    may support both and stream only when its data does.
    """

    stream: Stream
    """Registered with Accelerate's checkpointing, so a resumed run continues the stream where
    the checkpoint left it."""

    def next_batch(self, size: int) -> Batch:
        """The next ``size`` training examples of this process's share of the stream (each
        process reads its own); called ``grad_accum_steps`` times per optimizer step."""
        ...


@runtime_checkable
class ScoredTask(Protocol):
    """A task with metrics beyond the loss; ``evaluate`` checks for it with ``isinstance``.

    Evaluating one calls ``eval_step`` instead of ``module`` on every batch, gathers the
    per-example arrays from every process, puts them back in example order and hands them to
    ``compute_metrics``.
    """

    def eval_step(self, module: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, dict]:
        """Score one evaluation batch with ``module`` (the engine's prepared copy of
        ``Task.module``, in eval mode under ``torch.no_grad``): return the loss *sum* (as
        ``module(**inputs)`` would) and a dict of per-example arrays or tensors (predictions,
        probabilities, ...), each with the batch's examples along its first axis and the same
        shape from batch to batch past it, so that batches concatenate."""
        ...

    def compute_metrics(self, outputs: dict, split: str) -> dict:
        """Metrics of ``split`` from ``eval_step``'s arrays of all its examples, concatenated
        and sorted by example, plus ``outputs["index"]``, each example's position; ``outputs``
        is empty when the split had none. The result is merged into the evaluation's metrics
        (``loss``, ``targets``), which ``metric_for_best`` may name."""
        ...


@runtime_checkable
class LengthAware(Protocol):
    """A task whose examples differ in length (not cut into equal blocks); the engine checks
    for it with ``isinstance``. Training with ``group_by_length`` batches examples of similar length
    together; evaluation always reads them longest first. Either way less of each batch is
    padding."""

    def lengths(self, split: str) -> np.ndarray:
        """Tokens per example of ``split``, one entry per position ``make_batch`` takes."""
        ...


@dataclass
class TrainState:
    """Counters saved with every checkpoint (through Accelerate's custom-state hook)."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    """In training steps; evaluations and checkpoints are counted apart."""
    evaluation_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    best: dict = field(default_factory=dict)
    group_by_length: bool | None = None
    """The batch order the run was started with, so a resume continues it whatever the
    recipe (or its default) now says; None until a run sets it (and from checkpoints
    written before it was saved)."""
    length_group_batches: int | None = None
    """The same, for the size of its length groups."""

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "evaluation_seconds": self.evaluation_seconds,
            "checkpoint_seconds": self.checkpoint_seconds,
            "best": self.best,
            "group_by_length": self.group_by_length,
            "length_group_batches": self.length_group_batches,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.tokens, self.seconds = int(state["step"]), int(state["tokens"]), float(state["seconds"])
        # checkpoints written before these were counted have neither
        self.evaluation_seconds = float(state.get("evaluation_seconds", 0.0))
        self.checkpoint_seconds = float(state.get("checkpoint_seconds", 0.0))
        self.best = dict(state.get("best", {}))
        self.group_by_length = state.get("group_by_length")
        self.length_group_batches = state.get("length_group_batches")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and normalisation weights are 1-D and stay undecayed."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signal = signum
        logger.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def make_accelerator(cfg: TrainConfig, run_dir: Path):
    """The run's ``Accelerator``: trackers write under ``run_dir/logs``. ``cfg`` needs only
    ``tracker`` and ``mixed_precision`` (the skip-gram stage's config has them too).

    Several processes on a machine without an accelerator device get ``cpu=True``, which
    makes Accelerate set up gloo DDP (MULTI_CPU) however they were launched (torchrun, or a
    GPU config on a CPU machine); without it each process would train alone.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    # Accelerate keeps one global state per process; a stage run after another in the same
    # process (pipeline, tests) may want other settings (mixed precision). The distributed
    # set-up (PartialState) is kept.
    AcceleratorState._reset_state()
    multi_process = launched().world_size > 1
    no_device = not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available())
    return Accelerator(
        cpu=multi_process and no_device,
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )


def fit(
    task: Task,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    seed: int,
    hparams: dict | None = None,
    accelerator=None,
    on_checkpoint=None,
) -> dict:
    """Train ``task`` for ``cfg.max_steps`` (or ``cfg.epochs``) optimizer steps; return the
    final metrics.

    ``run_dir`` must exist (the stage creates it): checkpoints and ``train_log.jsonl`` go
    there. A task whose ``n_train`` is None is trained as a ``StreamingTask``.
    With ``cfg.metric_for_best`` the best model so far is kept in ``run_dir/best_model``
    (see ``BEST_DIR``) and ``early_stopping_patience`` may end the run early; the summary says
    which step was best, and its ``final_eval`` holds the metrics of the weights the run ends
    with (the best model's, else the last evaluation's). The caller ends the run with
    ``accelerator.end_training()`` (which also tears down the process group) once it has
    saved what it needs. ``on_checkpoint(path, step)`` runs on the main process after each
    checkpoint is complete (pushing it, say).
    """
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    run_dir = Path(run_dir)
    accelerator = accelerator or make_accelerator(cfg, run_dir)
    set_seed(seed)
    streaming = task.n_train is None
    world = accelerator.num_processes
    plan = plan_steps(task.n_train, cfg, world)
    global_batch, steps_per_epoch, total = plan.global_batch, plan.steps_per_epoch, plan.total
    eval_every, save_every = plan.eval_every, plan.save_every

    model = task.model
    if cfg.gradient_checkpointing:  # renamed in transformers 5; the old name goes in v6
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    module = torch.compile(task.module) if cfg.compile else task.module
    optimizer = torch.optim.AdamW(
        # the loss module's parameters: the model's, plus any a task trains beside it (ELECTRA's generator)
        param_groups(task.module, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        **fast_adamw_kwargs(accelerator.device),
    )
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=plan.warmup, num_training_steps=total)
    module, optimizer = accelerator.prepare(module, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(state)
    if streaming:  # the stream's position (reader state + leftover tokens) rides in the checkpoint
        accelerator.register_for_checkpointing(task.stream)

    if accelerator.is_main_process:
        ckpt.clean_partials(run_dir)
    accelerator.wait_for_everyone()
    start_from, failures = None, []
    for candidate in ckpt.resume_candidates(cfg.resume, run_dir):
        try:
            accelerator.load_state(str(candidate / "state"))
        except Exception as exc:  # every registered object is loaded again from the next candidate
            failures.append(f"{candidate.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            logger.warning("checkpoint %s cannot be loaded (%s); trying the previous one", candidate, failures[-1])
            if cfg.resume != "latest":
                break
            continue
        start_from = candidate
        break
    if start_from is None and failures:
        raise TrainingError(f"no checkpoint of {run_dir} can be loaded ({'; '.join(failures)})")
    if start_from is not None:
        logger.info("resumed from %s at step %d", start_from, state.step)
    elif cfg.resume == "latest":
        logger.warning("train.resume=latest: %s holds no checkpoint yet; starting from step 0", run_dir)
    train_log.start(accelerator, run_dir, state.step, cfg.tracker, hparams)

    flops_per_token = task.flops_per_token()
    peak = cfg.peak_flops or default_peak_flops(accelerator.device) * world
    permutations: dict[int, np.ndarray] = {}

    if state.group_by_length is None:  # a new run, or a checkpoint from before the order was saved
        if start_from is not None and cfg.group_by_length and isinstance(task, LengthAware):
            logger.warning(
                "%s does not record whether its batches were grouped by length: taking "
                "train.group_by_length=%s from the recipe",
                start_from,
                cfg.group_by_length,
            )
        state.group_by_length = cfg.group_by_length
    elif state.group_by_length != cfg.group_by_length:
        logger.warning(
            "train.group_by_length=%s, but %s was trained with %s: resuming keeps the run's batch order",
            cfg.group_by_length,
            start_from,
            state.group_by_length,
        )
    if state.length_group_batches is None:  # a new run, or a checkpoint from before the size was saved
        state.length_group_batches = (
            cfg.length_group_batches if start_from is None else TrainConfig.ADDED["length_group_batches"]
        )
    if state.group_by_length and state.length_group_batches != cfg.length_group_batches:
        logger.warning(
            "train.length_group_batches=%s, but %s was trained with %s: resuming keeps its length groups",
            cfg.length_group_batches,
            start_from,
            state.length_group_batches,
        )
    grouped = state.group_by_length
    lengths = task.lengths("train") if grouped and isinstance(task, LengthAware) else None
    if grouped and lengths is None and not streaming:
        logger.warning("train.group_by_length: this task's examples are all one length (packed blocks); ignored")

    def step_indices(step: int, micro: int) -> tuple[np.ndarray, int]:
        epoch, k = divmod(step, steps_per_epoch)
        if epoch not in permutations:
            permutations.clear()
            rng = np.random.default_rng([seed, epoch])
            permutations[epoch] = rng.permutation(task.n_train)
            if lengths is not None:
                permutations[epoch] = group_by_length(
                    permutations[epoch], lengths, global_batch, rng, groups_of=state.length_group_batches
                )
        chunk = permutations[epoch][k * global_batch : (k + 1) * global_batch]
        start = (micro * world + accelerator.process_index) * cfg.micro_batch_size
        return chunk[start : start + cfg.micro_batch_size], epoch

    last_metrics: dict = {}
    bar = progress_bar(
        total=total, initial=state.step, desc="training", unit="step", disable=not accelerator.is_main_process
    )
    window = {"loss": 0.0, "targets": 0, "tokens": 0, "t0": time.perf_counter()}
    with _StopFlag() as stop, bar:
        module.train()
        while state.step < total and not state.best.get("stopped_early"):
            t_step = time.perf_counter()
            micro = []
            for m in range(cfg.grad_accum_steps):
                if streaming:
                    micro.append(task.next_batch(cfg.micro_batch_size))
                else:
                    indices, epoch = step_indices(state.step, m)
                    micro.append(task.make_batch(indices, epoch, "train"))
            counts = torch.tensor(
                [sum(b.n_targets for b in micro), sum(b.n_tokens for b in micro)],
                dtype=torch.float64,
                device=accelerator.device,
            )
            n_targets, n_tokens = accelerator.reduce(counts, reduction="sum").tolist()
            step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            for m, batch in enumerate(micro):
                sync = contextlib.nullcontext() if m == len(micro) - 1 else accelerator.no_sync(module)
                with sync, accelerator.autocast():
                    loss_sum = module(**_to_device(batch.inputs, accelerator.device))
                    # DDP averages gradients over processes: scale so the result is the global mean
                    accelerator.backward(loss_sum * (world / max(n_targets, 1)))
                step_loss += loss_sum.detach().double()
            step_loss = accelerator.reduce(step_loss, reduction="sum").item()
            if not math.isfinite(step_loss):
                last = ckpt.list_checkpoints(run_dir)
                raise TrainingError(
                    f"non-finite loss ({step_loss}) at step {state.step + 1}; "
                    f"last good checkpoint: {last[-1] if last else 'none'} (lower lr, or use bf16 instead of fp16)"
                )
            grad_norm = None
            if cfg.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens += int(n_tokens)
            state.seconds += time.perf_counter() - t_step
            window["loss"] += step_loss
            window["targets"] += n_targets
            window["tokens"] += n_tokens
            bar.update(1)
            last_step = state.step == total
            if state.step % RELEASE_MEMORY_EVERY == 0:
                release_free_memory()

            if state.step % cfg.log_every == 0 or last_step:
                elapsed = time.perf_counter() - window["t0"]
                tokens_per_s = window["tokens"] / max(elapsed, 1e-9)
                logs = {
                    "train/loss": window["loss"] / max(window["targets"], 1),
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/tokens_per_s": tokens_per_s,
                    "train/mfu": tokens_per_s * flops_per_token / peak,
                    "train/tokens": state.tokens,
                    "train/epoch": task.stream.epoch if streaming else state.step / steps_per_epoch,
                }
                if grad_norm is not None:
                    logs["train/grad_norm"] = float(grad_norm)
                train_log.log(accelerator, run_dir, state.step, logs, cfg.tracker)
                bar.set_postfix(loss=f"{logs['train/loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                window = {"loss": 0.0, "targets": 0, "tokens": 0, "t0": time.perf_counter()}

            if state.step % eval_every == 0 or last_step:
                t_eval = time.perf_counter()
                last_metrics = evaluate(task, module, accelerator, cfg)
                state.evaluation_seconds += time.perf_counter() - t_eval
                release_free_memory()  # evaluation's batches differ in shape from training's
                if accelerator.is_main_process:
                    bar.write(f"step {state.step}: eval {_headline(last_metrics)}", file=sys.stderr)
                train_log.log(
                    accelerator, run_dir, state.step, {f"eval/{k}": v for k, v in last_metrics.items()}, cfg.tracker
                )
                if cfg.metric_for_best is not None:
                    t_save = time.perf_counter()
                    _track_best(task, accelerator, run_dir, state, cfg, last_metrics, total)
                    state.checkpoint_seconds += time.perf_counter() - t_save
                module.train()

            stopping = bool(state.best.get("stopped_early"))
            if state.step % save_every == 0 or last_step or stopping or stop.signal is not None:
                t_save = time.perf_counter()
                saved = save_checkpoint(task, accelerator, run_dir, state, cfg.keep_last)
                state.checkpoint_seconds += time.perf_counter() - t_save
                release_free_memory()  # serialising the state allocates a copy of it
                if on_checkpoint is not None and accelerator.is_main_process:
                    on_checkpoint(saved, state.step)
            if stop.signal is not None and not last_step and not stopping:
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(stop.signal).name} at step {state.step}; checkpoint saved in "
                    f"{run_dir / ckpt.CHECKPOINTS}; rerun with train.resume=latest to continue"
                )
    if not last_metrics:  # resumed from the final checkpoint: nothing ran, still report eval
        last_metrics = evaluate(task, module, accelerator, cfg)
    summary = {
        "steps": state.step,
        "tokens": state.tokens,
        "train_seconds": round(state.seconds, 3),
        "evaluation_seconds": round(state.evaluation_seconds, 3),
        "checkpoint_seconds": round(state.checkpoint_seconds, 3),
        "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
        "processes": world,
        "global_batch": global_batch,
    }
    summary["mfu"] = round(summary["tokens_per_s"] * flops_per_token / peak, 4)
    if steps_per_epoch is not None:
        summary["epochs"] = round(state.step / steps_per_epoch, 3)
    summary.update({f"eval_{k}": v for k, v in last_metrics.items()})
    if cfg.metric_for_best is not None:
        summary.update(
            {
                "best_step": state.best.get("step"),
                f"best_{cfg.metric_for_best}": state.best.get("value"),
                "stopped_early": bool(state.best.get("stopped_early")),
            }
        )
    # the evaluation of the weights the run ends with: the last step's, or the best model's
    # as saved with it (empty if best_model/ is not the one this run's state counts as best)
    summary["final_eval"] = (
        dict(last_metrics) if cfg.metric_for_best is None else _best_scores(run_dir, state, accelerator)
    )
    return summary


BEST_SCORES = "eval_scores.json"
"""In ``best_model/``: the step and metrics of the evaluation that made it the best."""


def _best_scores(run_dir: Path, state: TrainState, accelerator) -> dict:
    """The metrics saved with ``best_model/`` when they belong to the step ``state`` counts as
    best (a resumed run's folder may hold another run's best); the same answer on every rank."""
    found = {}
    if accelerator.is_main_process:
        try:
            saved = json.loads((run_dir / BEST_DIR / BEST_SCORES).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if saved.get("step") is not None and saved.get("step") == state.best.get("step"):
            found = saved.get("metrics", {})
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        found = broadcast_object_list([found])[0]
    return found


def group_by_length(
    order: np.ndarray, lengths: np.ndarray, batch: int, rng: np.random.Generator, groups_of: int = 50
) -> np.ndarray:
    """``order`` (a shuffled epoch) rearranged so that each run of ``batch`` positions holds
    examples of similar length: groups of ``groups_of`` batches are sorted by length and cut
    into batches, and the batches are shuffled (not longest first in every group, which would
    make each group a short-to-long schedule). Examples past the last full batch stay last,
    as in ``order``: an epoch drops the same random remainder with or without grouping."""
    full = len(order) // batch * batch
    head, tail = order[:full], order[full:]
    span = batch * groups_of
    pieces = [g[np.argsort(-lengths[g], kind="stable")] for g in np.split(head, range(span, full, span))]
    batches = np.concatenate(pieces).reshape(-1, batch) if full else head.reshape(0, batch)
    return np.concatenate([batches[rng.permutation(len(batches))].reshape(-1), tail])


BEST_DIR = "best_model"


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


def _headline(metrics: dict, most: int = 4) -> str:
    """The first few scalar figures of an evaluation, for one progress line."""
    shown = [(k, v) for k, v in metrics.items() if isinstance(v, float) and k != "perplexity"][:most]
    return ", ".join(f"{k} {v:.4f}" for k, v in shown)


def _every(value, steps_per_epoch: int | None, name: str) -> int:
    if value != "epoch":
        return value
    if steps_per_epoch is None:
        raise ConfigError(f"'{name}: epoch' needs data with a length; streaming data has no epochs")
    return steps_per_epoch


def _track_best(
    task: Task, accelerator, run_dir: Path, state: TrainState, cfg: TrainConfig, metrics: dict, total: int
) -> None:
    """Keep the best model on disk, count evaluations without improvement, decide to stop.

    Every process takes the same decision (the metrics are reduced over all of them). The
    record lives in ``state.best``, so a resumed run continues the count.
    """
    name = cfg.metric_for_best
    if name not in metrics:
        raise ConfigError(f"'metric_for_best': no evaluation metric {name!r} (metrics: {', '.join(sorted(metrics))})")
    value = float(metrics[name])
    best = state.best.get("value")
    sign = 1.0 if cfg.higher_is_better else -1.0
    if best is None or sign * (value - best) > cfg.early_stopping_threshold:
        state.best = {"metric": name, "value": value, "step": state.step, "stale": 0}
        if accelerator.is_main_process:
            save_model_folder(task, run_dir / BEST_DIR, scores={"step": state.step, "metrics": metrics})
        accelerator.wait_for_everyone()
        return
    state.best["stale"] = state.best.get("stale", 0) + 1
    patience = cfg.early_stopping_patience
    if patience is not None and state.best["stale"] >= patience and state.step < total:
        state.best["stopped_early"] = True
        logger.info(
            "early stopping at step %d: %s has not improved on %.4f (step %d) for %d evaluations",
            state.step,
            name,
            state.best["value"],
            state.best["step"],
            patience,
        )


@torch.no_grad()
def evaluate(task: Task, module, accelerator, cfg: TrainConfig, split: str = "eval", outputs: bool = False):
    """Mean loss over a split's evaluation examples (each process takes a strided share),
    plus a ``ScoredTask``'s own metrics.

    With ``outputs=True`` the per-example arrays handed to ``compute_metrics`` are returned
    too: ``(metrics, outputs)``, ``outputs["index"]`` naming each example (None for a task
    that is not a ``ScoredTask``).
    """
    module.eval()
    indices = task.eval_indices(split)
    if cfg.eval_max_batches is not None and split == "eval":
        indices = indices[: cfg.eval_max_batches * cfg.micro_batch_size * accelerator.num_processes]
    mine = indices[accelerator.process_index :: accelerator.num_processes]
    if isinstance(task, LengthAware):  # longest first: little padding, and a batch too big fails at once
        mine = mine[np.argsort(-task.lengths(split)[mine], kind="stable")]
    size = cfg.eval_batch_size or cfg.micro_batch_size
    per_example = isinstance(task, ScoredTask)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    pieces: list[dict] = []
    starts = range(0, len(mine), size)
    for start in progress_bar(
        starts,
        desc=f"evaluating ({split})",
        unit="batch",
        leave=False,
        disable=not accelerator.is_main_process or len(starts) < 2,
    ):
        chunk = mine[start : start + size]
        batch = task.make_batch(chunk, 0, split)
        inputs = _to_device(batch.inputs, accelerator.device)
        with accelerator.autocast():
            if per_example:
                loss_sum, out = task.eval_step(module, inputs)
                pieces.append({"index": np.asarray(chunk), **{k: _numpy(v) for k, v in out.items()}})
            else:
                loss_sum = module(**inputs)
        totals[0] += loss_sum.double()
        totals[1] += batch.n_targets
    loss_sum, n = accelerator.reduce(totals, reduction="sum").tolist()
    loss = loss_sum / max(n, 1)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "targets": int(n)}
    gathered = None
    if per_example:
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            pieces = gather_object(pieces)
        gathered = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]} if pieces else {}
        if gathered:
            order = np.argsort(gathered["index"], kind="stable")
            gathered = {k: v[order] for k, v in gathered.items()}
        del metrics["perplexity"]
        metrics.update(task.compute_metrics(gathered, split))
    return (metrics, gathered) if outputs else metrics


def save_checkpoint(task: Task, accelerator, run_dir: Path, state: TrainState, keep_last: int) -> Path:
    """All processes write into a hidden staging folder; the main process renames it."""
    staging = ckpt.staging_path(run_dir, state.step)
    try:
        if accelerator.is_main_process:
            staging.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging / "state"))
        # save_state returns without a barrier and every rank writes its own RNG state file:
        # the main process must not hash and rename the folder before the slowest rank is done
        accelerator.wait_for_everyone()
        final = staging
        if accelerator.is_main_process:
            write_model_folder(task, staging / "model")
            with open(staging / ckpt.STATE_FILE, "w", encoding="utf-8") as fh:
                json.dump(state.state_dict(), fh, indent=2)
            ckpt.write_manifest(staging)
            final = ckpt.commit(staging, keep_last)
    except OSError as exc:  # disk full, quota, permissions: the earlier checkpoints are untouched
        shutil.rmtree(staging, ignore_errors=True)
        previous = ckpt.list_checkpoints(run_dir)
        kept = f"the last good checkpoint is {previous[-1]}" if previous else "no earlier checkpoint exists"
        raise OutputError(
            f"saving the checkpoint of step {state.step} failed ({exc.strerror or exc}); {kept}; "
            f"free space and rerun with train.resume=latest"
        ) from None
    accelerator.wait_for_everyone()
    return final


def write_model_folder(task: Task, directory: Path) -> None:
    """The task's model and tokenizer as one ``from_pretrained`` folder."""
    from nlp_ssl.tokenizer import save_tokenizer

    task.model.save_pretrained(directory, safe_serialization=True)
    save_tokenizer(task.tokenizer, directory)


def save_model_folder(task: Task, target: Path, scores: dict | None = None) -> None:
    """``write_model_folder`` beside ``target``, then renamed over it: readers never see
    half a model, nor a model with another model's ``scores`` (written into ``BEST_SCORES``)."""
    staging = target.with_name(f".{target.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    write_model_folder(task, staging)
    if scores is not None:
        plain = {"step": scores["step"], "metrics": {k: train_log.plain(v) for k, v in scores["metrics"].items()}}
        (staging / BEST_SCORES).write_text(json.dumps(plain, indent=2), encoding="utf-8")
    replace_dir(staging, target)


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()  # numpy has no bf16
    return np.asarray(value)


def _to_device(inputs: dict, device) -> dict:
    from accelerate.utils import send_to_device

    # nested too: a packed batch's masks may be a dict per attention kind
    return send_to_device(inputs, device, non_blocking=True)
