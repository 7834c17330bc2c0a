"""Test environment: offline Hub, the shared data mirror, tiny corpora written per test."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NLP_SSL_DATA_DIR", str((REPO.parent / "shared" / "data").resolve()))


from tests.helpers import make_sentences, write_jsonl  # noqa: E402  (environment first)


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in make_sentences(300)])
