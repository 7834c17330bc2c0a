"""What every training stage does around ``engine.fit``, in one place: the run folder checked
and refused before any work, the recipe's input checked before the folder exists, training,
the stage's own final outputs, the run files (``metrics.json`` last), the optional push."""

from __future__ import annotations

from collections.abc import Callable

from nlp_ssl.engine import fit, make_accelerator, plan_steps
from nlp_ssl.hub import after_run, checkpoint_pusher, refuse_offline_push
from nlp_ssl.outputs import (
    MODEL_DIR,
    commit_run_dir,
    now,
    open_run_dir,
    output_path,
    prepare_run_dir,
    work_dir,
    write_run_files,
)


def run_training_stage(cfg, overwrite: bool, stage: str, setup: Callable, finish: Callable) -> dict:
    """Train ``cfg`` (a recipe with ``output_dir``, ``train``, ``seed`` and the Hub keys).

    ``setup(accelerator) -> engine task`` loads and checks everything the run needs; it runs
    before ``output_dir`` is created or touched, so bad input leaves nothing behind.
    ``finish(task, summary, accelerator, folder, final_eval) -> metrics`` writes the stage's
    final outputs into ``folder`` (``final_eval``: the validation metrics of the final weights,
    empty when unknown) (its model into ``folder/model``; every process calls it, only the main
    process's metrics are written). ``folder`` is ``output_dir`` itself, or with ``--overwrite``
    the replacement that takes its place once everything is written.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown the training bar
    started = now()
    out = output_path(cfg.output_dir)
    prepare_run_dir(out, cfg.train.resume, overwrite, kind=stage, config=cfg)
    accelerator = make_accelerator(cfg.train, work_dir(out, overwrite))  # TensorBoard logs go with the run
    refuse_offline_push(cfg)
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
            on_checkpoint=checkpoint_pusher(cfg),
        )
        final_eval = summary.pop("final_eval")
        metrics = finish(task, summary, accelerator, work, final_eval)
        if accelerator.is_main_process:
            metrics["model_dir"] = str(out / MODEL_DIR)
            write_run_files(work, stage=stage, config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
        commit_run_dir(work, out, accelerator)
    finally:
        accelerator.end_training()
    return after_run(cfg, out, accelerator.is_main_process)
