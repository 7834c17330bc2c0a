"""The output-directory contract every stage keeps, and atomic writes.

Every stage's ``output_dir`` holds, beside what the stage produces:
``resolved_config.yaml`` (the recipe after overrides and defaults), ``run_info.json``
(stage, seed, library versions, command line, start/finish timestamps) and
``metrics.json`` (a flat mapping of the figures the stage measured). ``metrics.json`` is
written last: its presence marks a finished run, which is never replaced without
``--overwrite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
    fcntl = None

from nlp_ssl.config import dump_yaml
from nlp_ssl.data import DatasetSpec, expand_files
from nlp_ssl.errors import NlpSslError, OutputError
from nlp_ssl.progress import launched

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


INPUT_KEYS = ("tokenizer", "init", "init_decoder", "init_embeddings", "checkpoint")
"""Recipe keys that name a local folder a command reads."""


def output_path(path, what: str = "output_dir") -> Path:
    """An output folder as the run will use it: absolute, ``~`` expanded, symlinks resolved
    (so two spellings of one folder share its lock and its overlap checks). An empty path is
    refused: ``Path("")`` is the working directory."""
    if not str(path).strip():
        raise OutputError(f"{what} is empty; an empty path would be the working directory: give the folder to write")
    return Path(path).expanduser().resolve()


def output_kind(path: Path) -> str | None:
    """What nlp-ssl wrote ``path`` as (the stage in ``run_info.json``; ``export`` for an
    exported model folder; ``pretrain`` / ``finetune`` for a training run interrupted before
    its run files), or None for a folder nlp-ssl did not write."""
    import yaml

    path = Path(path)
    try:
        stage = json.loads((path / RUN_INFO_FILE).read_text(encoding="utf-8")).get("stage")
        if isinstance(stage, str):
            return stage
    except (OSError, ValueError, AttributeError):
        pass
    try:
        recipe = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
        if isinstance(recipe, dict) and isinstance(recipe.get("train"), dict) and "output_dir" in recipe:
            if "objective" in recipe:
                return "pretrain"
            if "task" in recipe:
                return "finetune"
    except (OSError, ValueError, yaml.YAMLError):
        pass
    try:
        card = (path / "README.md").read_text(encoding="utf-8")
        front = yaml.safe_load(card.split("---")[1]) if card.startswith("---") else None
        tags = front.get("tags") if isinstance(front, dict) else None
        if isinstance(tags, list) and "nlp-ssl" in tags and (path / "config.json").is_file():
            return "export"
    except (OSError, ValueError, IndexError, TypeError, yaml.YAMLError):
        pass
    return None


def _repository() -> Path | None:
    """The source tree nlp-ssl runs from, when it runs from one (an editable install)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def refuse_replacing(out: Path, kind: str) -> None:
    """``--overwrite`` replaces only what nlp-ssl wrote as the same kind of output: never the
    working directory or a folder around it, the home folder, a filesystem root, a repository,
    or a folder of anyone else's (or another stage's) files."""
    why = not_replaceable(out, kind)
    if why is not None:
        what, removable = why
        raise OutputError(
            f"--overwrite will not replace {output_path(out)}: it is {what}; choose a new folder for the output"
            + (", or remove this one yourself if it is truly not needed" if removable else "")
        )


def not_replaceable(out: Path, kind: str) -> tuple[str, bool] | None:
    """Why folder ``out`` is not one a ``kind`` command may replace (``"the working
    directory"``, ...) and whether removing it by hand could be right (not for a place such as
    the home folder); None when it may be replaced (or is empty, or absent)."""
    out = output_path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    cwd, home, repo = Path.cwd().resolve(), Path.home().resolve(), _repository()
    if out.parent == out:
        return "a filesystem root", False
    if out == home or out in home.parents:
        return ("your home folder" if out == home else f"a folder that contains your home folder {home}"), False
    if out == cwd or out in cwd.parents:
        where = "the working directory" if out == cwd else f"a folder that contains the working directory {cwd}"
        return where, False
    if (out / ".git").exists() or (repo is not None and (out == repo or out in repo.parents)):
        return "a source repository", False
    found = output_kind(out)
    if found is None:
        return "not an nlp-ssl output (it holds files nlp-ssl did not write)", True
    if found != kind:
        return f"an nlp-ssl {found} output, not {_an(kind)} {kind} one", True
    inner = _inner_output(out)
    if inner is not None:
        return f"{_an(kind)} {kind} output that holds another output, {inner}", True
    return None


