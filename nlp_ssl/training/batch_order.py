"""Which examples each optimizer step trains on.

The order is a pure function of the step: epoch ``e`` is a permutation seeded by ``(seed, e)``
(optionally arranged into length groups), step ``s`` takes its ``s``-th global batch, and each
process and micro-step its own slice. Resuming needs nothing but the step: no batch is replayed
or skipped. Whether batches are grouped by length, and in groups of how many, is part of the
run: it is kept in the checkpoint's ``TrainState``, so a resume continues the run's order
whatever the recipe (or its defaults) now say.
"""

from __future__ import annotations

import logging

import numpy as np

from nlp_ssl.training.config import StepPlan, TrainConfig
from nlp_ssl.training.contract import LengthAware, Task
from nlp_ssl.training.state import TrainState

logger = logging.getLogger(__name__)


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


class BatchOrder:
    """The example indices of every micro-batch of a run over a task with a length."""

    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        state: TrainState,
        plan: StepPlan,
        *,
        seed: int,
        process_index: int,
        world: int,
        resumed_from=None,
    ):
        self.task, self.seed, self.plan = task, seed, plan
        self.micro_batch_size, self.process_index, self.world = cfg.micro_batch_size, process_index, world
        self._permutation: tuple[int, np.ndarray] | None = None
        self.groups_of = self._settle(cfg, state, resumed_from, task)
        self.lengths = task.lengths("train") if self.groups_of and isinstance(task, LengthAware) else None
        if self.groups_of and self.lengths is None and task.n_train is not None:
            logger.warning("train.group_by_length: this task's examples are all one length (packed blocks); ignored")

    @staticmethod
    def _settle(cfg: TrainConfig, state: TrainState, resumed_from, task) -> int | None:
        """The run's grouping (None: random batches), recorded in ``state``: a new run's from
        the recipe, a resumed one's from its checkpoint (with a word where the recipe differs)."""
        if state.group_by_length is None:  # a new run, or a checkpoint that did not record it
            if resumed_from is not None and cfg.group_by_length and isinstance(task, LengthAware):
                logger.warning(
                    "%s does not record whether its batches were grouped by length: taking "
                    "train.group_by_length=%s from the recipe",
                    resumed_from,
                    cfg.group_by_length,
                )
            state.group_by_length = cfg.group_by_length
        elif state.group_by_length != cfg.group_by_length:
            logger.warning(
                "train.group_by_length=%s, but %s was trained with %s: resuming keeps the run's batch order",
                cfg.group_by_length,
                resumed_from,
                state.group_by_length,
            )
        if state.length_group_batches is None:  # a new run (a checkpoint's is upgraded: run_format)
            state.length_group_batches = cfg.length_group_batches
        if state.group_by_length and state.length_group_batches != cfg.length_group_batches:
            logger.warning(
                "train.length_group_batches=%s, but %s was trained with %s: resuming keeps its length groups",
                cfg.length_group_batches,
                resumed_from,
                state.length_group_batches,
            )
        return state.length_group_batches if state.group_by_length else None

    def indices(self, step: int, micro: int) -> tuple[np.ndarray, int]:
        """This process's examples for micro-step ``micro`` of optimizer step ``step``, and the epoch."""
        global_batch = self.plan.global_batch
        epoch, k = divmod(step, self.plan.steps_per_epoch)
        if self._permutation is None or self._permutation[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.task.n_train)
            if self.lengths is not None:
                order = group_by_length(order, self.lengths, global_batch, rng, groups_of=self.groups_of)
            self._permutation = (epoch, order)
        chunk = self._permutation[1][k * global_batch : (k + 1) * global_batch]
        start = (micro * self.world + self.process_index) * self.micro_batch_size
        return chunk[start : start + self.micro_batch_size], epoch
