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


POSITIVE = "great good brilliant love funny".split()
NEGATIVE = "bad boring awful hate slow".split()
NEUTRAL = "the a movie film story actor scene plot music camera director script".split()


def make_reviews(n: int, seed: int = 0, labels=("negative", "positive")) -> list[dict]:
    """Labelled sentences a tiny model learns in seconds: the sentiment words decide the label
    (a ``neutral`` label, when asked for, has none)."""
    rng = random.Random(seed)
    cues = {"negative": NEGATIVE, "positive": POSITIVE, "neutral": []}
    rows = []
    for _ in range(n):
        label = rng.choice(labels)
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
        words += [rng.choice(cues[label]) for _ in range(2 if cues[label] else 0)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words).capitalize() + ".", "label": label})
    return rows


def hashes(*roots: Path, caches: Path | None = None) -> dict[str, str]:
    """Every file and folder under ``roots`` (hidden ones too) by path: a file with the sha256
    of its bytes, a folder as ``"folder"``, so that a changed, removed or added one shows. What
    a command may cache under ``caches`` (packed blocks of data it read) does not count."""
    import hashlib

    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for root in roots
        for p in sorted(Path(root).rglob("*"))
        if caches is None or (p != caches and caches not in p.parents)
    }


def saved_head(run: Path) -> dict:
    """A baseline run's head read with skops and json alone (no nlp-ssl code): its
    scikit-learn objects, ``dense_weight`` and ``labels``."""
    import skops.io as sio

    folder = Path(run) / "model"
    config = json.loads((folder / "head_config.json").read_text(encoding="utf-8"))
    return {**sio.load(folder / "head.skops"), "dense_weight": config["dense_weight"], "labels": config["labels"]}
