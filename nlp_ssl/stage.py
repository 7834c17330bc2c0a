"""What every training stage does around its training, in one place: the run folder checked
and refused before any work, the recipe's input checked before the folder exists, training,
the stage's own final outputs, the run files (``metrics.json`` last), the optional push.

A stage is a ``TrainingStage`` object: what differs between pretraining objectives, fine-tuning
tasks and the token-vector objectives is in its ``setup``, ``train`` and ``finish``, and what one
step hands the next is kept on the object. ``run_stage`` runs any of them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from nlp_ssl.errors import ConfigError
from nlp_ssl.outputs import (
    MODEL_DIR,
    commit_run_dir,
    now,
    open_run_dir,
    output_path,
    prepare_run_dir,
    read_metrics,
    work_dir,
    write_run_files,
)
from nlp_ssl.training import fit, make_accelerator, plan_steps


class TrainingStage:
    """One run of a stage for recipe ``cfg`` (``output_dir``, ``train``, ``seed``)."""

    kind: ClassVar[str]
    """The stage as run folders record it (``pretrain``, ``finetune``)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def check(self) -> None:
        """Refusals that need nothing loaded (how the run was launched), before the run folder is checked."""

    def setup(self, accelerator, work: Path) -> None:
        """Load and check everything the run needs. Runs before ``work`` (the folder the run
        will write, which may hold the checkpoints of an interrupted run) is created or
        touched, so that bad input leaves nothing behind."""
        raise NotImplementedError

    @property
    def resume(self) -> str | None:
        """The resume the run folder is opened for (``open_run_dir``)."""
        return self.cfg.train.resume

    def train(self, work: Path, accelerator, on_checkpoint) -> dict:
        """Train, writing checkpoints and logs into ``work``; the training summary."""
        raise NotImplementedError

    def finish(self, summary: dict, accelerator, folder: Path) -> dict:
        """Write the stage's final outputs into ``folder`` (its model into ``folder/model``)
        and return its metrics. Every process calls it; only the main process's metrics are
        written."""
        raise NotImplementedError


class FitStage(TrainingStage):
    """A stage whose model trains in ``nlp_ssl.training.fit``: ``make_task`` builds its task."""

    task = None

    def __init__(self, cfg):
        super().__init__(cfg)
        self.final_eval: dict = {}
        """The validation metrics of the final weights (empty when unknown), set by ``train``."""

    def make_task(self, accelerator):
        raise NotImplementedError

    def engine_config(self):
        """The ``TrainConfig`` the engine runs: the recipe's ``train``, unless a stage counts
        its examples in other units than the recipe does."""
        return self.cfg.train

    def setup(self, accelerator, work: Path) -> None:
        self.task = self.make_task(accelerator)
        plan_steps(self.task.n_train, self.engine_config(), accelerator.num_processes)  # what does not fit the data

    def train(self, work: Path, accelerator, on_checkpoint) -> dict:
        cfg = self.cfg
        summary = fit(
            self.task,
            self.engine_config(),
            work,
            seed=cfg.seed,
            hparams=cfg,
            accelerator=accelerator,
            on_checkpoint=on_checkpoint,
        )
        self.final_eval = summary.pop("final_eval")
        return summary


class LocalOnly:
    """The publisher of a stage that is handed none: it keeps the run local, and refuses a
    recipe that asks for a push instead of dropping the push without a word."""

    on_checkpoint = None

    def __init__(self, cfg):
        self.cfg = cfg

    def check(self) -> None:
        if getattr(self.cfg, "push_to_hub", False) or getattr(self.cfg, "hub_checkpoint_branch", None):
            raise ConfigError(
                "push_to_hub / hub_checkpoint_branch are set, but this stage was given no publisher: run it "
                "with the nlp-ssl command, or pass publisher=nlp_ssl.hub.Publisher(cfg)"
            )

    def after(self, run_dir, is_main_process: bool) -> dict:
        return read_metrics(run_dir) if is_main_process else {}


def run_stage(stage: TrainingStage, overwrite: bool, publisher=None) -> dict:
    """Run ``stage`` into its recipe's ``output_dir``; with ``overwrite``, what was there is
    replaced only once the new run is complete. ``publisher`` (``nlp_ssl.hub.Publisher``,
    handed over by the CLI or the pipeline) checks before any work, pushes checkpoints and the
    finished run; without one, the run stays local. Returns the run's metrics."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown the training bar
    cfg = stage.cfg
    started = now()
    out = output_path(cfg.output_dir)
    stage.check()
    prepare_run_dir(out, cfg.train.resume, overwrite, kind=stage.kind, config=cfg)
    work = work_dir(out, overwrite)
    accelerator = make_accelerator(cfg.train, work)  # TensorBoard logs go with the run
    publisher = publisher or LocalOnly(cfg)
    publisher.check()
    stage.setup(accelerator, work)
    work = open_run_dir(out, cfg, overwrite, accelerator, stage.resume)
    try:
        summary = stage.train(work, accelerator, publisher.on_checkpoint)
        metrics = stage.finish(summary, accelerator, work)
        if accelerator.is_main_process:
            metrics["model_dir"] = str(out / MODEL_DIR)
            write_run_files(work, stage=stage.kind, config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
        commit_run_dir(work, out, accelerator)
    finally:
        accelerator.end_training()
    return publisher.after(out, accelerator.is_main_process)
