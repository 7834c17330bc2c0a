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


# -- shared runs: a few steps of tiny pretraining, and a fine-tuned classifier on top -------------


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tiny_corpus, tiny_tokenizer) -> dict:
    """A few steps of tiny MLM and CLM pretraining: real run folders to start from."""
    from nlp_ssl import pretrain
    from tests.pretrain_helpers import tiny_config

    root = tmp_path_factory.mktemp("pretrained")
    runs = {}
    for objective in ("mlm", "clm"):
        cfg = tiny_config(root / objective, tiny_tokenizer, tiny_corpus, objective, max_steps=4, save_every=4)
        pretrain.run(cfg)
        runs[objective] = root / objective
    return runs


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory) -> Path:
    from tests.finetune_helpers import write_sentiment_folder

    return write_sentiment_folder(tmp_path_factory.mktemp("sentiment"))


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory, pretrained, sentiment_dir) -> Path:
    from nlp_ssl import finetune
    from tests.finetune_helpers import sentiment_config

    out = tmp_path_factory.mktemp("ft") / "mlm"
    finetune.run(sentiment_config(out, pretrained["mlm"], sentiment_dir))
    return out
