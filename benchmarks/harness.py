"""What every benchmark script sets up before its imports: the repository on the import path (so
``nlp_ssl`` and ``benchmarks.*`` come from this checkout, installed or not), offline defaults
(the shared data folder, no Hub calls, no tokenizer threads beside torch's), and a timer.

    from harness import REPO, timed  # first: the imports after it rely on the path
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NLP_SSL_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed(fn):
    """``fn()``'s result and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
