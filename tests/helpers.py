"""Helpers shared by the tests: tiny corpora and file writers."""

import json
import os
import random
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ["NLP_SSL_DATA_DIR"].split(os.pathsep)[0])

WORDS = (
    "the a movie film story actor scene plot great bad good boring brilliant awful slow fast "
    "music camera director love hate funny sad long short script ending character dialogue"
).split()


def make_sentences(n: int, seed: int = 0, words=WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + "." for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def needs_shared_data(name: str):
    return pytest.mark.skipif(not (SHARED_DATA / name).is_dir(), reason=f"{SHARED_DATA / name} not present")