_OWN_FOLDERS = ("model", "checkpoints", "best_model", "logs")
"""What a run folder holds of its own; another output stored anywhere else inside it is not its."""


def _inner_output(out: Path) -> Path | None:
    for marker in (RUN_INFO_FILE, METRICS_FILE):
        for found in out.rglob(marker):
            inside = found.parent.relative_to(out)
            if inside.parts and inside.parts[0] not in _OWN_FOLDERS:
                return found.parent
    return None


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


RUN_DIR_FILES = ("run_info.json", "results.json", "study.json", "report.md", "report.html", "plots", "cache", "logs")
"""What a pipeline or study writes into its run folder beside its stage folders."""
_STAGE_FOLDER = re.compile(r"tokenizer|(pretrain|finetune|baseline)-[A-Za-z0-9][A-Za-z0-9._-]*")
_LEFTOVER = re.compile(r"\..+\.(lock|overwrite|partial(-\w+)?|old-\d+|trash-\d+)")


def check_run_dir(run_dir: Path, kind: str) -> None:
    """A pipeline or study writes its stages into ``run_dir``, replacing a stage whose recipe
    changed: it must be empty, or one this kind of command wrote (its ``run_info.json``, or,
    for folders from before that file, nothing but stage folders of nlp-ssl outputs and the
    results). Anything else is someone's folder."""
    run_dir = output_path(run_dir, "run_dir")
    check_writable(run_dir)
    if not run_dir.is_dir() or output_kind(run_dir) == kind:
        return
    foreign = []
    for entry in sorted(run_dir.iterdir()):
        if _LEFTOVER.fullmatch(entry.name) or entry.name in RUN_DIR_FILES:
            continue
        if not (entry.is_dir() and _STAGE_FOLDER.fullmatch(entry.name) and output_kind(entry) is not None):
            foreign.append(entry.name)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"run_dir {run_dir} holds files no nlp-ssl {kind} wrote ({shown}), which its stages could replace; "
            "choose a new or empty folder"
        )


def mark_run_dir(run_dir: Path, kind: str) -> None:
    """Record that ``run_dir`` is a ``kind`` (pipeline, study) run folder, before any stage runs."""
    run_dir = output_path(run_dir, "run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    info = run_dir / RUN_INFO_FILE
    if not info.is_file():
        write_json(info, {"stage": kind, "started_at": now(), "command": sys.argv, "versions": library_versions()})


def config_inputs(cfg) -> dict[str, Path]:
    """Every local path a recipe reads, by key: checkpoints and tokenizers (``INPUT_KEYS``)
    and the files or folder of each dataset, at any depth of the recipe. A path that does not
    exist is left to the stage, whose error says what is missing."""
    found: dict[str, Path] = {}

    def add(key: str, value: str) -> None:
        if value and not value.startswith("pkg:") and os.path.exists(os.path.expanduser(value)):
            found[key] = Path(value).expanduser().resolve()

    def walk(node, where: str) -> None:
        if isinstance(node, DatasetSpec):
            if node.name is not None:
                add(f"{where}name", node.name)
                return
            try:
                files = expand_files(node)
            except NlpSslError:
                return
            for i, path in enumerate(files):
                add(f"{where}files" + (f"[{i}]" if len(files) > 1 else ""), path)
        elif dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                value, key = getattr(node, f.name), f"{where}{f.name}"
                if f.name in INPUT_KEYS and isinstance(value, str):
                    add(key, value)
                else:
                    walk(value, key + ".")
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, f"{where.rstrip('.')}[{i}].")

    walk(cfg, "")
    return found


