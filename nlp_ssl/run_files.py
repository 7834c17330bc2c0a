"""The files every stage's output folder holds, and writing files so that a reader never sees
half of one.

Every stage's ``output_dir`` holds, beside what the stage produces:
``resolved_config.yaml`` (the recipe after overrides and defaults), ``run_info.json``
(stage, seed, library versions, command line, start/finish timestamps) and
``metrics.json`` (a flat mapping of the figures the stage measured). ``metrics.json`` is
written last: its presence marks a finished run.

Every file or folder is written beside its place under a hidden name and renamed into it
(``atomic_file``, ``atomic_dir``, ``replace_dir``); ``sibling`` spells every such name and
``sibling_of`` recognises them, so what ``clear_leftovers`` tidies and what
``output_guard.check_run_dir`` takes for nlp-ssl's own are the names the writers make.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from nlp_ssl.config import dump_yaml
from nlp_ssl.progress import launched
from nlp_ssl.run_format import FORMAT

logger = logging.getLogger(__name__)

CONFIG_FILE = "resolved_config.yaml"


RUN_INFO_FILE = "run_info.json"


METRICS_FILE = "metrics.json"


PREDICTIONS_FILE = "predictions.jsonl"


MODEL_DIR = "model"
"""The run's final model folder (``from_pretrained`` loads it)."""


_LIBRARIES = (
    "nlp-ssl",
    "torch",
    "transformers",
    "datasets",
    "tokenizers",
    "accelerate",
    "evaluate",
    "huggingface_hub",
)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware() -> str:
    """What the run ran on, in words (for run_info.json and model cards)."""
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return f"{len(names)} x {names[0]}"
    except ImportError:
        pass
    cpu = platform.processor() or platform.machine()
    return f"CPU only, {os.cpu_count()} cores ({cpu})"


def is_finished(path: Path) -> bool:
    return (Path(path) / METRICS_FILE).is_file()


def _remove(path: Path, ignore_errors: bool = False) -> None:
    """Delete a folder (not one a symlink points to) or a file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)


PARTIAL, OLD, TRASH, LOCK, OVERWRITE = "partial", "old", "trash", "lock", "overwrite"
"""The states of the hidden names nlp-ssl keeps beside a file or folder ``<name>``:
``.<name>.partial[-<token>]`` being written, ``.<name>.old-<pid>`` a finished folder moved
aside by ``replace_dir`` (whole), ``.<name>.trash-<pid>`` one being deleted,
``.<name>.lock`` (``outputs.run_lock``) and ``.<name>.overwrite`` (``output_guard.work_dir``)."""

_TOKEN = {
    # a fixed name (every process of a launched run can compute it) or one per writer
    PARTIAL: r"(?:-[A-Za-z0-9_]+)?",
    OLD: r"-\d+",
    TRASH: r"-\d+",
    LOCK: "",
    OVERWRITE: "",
}

# the target is the longest prefix: a token never holds a dot, so ".a.partial-b.partial-c" is
# the staging folder of "a.partial-b", not a leftover of "a"
_SIBLING = re.compile(r"\.(.+)\.(" + "|".join(state + token for state, token in _TOKEN.items()) + ")", re.DOTALL)


class Sibling(NamedTuple):
    target: str
    state: str


def sibling(target: Path, state: str, token: str | None = None) -> Path:
    """The hidden name beside ``target`` for ``state`` (see ``PARTIAL``), ``.<name>.<state>``
    or ``.<name>.<state>-<token>``."""
    target = Path(target)
    path = target.with_name(f".{target.name}.{state}" + ("" if token is None else f"-{token}"))
    if sibling_of(path.name) != (target.name, state):  # what is made here, sibling_of must know
        raise ValueError(f"{path.name!r} is not a name sibling_of reads as {state} beside {target.name!r}")
    return path


def sibling_of(name: str) -> Sibling | None:
    """Which file or folder a hidden name made by ``sibling`` stands beside, and in which
    state; None for any other name."""
    found = _SIBLING.fullmatch(name)
    return None if found is None else Sibling(found[1], found[2].split("-", 1)[0])


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A path beside ``path`` to write the file at, renamed over ``path`` when the block
    succeeds and removed when it raises: readers never see half a file."""
    path = Path(path)
    # one name per process: two processes writing the same file (ranks filling one cache)
    # must not write into each other's
    tmp = sibling(path, PARTIAL, str(os.getpid()))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path, *, unique: bool = False) -> Iterator[Path]:
    """A new empty folder beside ``target`` to build it in, put in its place with
    ``replace_dir`` when the block succeeds and removed when it raises.

    By default the folder has a fixed name, ``.<name>.partial``, and one a killed writer left
    is removed first: for a folder only one process writes at a time. ``unique`` gives each
    writer its own name instead, which only ``clear_leftovers`` removes."""
    target = Path(target)
    if unique:
        while True:
            staging = sibling(target, PARTIAL, secrets.token_hex(4))
            try:
                staging.mkdir()  # the umask applies, as to any folder of the user's
                break
            except FileExistsError:
                continue
    else:
        staging = sibling(target, PARTIAL)
        _remove(staging)
        staging.mkdir()
    try:
        yield staging
    except BaseException:
        _remove(staging, ignore_errors=True)
        raise
    # outside the try: a failed rename must not delete the finished folder
    replace_dir(staging, target)


