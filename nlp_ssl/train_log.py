"""A run's ``train_log.jsonl``: one JSON object per logged step, ``{"step": n, "<name>": value}``.

It is written by the main process beside any tracker (TensorBoard, ...), so that tests,
benchmarks and reports read a run's curves without a tracker installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from nlp_ssl.config import to_dict

LOG_FILE = "train_log.jsonl"


def log(accelerator, run_dir: Path, step: int, values: dict, tracker: str) -> None:
    """Send ``values`` to the tracker (unless ``none``) and append them to the log file."""
    if tracker != "none":
        accelerator.log(values, step=step)
    if accelerator.is_main_process:
        with open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **{k: plain(v) for k, v in values.items()}}) + "\n")


def start(accelerator, run_dir: Path, step: int, tracker: str, hparams) -> None:
    """Open a run's curves at ``step`` (0, or where a resume starts): drop log lines the
    interrupted run wrote past it, and start the tracker with the run's hyperparameters."""
    truncate_log(Path(run_dir) / LOG_FILE, step, accelerator.is_main_process)
    if tracker != "none":
        accelerator.init_trackers("nlp_ssl", config=flat_hparams(hparams or {}))


def truncate_log(path: Path, step: int, is_main: bool) -> None:
    """After a resume, drop log lines from steps the interrupted run did past its checkpoint."""
    if not is_main or not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_log(run_dir: Path) -> list[dict]:
    """Every record of a run's log, in order ([] when there is none)."""
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plain(value):
    """A JSON-ready Python scalar for a tensor or numpy scalar; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def flat_hparams(d: dict, prefix: str = "") -> dict:
    """A nested config as ``{"a.b": value}``: TensorBoard's hparams accept scalars and strings only."""
    out = {}
    for k, v in to_dict(d).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out
