"""What every training stage does around ``engine.fit``, in one place: the run folder checked
and refused before any work, the recipe's input checked before the folder exists, training,
the stage's own final outputs, the run files (``metrics.json`` last), the optional push."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nlp_ssl.engine import fit, make_accelerator
from nlp_ssl.hub import after_run, checkpoint_pusher, refuse_offline_push
from nlp_ssl.outputs import now, open_run_dir, prepare_run_dir, write_run_files


def run_training_stage(cfg, overwrite: bool, stage: str, setup: Callable, finish: Callable) -> dict:
    """Train ``cfg`` (a recipe with ``output_dir``, ``train``, ``seed`` and the Hub keys).

    ``setup(accelerator) -> engine task`` loads and checks everything the run needs; it runs
    before ``output_dir`` is created or touched, so bad input leaves nothing behind.
    ``finish(task, summary, accelerator, out) -> metrics`` writes the stage's final outputs
    (every process calls it; only the main process's metrics are written).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown the training bar
    started = now()
    out = Path(cfg.output_dir).absolute()
    accelerator = make_accelerator(cfg.train, out)
    prepare_run_dir(out, cfg.train.resume, overwrite)
    refuse_offline_push(cfg)
    task = setup(accelerator)
    open_run_dir(out, cfg, overwrite, accelerator)
    try:
        summary = fit(task, cfg.train, out, seed=cfg.seed, hparams=cfg, accelerator=accelerator,
                      on_checkpoint=checkpoint_pusher(cfg))
        metrics = finish(task, summary, accelerator, out)
        if accelerator.is_main_process:
            write_run_files(out, stage=stage, config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
        accelerator.wait_for_everyone()
    finally:
        accelerator.end_training()
    return after_run(cfg, out, accelerator.is_main_process)
