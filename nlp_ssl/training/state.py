"""The run's counters, saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from nlp_ssl.run_format import FORMAT, upgrade_train_state


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
    recipe (or its default) now says; None until a run sets it (and from checkpoints that
    did not record it)."""
    length_group_batches: int | None = None
    """The same, for the size of its length groups."""

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
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
        state = upgrade_train_state(state)
        self.step, self.tokens, self.seconds = int(state["step"]), int(state["tokens"]), float(state["seconds"])
        self.evaluation_seconds = float(state["evaluation_seconds"])
        self.checkpoint_seconds = float(state["checkpoint_seconds"])
        self.best = dict(state["best"])
        self.group_by_length = state["group_by_length"]
        self.length_group_batches = state["length_group_batches"]
