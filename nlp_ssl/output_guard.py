"""What an output folder may be: apart from the command's inputs, writable, and replaced only
when it is an nlp-ssl output of the kind the command writes (never someone's folder, the
working directory, the home folder, a root or a repository); a resume only with the recipe its
run was started with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from nlp_ssl.data import DatasetSpec, expand_files
from nlp_ssl.errors import NlpSslError, OutputError
from nlp_ssl.run_files import CONFIG_FILE, METRICS_FILE, OVERWRITE, RUN_INFO_FILE, is_finished, sibling, sibling_of

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
    """Another output inside ``out``: searched outside its own folders (checkpoints hold many files)."""
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in _OWN_FOLDERS):
        for marker in (RUN_INFO_FILE, METRICS_FILE):
            found = next(folder.rglob(marker), None)
            if found is not None:
                return found.parent
    return None


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


RUN_DIR_FILES = ("run_info.json", "results.json", "study.json", "report.md", "report.html", "plots", "cache", "logs")
"""What a pipeline or study writes into its run folder beside its stage folders."""


_STAGE_FOLDER = re.compile(r"tokenizer|(pretrain|finetune|baseline)-[A-Za-z0-9][A-Za-z0-9._-]*")


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
        if sibling_of(entry.name) is not None or entry.name in RUN_DIR_FILES:  # its locks and leftovers
            continue
        if not (entry.is_dir() and _STAGE_FOLDER.fullmatch(entry.name) and output_kind(entry) is not None):
            foreign.append(entry.name)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"run_dir {run_dir} holds files no nlp-ssl {kind} wrote ({shown}), which its stages could replace; "
            "choose a new or empty folder"
        )


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


def refuse_changed_resume(out: Path, config, resume: str, overwrite: bool) -> None:
    """A resume continues the checkpoint's optimizer, schedule and data order: a recipe that
    changes them (``train.lr=...`` beside ``train.resume=latest``) would be recorded but not
    applied. Refuse it, naming each key that differs."""
    import yaml

    from nlp_ssl.config import recipe_changes
    from nlp_ssl.run_files import saved_format

    # a checkpoint path is <run>/checkpoints/step-N
    run = work_dir(out, overwrite) if resume == "latest" else Path(resume).expanduser().resolve().parent.parent
    saved = run / CONFIG_FILE
    if not saved.is_file() or not (run / "checkpoints").is_dir():
        return
    try:
        recipe = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return  # not ours to judge; loading the checkpoint says what is wrong
    changes = recipe_changes(recipe if isinstance(recipe, dict) else {}, config, RESUME_MAY_CHANGE, saved_format(run))
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
        return sibling(out, OVERWRITE)
    return out
