"""What every benchmark script sets up before its imports: the repository on the import path (so
``nlp_ssl`` and ``benchmarks.*`` come from this checkout, installed or not), offline defaults
(the shared data folder, no Hub calls, no tokenizer threads beside torch's), a timer, and
repeated timings of several sides.

    from harness import REPO, timed  # first: the imports after it rely on the path
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NLP_SSL_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def flag(value: str) -> bool:
    """An argparse ``type`` for true/false options: ``--option true`` / ``--option false``."""
    return value.lower() in ("1", "true", "yes")


def timed(fn):
    """``fn()``'s result and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def interleaved(sides: dict[str, Callable[[], dict]], repeats: int) -> dict[str, dict]:
    """Each side called ``repeats`` times, the sides taking turns so that drift in machine load
    hits every side alike: per side, the scores its first call returned, its ``seconds`` and
    their ``median_seconds``. Every call is logged to stderr as it ends."""
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for name, call in sides.items():
            scores, seconds = timed(call)
            if {"seconds", "median_seconds"} & scores.keys():
                raise ValueError(f"side {name!r}: its scores may not be named 'seconds' or 'median_seconds'")
            results.setdefault(name, {**scores, "seconds": []})["seconds"].append(seconds)
            print(json.dumps({"side": name, **scores, "seconds": round(seconds, 3)}), file=sys.stderr, flush=True)
    for result in results.values():
        result["median_seconds"] = statistics.median(result["seconds"])
    return results