def replace_dir(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``, replacing any existing one atomically enough
    that ``target`` is always either the old or the new complete directory."""
    old = None
    if target.exists():
        old = sibling(target, OLD, str(os.getpid()))
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        # renamed first, so an OLD folder is only ever a whole one (see clear_leftovers)
        trash = sibling(target, TRASH, str(os.getpid()))
        os.replace(old, trash)
        _remove(trash, ignore_errors=True)


def clear_leftovers(path: Path) -> None:
    """Tidy what a run killed while writing ``path`` left beside it: what it was writing
    (``.<name>.partial*``), folders being deleted (``.<name>.trash-*``) and, when the kill fell
    between moving a finished output aside (``.<name>.old-<pid>``, whole until it is renamed to
    trash) and moving its replacement in, that output, which is put back. For the holder of
    ``path``'s lock, and only in a single-process run: in a launched one the other processes
    stage their own output without this lock, so what lies there may be alive. Best effort: a
    leftover that cannot be removed is reported and left."""
    if launched().world_size > 1:
        return
    found = {PARTIAL: [], TRASH: [], OLD: []}
    for entry in path.parent.iterdir():
        leftover = sibling_of(entry.name)
        if leftover is not None and leftover.target == path.name and leftover.state in found:
            found[leftover.state].append(entry)
    if found[OLD] and not os.path.lexists(path):
        if len(found[OLD]) > 1:
            logger.warning(
                "output_dir %s is missing and several moved-aside outputs lie beside it (%s); leaving "
                "them for you to choose",
                path,
                ", ".join(sorted(p.name for p in found[OLD])),
            )
            found[OLD] = []
        else:
            try:
                os.replace(found[OLD].pop(), path)
                logger.warning("output_dir %s: put back the previous output, which a killed run had moved aside", path)
            except OSError as exc:
                logger.warning("output_dir %s: could not put back the output a killed run moved aside (%s)", path, exc)
    for stale in found[PARTIAL] + found[TRASH] + found[OLD]:
        logger.info("output_dir %s: removing %s, left by a killed run", path, stale.name)
        try:
            _remove(stale)
        except OSError as exc:
            logger.warning("output_dir %s: could not remove %s (%s)", path, stale.name, exc)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through ``atomic_file``, so readers never see half a file."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_jsonl(path: Path, records) -> None:
    """One JSON object per line, written through ``atomic_file``."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_run_files(directory: Path, *, stage: str, config, seed: int, started_at: str, metrics: dict) -> None:
    """Write the contract files; ``metrics.json`` last, as the finished marker."""
    directory = Path(directory)
    write_text(directory / CONFIG_FILE, dump_yaml(config))
    write_json(
        directory / RUN_INFO_FILE,
        {
            "stage": stage,
            "format": FORMAT,
            "seed": seed,
            "started_at": started_at,
            "finished_at": now(),
            "command": sys.argv,
            "processes": launched().world_size,
            "platform": platform.platform(),
            "hardware": hardware(),
            "versions": library_versions(),
        },
    )
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    if len(flat) != len(metrics):
        bad = sorted(set(metrics) - set(flat))
        raise ValueError(f"metrics must be flat scalars; not scalar: {bad}")
    write_json(directory / METRICS_FILE, flat)


def read_metrics(directory: Path) -> dict:
    return json.loads((Path(directory) / METRICS_FILE).read_text(encoding="utf-8"))


def saved_format(run_dir: Path) -> int:
    """The format (``nlp_ssl.run_format``) of the run in ``run_dir``: its ``run_info.json``'s,
    or for a run interrupted before it, its newest checkpoint's; 0 when neither says."""
    from nlp_ssl.checkpoint import CHECKPOINTS, STATE_FILE

    candidates = [Path(run_dir) / RUN_INFO_FILE]
    candidates += sorted((Path(run_dir) / CHECKPOINTS).glob(f"step-*/{STATE_FILE}"), reverse=True)[:1]
    for path in candidates:
        try:
            found = json.loads(path.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, int):
            return found
    return 0