def refuse_overlap(out: Path, inputs: dict[str, Path]) -> None:
    """An output folder must be apart from everything the command reads: ``--overwrite`` (or
    the run itself) would otherwise replace the command's own input."""
    out = output_path(out)
    for key, path in inputs.items():
        if out == path or out in path.parents:
            raise OutputError(
                f"output_dir {out} {'is' if out == path else 'contains'} {key} {path}, which this "
                "command reads; choose an output folder apart from its inputs"
            )
        if path in out.parents:
            raise OutputError(
                f"output_dir {out} is inside {key} {path}, which this command reads; choose an "
                "output folder apart from its inputs"
            )


def is_finished(path: Path) -> bool:
    return (Path(path) / METRICS_FILE).is_file()


def check_output_dir(path: Path, overwrite: bool, inputs: dict[str, Path] | None = None, *, kind: str) -> None:
    """Refuse to start a run whose output would replace something the user has (``kind``:
    what the command writes, the only kind of output ``--overwrite`` may replace)."""
    path = output_path(path)
    refuse_overlap(path, inputs or {})
    if overwrite:
        refuse_replacing(path, kind)
    check_writable(path)
    if overwrite or not path.exists() or not any(path.iterdir()):
        return
    refuse_without_overwrite(path, kind)


def refuse_without_overwrite(path: Path, kind: str) -> None:
    """What to say of a folder that is there and not empty, when ``--overwrite`` was not given:
    pass it, or, where it would refuse too, choose another folder."""
    why = not_replaceable(path, kind)
    if why is not None:
        raise OutputError(
            f"output_dir {path} exists and is not empty, and it is {why[0]}; choose a new or empty folder"
        )
    if is_finished(path):
        raise OutputError(f"output_dir {path} holds a finished run ({METRICS_FILE}); pass --overwrite to replace it")
    raise OutputError(f"output_dir {path} exists and is not empty; pass --overwrite to replace it")


