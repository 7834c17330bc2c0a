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


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """~600 short documents: enough for a few epochs of tiny blocks."""
    root = tmp_path_factory.mktemp("corpus")
    return write_jsonl(root / "corpus.jsonl", [{"text": t} for t in make_sentences(600, seed=3)])


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, tiny_corpus) -> Path:
    from nlp_ssl.data import DatasetSpec
    from nlp_ssl.tokenizer import TokenizerConfig, run

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    run(TokenizerConfig(output_dir=str(out), datasets=[DatasetSpec(files=str(tiny_corpus))], vocab_size=320))
    return out
