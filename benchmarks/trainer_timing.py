"""What the Trainer baselines of the fine-tuning benchmarks share: the seconds a ``Trainer``
spends in evaluations and checkpoint saves, so that its training time compares with the
engine's ``train_seconds`` (training steps only)."""

from __future__ import annotations

import time


def with_timings(trainer_class, timings: dict):
    """A subclass of ``trainer_class`` adding the seconds of each ``evaluate`` call to
    ``timings["eval"]`` and of each checkpoint save to ``timings["save"]``."""

    def timed(key, call, *args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - start

    class Timed(trainer_class):
        def evaluate(self, *args, **kwargs):
            return timed("eval", super().evaluate, *args, **kwargs)

        def _save_checkpoint(self, *args, **kwargs):
            return timed("save", super()._save_checkpoint, *args, **kwargs)

    return Timed
