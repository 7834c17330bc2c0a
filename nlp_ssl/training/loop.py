"""THE training loop, shared by every stage.

A task hands the loop three things (``nlp_ssl.training.contract`` spells out every member): a
training module whose forward returns the *sum* of per-target losses, the number of training
examples, and a function that builds a ``Batch`` from example indices. A task whose training
data streams is also a ``StreamingTask``; one with metrics beyond the loss is also a
``ScoredTask``. The loop owns everything else: Accelerate, AdamW, the schedule, gradient
accumulation, clipping, evaluation, logging, checkpoints.

Following a batch: ``BatchOrder`` picks the example indices of optimizer step ``s``;
``task.make_batch`` reads and collates them; ``_train_step`` normalises each micro-batch's loss
sum by the number of targets in the *whole* accumulated global batch, so accumulation and
multi-process training give the gradient of one big batch.

The LR scheduler is stepped exactly once per optimizer step, on every process; it is not
passed to ``accelerator.prepare`` (whose wrapper would step it once per process).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nlp_ssl import checkpoint as ckpt
from nlp_ssl import train_log
from nlp_ssl.errors import Interrupted
from nlp_ssl.hardware import default_peak_flops, fast_adamw_kwargs
from nlp_ssl.memory import RELEASE_MEMORY_EVERY, release_free_memory
from nlp_ssl.progress import launched, progress_bar
from nlp_ssl.training.batch_order import BatchOrder
from nlp_ssl.training.checkpointing import TrainingError, resume, save_checkpoint
from nlp_ssl.training.config import StepPlan, TrainConfig, plan_steps
from nlp_ssl.training.contract import StepAware, Task
from nlp_ssl.training.evaluation import evaluate, headline, to_device
from nlp_ssl.training.model_folders import best_scores, track_best
from nlp_ssl.training.state import TrainState

logger = logging.getLogger(__name__)

# Tied weights (GPT-2's output layer is its token embedding) are stored once in a checkpoint by
# design and tied again on load, which the resume tests check: accelerate's warning about it
# on every save reads like a fault.
logging.getLogger("accelerate.utils.other").addFilter(lambda record: "Removed shared tensor" not in record.getMessage())


class TrainingInterrupted(Interrupted):
    """SIGINT/SIGTERM: a checkpoint was saved; ``resume: latest`` continues."""


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


@dataclass
class _Run:
    """What every part of one ``fit`` call shares."""

    task: Task
    cfg: TrainConfig
    run_dir: Path
    accelerator: object
    plan: StepPlan
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    state: TrainState
    flops_per_token: float
    peak: float

    @property
    def streaming(self) -> bool:
        return self.task.n_train is None


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

    run_dir = Path(run_dir)
    accelerator = accelerator or make_accelerator(cfg, run_dir)
    set_seed(seed)
    run = _start(task, cfg, run_dir, accelerator)
    state, plan = run.state, run.plan
    resumed_from = resume(accelerator, cfg.resume, run_dir)
    if resumed_from is not None:
        logger.info("resumed from %s at step %d", resumed_from, state.step)
    train_log.start(accelerator, run_dir, state.step, cfg.tracker, hparams)
    order = BatchOrder(
        task,
        cfg,
        state,
        plan,
        seed=seed,
        process_index=accelerator.process_index,
        world=accelerator.num_processes,
        resumed_from=resumed_from,
    )

    last_metrics: dict = {}
    bar = progress_bar(
        total=plan.total, initial=state.step, desc="training", unit="step", disable=not accelerator.is_main_process
    )
    window = _Window()
    with _StopFlag() as stop, bar:
        run.module.train()
        while state.step < plan.total and not state.best.get("stopped_early"):
            t_step = time.perf_counter()
            if isinstance(task, StepAware):
                task.at_step(state.step, plan.total)
            micro = [
                task.next_batch(cfg.micro_batch_size)
                if run.streaming
                else task.make_batch(*order.indices(state.step, m), "train")
                for m in range(cfg.grad_accum_steps)
            ]
            step_loss, n_targets, n_tokens, grad_norm = _train_step(run, micro)
            state.step += 1
            state.tokens += int(n_tokens)
            state.seconds += time.perf_counter() - t_step
            window.add(step_loss, n_targets, n_tokens)
            bar.update(1)
            last_step = state.step == plan.total
            if state.step % RELEASE_MEMORY_EVERY == 0:
                release_free_memory()
            if state.step % cfg.log_every == 0 or last_step:
                _log_window(run, window, grad_norm, bar)
                window = _Window()
            if state.step % plan.eval_every == 0 or last_step:
                last_metrics = _evaluate(run, bar)
            stopping = bool(state.best.get("stopped_early"))
            if state.step % plan.save_every == 0 or last_step or stopping or stop.signal is not None:
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
        if isinstance(task, StepAware):  # as the last step trained
            task.at_step(max(state.step - 1, 0), plan.total)
        last_metrics = evaluate(task, run.module, accelerator, cfg)
    return _summary(run, last_metrics)


def _start(task: Task, cfg: TrainConfig, run_dir: Path, accelerator) -> _Run:
    """The optimizer, schedule and counters of a run, prepared and registered for checkpoints."""
    from transformers import get_scheduler

    plan = plan_steps(task.n_train, cfg, accelerator.num_processes)
    model = task.model
    if cfg.gradient_checkpointing:  # the transformers 5 name first, then the older one
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
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=plan.warmup, num_training_steps=plan.total)
    module, optimizer = accelerator.prepare(module, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(state)
    if task.n_train is None:  # the stream's position (reader state + leftover tokens) rides in the checkpoint
        accelerator.register_for_checkpointing(task.stream)
    if accelerator.is_main_process:
        ckpt.clean_partials(run_dir)
    accelerator.wait_for_everyone()
    peak = cfg.peak_flops or default_peak_flops(accelerator.device) * accelerator.num_processes
    return _Run(
        task, cfg, run_dir, accelerator, plan, module, optimizer, scheduler, state, task.flops_per_token(), peak
    )


def _train_step(run: _Run, micro: list) -> tuple[float, float, float, object]:
    """One optimizer step over the micro-batches of a global batch: the summed loss, targets
    and tokens of all processes, and the gradient norm before clipping (None without clipping)."""
    accelerator, cfg, module = run.accelerator, run.cfg, run.module
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
            loss_sum = module(**to_device(batch.inputs, accelerator.device))
            # DDP averages gradients over processes: scale so the result is the global mean
            accelerator.backward(loss_sum * (accelerator.num_processes / max(n_targets, 1)))
        step_loss += loss_sum.detach().double()
    step_loss = accelerator.reduce(step_loss, reduction="sum").item()
    if not math.isfinite(step_loss):
        last = ckpt.list_checkpoints(run.run_dir)
        raise TrainingError(
            f"non-finite loss ({step_loss}) at step {run.state.step + 1}; "
            f"last good checkpoint: {last[-1] if last else 'none'} (lower lr, or use bf16 instead of fp16)"
        )
    grad_norm = None
    if cfg.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss, n_targets, n_tokens, grad_norm


class _Window:
    """Loss, targets and tokens since the last log line."""

    def __init__(self):
        self.loss, self.targets, self.tokens, self.t0 = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, targets: float, tokens: float) -> None:
        self.loss += loss
        self.targets += targets
        self.tokens += tokens


def _log_window(run: _Run, window: _Window, grad_norm, bar) -> None:
    tokens_per_s = window.tokens / max(time.perf_counter() - window.t0, 1e-9)
    state = run.state
    logs = {
        "train/loss": window.loss / max(window.targets, 1),
        "train/lr": run.scheduler.get_last_lr()[0],
        "train/tokens_per_s": tokens_per_s,
        "train/mfu": tokens_per_s * run.flops_per_token / run.peak,
        "train/tokens": state.tokens,
        "train/epoch": run.task.stream.epoch if run.streaming else state.step / run.plan.steps_per_epoch,
    }
    if grad_norm is not None:
        logs["train/grad_norm"] = float(grad_norm)
    train_log.log(run.accelerator, run.run_dir, state.step, logs, run.cfg.tracker)
    bar.set_postfix(loss=f"{logs['train/loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)


def _evaluate(run: _Run, bar) -> dict:
    """Evaluate, log, and keep the best model when the recipe asks for it."""
    accelerator, state, cfg = run.accelerator, run.state, run.cfg
    t_eval = time.perf_counter()
    metrics = evaluate(run.task, run.module, accelerator, cfg)
    state.evaluation_seconds += time.perf_counter() - t_eval
    release_free_memory()  # evaluation's batches differ in shape from training's
    if accelerator.is_main_process:
        bar.write(f"step {state.step}: eval {headline(metrics)}", file=sys.stderr)
    train_log.log(accelerator, run.run_dir, state.step, {f"eval/{k}": v for k, v in metrics.items()}, cfg.tracker)
    if cfg.metric_for_best is not None:
        t_save = time.perf_counter()
        track_best(run.task, accelerator, run.run_dir, state, cfg, metrics, run.plan.total)
        state.checkpoint_seconds += time.perf_counter() - t_save
    run.module.train()
    return metrics


def _summary(run: _Run, last_metrics: dict) -> dict:
    state, cfg, plan = run.state, run.cfg, run.plan
    summary = {
        "steps": state.step,
        "tokens": state.tokens,
        "train_seconds": round(state.seconds, 3),
        "evaluation_seconds": round(state.evaluation_seconds, 3),
        "checkpoint_seconds": round(state.checkpoint_seconds, 3),
        "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
        "processes": run.accelerator.num_processes,
        "global_batch": plan.global_batch,
    }
    summary["mfu"] = round(summary["tokens_per_s"] * run.flops_per_token / run.peak, 4)
    if plan.steps_per_epoch is not None:
        summary["epochs"] = round(state.step / plan.steps_per_epoch, 3)
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
        dict(last_metrics) if cfg.metric_for_best is None else best_scores(run.run_dir, state, run.accelerator)
    )
    return summary
