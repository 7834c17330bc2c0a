"""Checkpoints: atomic save, discovery of the newest complete one, pruning.

Layout of ``<run>/checkpoints/step-00000100/``:
``state/`` (``Accelerator.save_state``: model, optimizer, scheduler, RNG, train state),
``model/`` (``save_pretrained`` model + tokenizer, loadable with ``AutoModelFor*``) and
``trainer_state.json`` and ``manifest.json`` (size and sha256 of every other file). A
checkpoint is written under a hidden temporary name and renamed into place once complete, so
discovery never sees a half-written one; the manifest catches one damaged later (a truncated
copy, a bad disk), and resuming then falls back to the previous intact checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from nlp_ssl.errors import DataError
from nlp_ssl.run_files import PARTIAL, sibling, sibling_of
from nlp_ssl.run_format import checkpoint_has_manifest

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
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


def resume_candidates(resume: str | None, run_dir: Path) -> Iterator[Path]:
    """The checkpoints to try resuming from, best first: for ``latest``, every complete one of
    ``run_dir`` whose files match its manifest, newest first (a damaged one is skipped with a
    warning naming it); for a path, that checkpoint (damage there is an error)."""
    if resume is None:
        return
    if resume == "latest":
        for path in reversed(list_checkpoints(run_dir)):
            problem = verify(path)
            if problem is None:
                yield path
            else:
                logger.warning("checkpoint %s is damaged (%s); trying the previous one", path, problem)
        return
    path = Path(resume)
    if not (path / STATE_FILE).is_file() or not (path / "state").is_dir():
        raise DataError(f"resume: {path} is not a complete checkpoint (no {STATE_FILE} or state/)")
    problem = verify(path)
    if problem is not None:
        raise DataError(f"resume: checkpoint {path} is damaged ({problem})")
    yield path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record size and sha256 of every file of a fully written checkpoint."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True), encoding="utf-8")


def verify(folder: Path) -> str | None:
    """What is wrong with a checkpoint's files, or None when they match its manifest."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        try:
            state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{STATE_FILE} is unreadable"
        return f"{MANIFEST} is missing" if isinstance(state, dict) and checkpoint_has_manifest(state) else None
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return f"{MANIFEST} is unreadable"
    for name, entry in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {entry['size']}"
        if _sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def read_trainer_state(path: Path) -> dict:
    try:
        return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path / STATE_FILE}: unreadable checkpoint state ({exc})") from None


def staging_path(run_dir: Path, step: int) -> Path:
    """Where every process writes the checkpoint of ``step``: one fixed name (no process id),
    so that all processes of a launched run write into the same folder."""
    return sibling(Path(run_dir) / CHECKPOINTS / checkpoint_name(step), PARTIAL)


def commit(staging: Path, keep_last: int) -> Path:
    """Rename a fully written checkpoint into place and prune old ones (main process only)."""
    final = staging.with_name(sibling_of(staging.name).target)
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
        for p in root.iterdir():
            found = sibling_of(p.name)
            if found is not None and found.state == PARTIAL and _NAME.match(found.target):
                logger.warning("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)
