"""Fine-tuning stage: ``nlp-ssl finetune RECIPE.yaml`` (alone, or under ``accelerate launch``).

The recipe's ``task`` picks its module (``nlp_ssl.tasks``: schema, setup, data, loss,
metrics). Flow, the same for every task: model folder (ours or
anyone's) -> task data -> ``training.fit`` (the same loop as pretraining; best model kept by
``train.metric_for_best``, optional early stopping) -> the best model scored on validation
and test -> ``<output_dir>/model/`` (loads with ``AutoModelFor...`` and ``pipeline``),
``predictions.jsonl`` and the run files (``metrics.json`` last).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from nlp_ssl.errors import ConfigError
from nlp_ssl.outputs import MODEL_DIR, PREDICTIONS_FILE, locks_output, write_jsonl
from nlp_ssl.stage import FitStage, run_stage
from nlp_ssl.tasks import TASKS, get_task
from nlp_ssl.training import BEST_DIR, evaluate, save_model_folder

logger = logging.getLogger(__name__)


def recipe_class(raw: dict, source: str) -> type:
    """The config class for a finetune recipe, chosen by its ``task`` key."""
    if raw.get("task") is None:
        raise ConfigError(f"{source}: missing required key 'task' (one of: {', '.join(TASKS)})")
    return get_task(raw["task"], where=source).config


@locks_output()
def run(cfg, overwrite: bool = False, publisher=None) -> dict:
    """Fine-tune on any registered task: the task's setup, then one shared flow."""
    return run_stage(Finetuning(cfg), overwrite, publisher)


class Finetuning(FitStage):
    kind = "finetune"

    def make_task(self, accelerator):
        task, self.origin = get_task(self.cfg.task).setup(self.cfg, accelerator)
        return task

    def finish(self, summary: dict, accelerator, folder: Path) -> dict:
        cfg, task, final_eval = self.cfg, self.task, self.final_eval
        info = task.describe()
        best_dir = folder / BEST_DIR
        accelerator.wait_for_everyone()
        if cfg.train.metric_for_best is not None and best_dir.is_dir():
            _load_weights(task.model, best_dir)
        elif cfg.train.metric_for_best is not None and (folder / MODEL_DIR).is_dir():
            _load_weights(task.model, folder / MODEL_DIR)  # an interrupted finish had moved the best model there
        elif summary.get("best_step") is not None:
            logger.warning(
                "%s is missing: the model is the final weights (step %d), not the best (step %d)",
                best_dir,
                summary["steps"],
                summary["best_step"],
            )
            summary = {k: v for k, v in summary.items() if k not in ("best_step", f"best_{cfg.train.metric_for_best}")}
            final_eval = {}  # the best model's scores: not these weights'
        scores, predictions = {}, None
        for split, prefix in (("eval", "validation"), ("test", "test")):
            if split not in task.splits:
                continue
            if split == "eval" and final_eval and "test" in task.splits:
                m = final_eval  # these weights were scored on it in training: not again (generation is slow)
            else:
                m, outputs = evaluate(task, task.module, accelerator, cfg.train, split=split, outputs=True)
                predictions = (split, outputs)  # test when there is one, else validation
            scores.update({f"{prefix}_{k}": v for k, v in m.items()})
        if not accelerator.is_main_process:
            return {}
        save_model_folder(task, folder / MODEL_DIR)
        split, outputs = predictions
        write_jsonl(folder / PREDICTIONS_FILE, task.records(split, outputs))
        shutil.rmtree(best_dir, ignore_errors=True)  # model/ now holds it
        train_summary = {k: v for k, v in summary.items() if not k.startswith("eval_")}
        return {
            "task": cfg.task,
            **self.origin,
            **info,
            **train_summary,
            **scores,
            "predictions_split": "test" if split == "test" else "validation",
        }


def _load_weights(model, folder: Path) -> None:
    """Put the weights saved in ``folder`` into ``model`` (same architecture), in place, so
    that the engine's wrapped copy sees them too."""
    best = type(model).from_pretrained(str(folder))
    missing, unexpected = model.load_state_dict(best.state_dict(), strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{folder}: weights do not match the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
