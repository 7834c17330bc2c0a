"""The output-directory contract every stage keeps: a run folder checked before any work,
written under a lock, replaced only once the new output is complete. The files it holds and
the atomic writes are in ``run_files``; what may be replaced, in ``output_guard``; both are
re-exported here, where the stages import them from.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
    fcntl = None

from nlp_ssl.config import dump_yaml
from nlp_ssl.errors import OutputError
from nlp_ssl.output_guard import (  # noqa: F401  (re-exported)
    INPUT_KEYS,
    RESUME_MAY_CHANGE,
    RUN_DIR_FILES,
    _an,
    check_output_dir,
    check_run_dir,
    check_writable,
    config_inputs,
    not_replaceable,
    output_kind,
    output_path,
    refuse_changed_resume,
    refuse_overlap,
    refuse_replacing,
    refuse_without_overwrite,
    work_dir,
)
from nlp_ssl.progress import launched
from nlp_ssl.run_files import (  # noqa: F401  (re-exported)
    CONFIG_FILE,
    LOCK,
    METRICS_FILE,
    MODEL_DIR,
    PREDICTIONS_FILE,
    RUN_INFO_FILE,
    atomic_dir,
    atomic_file,
    clear_leftovers,
    hardware,
    is_finished,
    library_versions,
    now,
    read_metrics,
    replace_dir,
    sibling,
    sibling_of,
    write_json,
    write_jsonl,
    write_run_files,
    write_text,
)
from nlp_ssl.run_format import FORMAT


def mark_run_dir(run_dir: Path, kind: str) -> None:
    """Record that ``run_dir`` is a ``kind`` (pipeline, study) run folder, before any stage runs."""
    run_dir = output_path(run_dir, "run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    info = run_dir / RUN_INFO_FILE
    if not info.is_file():
        write_json(
            info,
            {"stage": kind, "format": FORMAT, "started_at": now(), "command": sys.argv, "versions": library_versions()},
        )


def prepare_run_dir(out: Path, resume: str | None, overwrite: bool, *, kind: str, config=None) -> None:
    """Refuse to clobber a training run's folder; allow continuing an interrupted run only
    when asked to resume, and only with the recipe it was started with (``config``).
    (``run_lock`` checks the folder too, but only on each node's first process: every
    process checks here.)"""
    check_writable(out)
    if resume is not None and resume != "latest":
        from nlp_ssl.checkpoint import STATE_FILE

        path = Path(resume).expanduser()
        if not (path / STATE_FILE).is_file() or not (path / "state").is_dir():
            raise OutputError(
                f"train.resume: {path} is not a complete checkpoint (no {STATE_FILE} or state/); "
                "give a checkpoints/step-* folder, or latest"
            )
    found = output_kind(out) if out.is_dir() and any(out.iterdir()) else None
    if found is not None and found != kind:  # said before any talk of resuming it
        if overwrite:
            refuse_replacing(out, kind)
        refuse_without_overwrite(out, kind)
    if config is not None and resume is not None:
        refuse_changed_resume(out, config, resume, overwrite)
    if not out.exists() or not any(out.iterdir()):
        return
    if overwrite:
        refuse_replacing(out, kind)
        return
    if is_finished(out) or not (out / CONFIG_FILE).exists():
        refuse_without_overwrite(out, kind)
    if resume is None:
        raise OutputError(
            f"output_dir {out} holds an unfinished run; set train.resume=latest to continue it or pass --overwrite"
        )


def open_run_dir(out: Path, config, overwrite: bool, accelerator=None, resume: str | None = None) -> Path:
    """Create the folder a training run writes (``work_dir``) holding its
    ``resolved_config.yaml``; every process waits for it. A replacement interrupted earlier is
    continued with ``resume`` and discarded without it."""
    work = work_dir(out, overwrite)
    _barrier(accelerator)
    if accelerator is None or accelerator.is_main_process:
        if work != out and work.exists() and resume is None:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        write_text(work / CONFIG_FILE, dump_yaml(config))
    _barrier(accelerator)
    return work


def commit_run_dir(work: Path, out: Path, accelerator=None) -> None:
    """Put a finished replacement run (``work_dir``) in ``out``'s place."""
    _barrier(accelerator)
    if work != out and (accelerator is None or accelerator.is_main_process):
        replace_dir(work, out)
    _barrier(accelerator)


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on output folder ``path`` while a run writes it, so a second run
    pointed at the same folder refuses instead of interleaving its files with the first's.

    The lock is a hidden file beside the folder (it must outlive ``--overwrite`` emptying the
    folder), held with ``flock`` and removed when the run ends. The kernel releases the lock
    when the process ends, however it ends (kill -9 included): a file left by a killed run is
    not a lock and the next run takes it over. Only the first process on each node of a
    multi-process run takes it.
    """
    if fcntl is None or launched().local_rank != 0:
        yield
        return
    path = output_path(path)
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output_dir {path} cannot be created ({exc.strerror or exc})") from None
    lock = sibling(path, LOCK)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:  # a read-only or special file system: root passes os.access there
            raise OutputError(f"output_dir {path} cannot be written in {path.parent} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(
                f"output_dir {path} is in use by another nlp-ssl run ({holder}); wait for it to "
                "finish or choose another output_dir"
            ) from None
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}, since {now()}".encode(), 0)
        clear_leftovers(path)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held, so nobody can lock the file being removed
        os.close(fd)


def locks_output(attr: str = "output_dir"):
    """Decorate a stage's ``run(cfg, ...)`` to hold ``run_lock(cfg.<attr>)`` throughout, once
    the folder is known to be apart from every input of ``cfg``."""

    def decorate(run):
        @functools.wraps(run)
        def locked(cfg, *args, **kwargs):
            refuse_overlap(Path(getattr(cfg, attr)), config_inputs(cfg))
            with run_lock(Path(getattr(cfg, attr))):
                return run(cfg, *args, **kwargs)

        return locked

    return decorate


@contextlib.contextmanager
def staged_output(
    path: Path, overwrite: bool = False, inputs: dict[str, Path] | None = None, *, kind: str
) -> Iterator[Path]:
    """Build an output directory beside its final place and move it in only on success.

    A crash leaves the previous directory (if any) untouched and no half-written one
    under the final name. ``inputs`` (what the command reads) must lie apart from it.
    """
    path = output_path(path)
    check_output_dir(path, overwrite, inputs, kind=kind)
    with run_lock(path):
        check_output_dir(path, overwrite, inputs, kind=kind)  # again: another run may have finished it while we waited
        # a name of its own: in a launched run each process stages its own copy
        with atomic_dir(path, unique=True) as staging:
            yield staging
