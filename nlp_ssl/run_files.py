"""The files every stage's output folder holds, and writing files so that a reader never sees
half of one.

Every stage's ``output_dir`` holds, beside what the stage produces:
``resolved_config.yaml`` (the recipe after overrides and defaults), ``run_info.json``
(stage, seed, library versions, command line, start/finish timestamps) and
``metrics.json`` (a flat mapping of the figures the stage measured). ``metrics.json`` is
written last: its presence marks a finished run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from nlp_ssl.config import dump_yaml
from nlp_ssl.progress import launched

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
