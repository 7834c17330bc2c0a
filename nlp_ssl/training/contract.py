"""What the loop asks of a task: ``Batch`` and the protocols a task, a streaming task, a
scored task and a length-aware task implement. Tasks and objectives import this module only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


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


@runtime_checkable
class StepAware(Protocol):
    """A task whose batches depend on where the run is (a sequence-length schedule); the
    engine checks for it with ``isinstance``."""

    def at_step(self, step: int, total: int) -> None:
        """Called before the batches of each optimizer step are built, ``step`` the steps done
        so far (so after a resume too, before its first batch) of ``total``. What it sets must
        depend on these two numbers only, so that a resumed run reads what the uninterrupted
        one did; evaluations after the step see the same setting."""
        ...
