"""Checkpoints: atomic save, discovery of the newest complete one, pruning.

Layout of ``<run>/checkpoints/step-00000100/``:
``state/`` (``Accelerator.save_state``: model, optimizer, scheduler, RNG, train state),
``model/`` (``save_pretrained`` model + tokenizer, loadable with ``AutoModelFor*``) and
``trainer_state.json``. A checkpoint is written under a hidden temporary name and renamed
into place once complete, so discovery never sees a half-written one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from nlp_ssl.errors import DataError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``latest`` -> the newest complete checkpoint of ``run_dir`` (or None); a path -> that path."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file() or not (path / "state").is_dir():
        raise DataError(f"resume: {path} is not a complete checkpoint (no {STATE_FILE} or state/)")
    return path


def read_trainer_state(path: Path) -> dict:
    try:
        return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path / STATE_FILE}: unreadable checkpoint state ({exc})") from None


def staging_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f".{checkpoint_name(step)}.partial"


def commit(staging: Path, keep_last: int) -> Path:
    """Rename a fully written checkpoint into place and prune old ones (main process only)."""
    final = staging.with_name(staging.name[1:].removesuffix(".partial"))
    if final.exists():  # the same step saved again (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    staging.rename(final)
    if keep_last > 0:
        for old in list_checkpoints(final.parent.parent)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def clean_partials(run_dir: Path) -> None:
    """Remove checkpoints a crash left half-written."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for p in root.glob(".step-*.partial"):
            logger.warning("removing incomplete checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)
