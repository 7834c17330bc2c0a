"""What every training stage does around ``nlp_ssl.training.fit``, in one place: the run folder checked
and refused before any work, the recipe's input checked before the folder exists, training,
the stage's own final outputs, the run files (``metrics.json`` last), the optional push."""

from __future__ import annotations

from collections.abc import Callable

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


def run_training_stage(cfg, overwrite: bool, stage: str, setup: Callable, finish: Callable, publisher=None) -> dict:
    """Train ``cfg`` (a recipe with ``output_dir``, ``train``, ``seed`` and the Hub keys).

    ``setup(accelerator) -> engine task`` loads and checks everything the run needs; it runs
    before ``output_dir`` is created or touched, so bad input leaves nothing behind.
    ``finish(task, summary, accelerator, folder, final_eval) -> metrics`` writes the stage's
    final outputs into ``folder`` (``final_eval``: the validation metrics of the final weights,
    empty when unknown) (its model into ``folder/model``; every process calls it, only the main
    process's metrics are written). ``folder`` is ``output_dir`` itself, or with ``--overwrite``
    the replacement that takes its place once everything is written. ``publisher``
    (``nlp_ssl.hub.Publisher``, handed over by the CLI or the pipeline) checks before any work,
    pushes checkpoints and the finished run; without one, the run stays local.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown the training bar
    started = now()
    out = output_path(cfg.output_dir)
    prepare_run_dir(out, cfg.train.resume, overwrite, kind=stage, config=cfg)
    accelerator = make_accelerator(cfg.train, work_dir(out, overwrite))  # TensorBoard logs go with the run
    publisher = publisher or LocalOnly(cfg)
    publisher.check()
    task = setup(accelerator)
    plan_steps(task.n_train, cfg.train, accelerator.num_processes)  # settings that do not fit the data
    work = open_run_dir(out, cfg, overwrite, accelerator, cfg.train.resume)
    try:
        summary = fit(
            task,
            cfg.train,
            work,
            seed=cfg.seed,
            hparams=cfg,
            accelerator=accelerator,
            on_checkpoint=publisher.on_checkpoint,
        )
        final_eval = summary.pop("final_eval")
        metrics = finish(task, summary, accelerator, work, final_eval)
        if accelerator.is_main_process:
            metrics["model_dir"] = str(out / MODEL_DIR)
            write_run_files(work, stage=stage, config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
        commit_run_dir(work, out, accelerator)
    finally:
        accelerator.end_training()
    return publisher.after(out, accelerator.is_main_process)
