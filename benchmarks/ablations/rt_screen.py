"""What the rotten_tomatoes screens share: the repository on the import path, offline defaults,
and the ``data`` section their baseline configs read (the sentiment studies' splits)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NLP_SSL_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = {
    "train": {"name": "rotten_tomatoes", "split": "train"},
    "validation": {"name": "rotten_tomatoes", "split": "validation"},
    "test": {"name": "rotten_tomatoes", "split": "test"},
    "labels": ["negative", "positive"],
    "max_length": 64,
}
