"""Model folders a run writes beside its checkpoints: the model and tokenizer as one
``from_pretrained`` folder, and the best model so far (``best_model/``) with the scores that
made it the best."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nlp_ssl import train_log
from nlp_ssl.errors import ConfigError
from nlp_ssl.run_files import atomic_dir
from nlp_ssl.training.config import TrainConfig
from nlp_ssl.training.contract import Task
from nlp_ssl.training.state import TrainState

logger = logging.getLogger(__name__)

BEST_DIR = "best_model"
BEST_SCORES = "eval_scores.json"
"""In ``best_model/``: the step and metrics of the evaluation that made it the best."""


def best_scores(run_dir: Path, state: TrainState, accelerator) -> dict:
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


def track_best(
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


def write_model_folder(task: Task, directory: Path) -> None:
    """The task's model and tokenizer as one ``from_pretrained`` folder."""
    from nlp_ssl.tokenizer import save_tokenizer

    task.model.save_pretrained(directory, safe_serialization=True)
    save_tokenizer(task.tokenizer, directory)


def save_model_folder(task: Task, target: Path, scores: dict | None = None) -> None:
    """``write_model_folder`` beside ``target``, then renamed over it: readers never see
    half a model, nor a model with another model's ``scores`` (written into ``BEST_SCORES``)."""
    with atomic_dir(target) as staging:
        write_model_folder(task, staging)
        if scores is not None:
            plain = {"step": scores["step"], "metrics": {k: train_log.plain(v) for k, v in scores["metrics"].items()}}
            (staging / BEST_SCORES).write_text(json.dumps(plain, indent=2), encoding="utf-8")