def check_writable(out: Path) -> None:
    """An output folder that cannot be one (a file, under a file, in a folder we may not write)
    is a one-line error before any work."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output_dir {out} is a file, not a folder; choose another output_dir")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"output_dir {out} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output_dir {out} cannot be written: no write permission in {parent}")


RESUME_MAY_CHANGE = (
    "output_dir",
    "train.resume",
    "train.tracker",
    "train.log_every",
    "train.save_every",
    "train.keep_last",
    "train.max_steps",
    "train.epochs",
    "train.eval_every",
    "train.eval_batch_size",
    "train.eval_max_batches",
    "train.peak_flops",
    "train.compile",
    "train.gradient_checkpointing",
    "train.workers",
    "data.cache_dir",
    "data.num_proc",
    "data.test",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "hub_checkpoint_branch",
)
"""Recipe keys a resumed run may change: where it writes, logs and pushes, how it computes
(compilation, checkpointing of activations, workers), when and on how much it evaluates, and
how long it trains (a longer run continues the same schedule, resized); a run folder may also
be moved before it is resumed."""


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


def refuse_changed_resume(out: Path, config, resume: str, overwrite: bool) -> None:
    """A resume continues the checkpoint's optimizer, schedule and data order: a recipe that
    changes them (``train.lr=...`` beside ``train.resume=latest``) would be recorded but not
    applied. Refuse it, naming each key that differs."""
    import yaml

    from nlp_ssl.config import recipe_changes

    # a checkpoint path is <run>/checkpoints/step-N
    run = work_dir(out, overwrite) if resume == "latest" else Path(resume).expanduser().resolve().parent.parent
    saved = run / CONFIG_FILE
    if not saved.is_file() or not (run / "checkpoints").is_dir():
        return
    try:
        recipe = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return  # not ours to judge; loading the checkpoint says what is wrong
    changes = recipe_changes(recipe if isinstance(recipe, dict) else {}, config, RESUME_MAY_CHANGE)
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise OutputError(
            f"train.resume={resume}: the recipe differs from the one {run} was started with ({shown}); "
            "a resumed run continues its own optimizer, schedule and data, so undo the change, or "
            + ("start afresh without train.resume" if overwrite else "start afresh with --overwrite")
        )


def work_dir(out: Path, overwrite: bool) -> Path:
    """Where a training run writes: ``out``, or, when ``--overwrite`` replaces something that
    is there, a hidden sibling that takes ``out``'s place only once the new run has finished
    (``commit_run_dir``): until then the old run stays whole, whatever happens to the new one."""
    out = Path(out)
    if overwrite and out.exists() and (not out.is_dir() or any(out.iterdir())):
        return out.with_name(f".{out.name}.overwrite")
    return out


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
    lock = path.parent / f".{path.name}.lock"
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
        _clear_leftovers(path)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held, so nobody can lock the file being removed
        os.close(fd)


def _clear_leftovers(path: Path) -> None:
    """Tidy what a run killed while writing ``path`` left beside it: its staging folders
    (``.<name>.partial-*``), folders being deleted (``.<name>.trash-*``) and, when the kill fell
    between moving a finished output aside (``.<name>.old-<pid>``, whole until it is renamed to
    trash) and moving its replacement in, that output, which is put back. Only in a
    single-process run: in a launched one the other processes stage their own output without
    this lock, so what lies there may be alive. Best effort: a leftover that cannot be removed
    is reported and left."""
    if launched().world_size > 1:
        return
    name = re.escape(path.name)
    kinds = {
        kind: re.compile(rf"\.{name}\.{pattern}")
        for kind, pattern in (("partial", r"partial-[A-Za-z0-9_]+"), ("trash", r"trash-\d+"), ("old", r"old-\d+"))
    }
    found = {kind: [] for kind in kinds}
    for entry in path.parent.iterdir():
        for kind, pattern in kinds.items():
            if pattern.fullmatch(entry.name):
                found[kind].append(entry)
    if found["old"] and not os.path.lexists(path):
        if len(found["old"]) > 1:
            logger.warning(
                "output_dir %s is missing and several moved-aside outputs lie beside it (%s); leaving "
                "them for you to choose",
                path,
                ", ".join(sorted(p.name for p in found["old"])),
            )
            found["old"] = []
        else:
            try:
                os.replace(found["old"].pop(), path)
                logger.warning("output_dir %s: put back the previous output, which a killed run had moved aside", path)
            except OSError as exc:
                logger.warning("output_dir %s: could not put back the output a killed run moved aside (%s)", path, exc)
    for stale in found["partial"] + found["trash"] + found["old"]:
        logger.info("output_dir %s: removing %s, left by a killed run", path, stale.name)
        try:
            _remove(stale)
        except OSError as exc:
            logger.warning("output_dir %s: could not remove %s (%s)", path, stale.name, exc)


def _remove(path: Path, ignore_errors: bool = False) -> None:
    """Delete a folder (not one a symlink points to) or a file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)


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
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the final folder should look like any other
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``, replacing any existing one atomically enough
    that ``target`` is always either the old or the new complete directory."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        # renamed first, so a .old-* folder is only ever a whole one (see _clear_leftovers)
        trash = target.with_name(f".{target.name}.trash-{os.getpid()}")
        os.replace(old, trash)
        _remove(trash, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temp file and rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, records) -> None:
    """One JSON object per line, written through a temp file and renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_run_files(directory: Path, *, stage: str, config, seed: int, started_at: str, metrics: dict) -> None:
    """Write the contract files; ``metrics.json`` last, as the finished marker."""
    directory = Path(directory)
    write_text(directory / CONFIG_FILE, dump_yaml(config))
    write_json(
        directory / RUN_INFO_FILE,
        {
            "stage": stage,
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
