"""Saving a checkpoint (every process, then one atomic rename) and resuming from the newest
one that loads."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from nlp_ssl import checkpoint as ckpt
from nlp_ssl.errors import NlpSslError, OutputError
from nlp_ssl.training.contract import Task
from nlp_ssl.training.model_folders import write_model_folder
from nlp_ssl.training.state import TrainState

logger = logging.getLogger(__name__)


class TrainingError(NlpSslError):
    """Training cannot go on (non-finite loss, ...); the last good checkpoint is kept."""


def save_checkpoint(task: Task, accelerator, run_dir: Path, state: TrainState, keep_last: int) -> Path:
    """All processes write into a hidden staging folder; the main process renames it."""
    staging = ckpt.staging_path(run_dir, state.step)
    try:
        if accelerator.is_main_process:
            staging.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging / "state"))
        # save_state returns without a barrier and every rank writes its own RNG state file:
        # the main process must not hash and rename the folder before the slowest rank is done
        accelerator.wait_for_everyone()
        final = staging
        if accelerator.is_main_process:
            write_model_folder(task, staging / "model")
            with open(staging / ckpt.STATE_FILE, "w", encoding="utf-8") as fh:
                json.dump(state.state_dict(), fh, indent=2)
            ckpt.write_manifest(staging)
            final = ckpt.commit(staging, keep_last)
    except OSError as exc:  # disk full, quota, permissions: the earlier checkpoints are untouched
        shutil.rmtree(staging, ignore_errors=True)
        previous = ckpt.list_checkpoints(run_dir)
        kept = f"the last good checkpoint is {previous[-1]}" if previous else "no earlier checkpoint exists"
        raise OutputError(
            f"saving the checkpoint of step {state.step} failed ({exc.strerror or exc}); {kept}; "
            f"free space and rerun with train.resume=latest"
        ) from None
    accelerator.wait_for_everyone()
    return final


def resume(accelerator, resume: str | None, run_dir: Path) -> Path | None:
    """Load the newest checkpoint ``resume`` names that loads (``latest``: of ``run_dir``) into
    every object registered with ``accelerator``; the checkpoint, or None for a fresh start."""
    failures = []
    for candidate in ckpt.resume_candidates(resume, run_dir):
        try:
            accelerator.load_state(str(candidate / "state"))
        except Exception as exc:  # every registered object is loaded again from the next candidate
            failures.append(f"{candidate.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            logger.warning("checkpoint %s cannot be loaded (%s); trying the previous one", candidate, failures[-1])
            if resume != "latest":
                break
            continue
        return candidate
    if failures:
        raise TrainingError(f"no checkpoint of {run_dir} can be loaded ({'; '.join(failures)})")
    if resume == "latest":
        logger.warning("train.resume=latest: %s holds no checkpoint yet; starting from step 0", run_dir)
    return None
