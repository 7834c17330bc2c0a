"""Continued (domain-/task-adaptive) pretraining: ``init`` an existing checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from nlp_ssl import pretrain
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.masked_lm import load_masked_lm
from nlp_ssl.objectives.transformer_stage import load_tokenizer_and_model
from nlp_ssl.packing import encode_documents
from tests.pretrain_helpers import tiny_config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_corpus, tiny_tokenizer) -> dict:
    root = tmp_path_factory.mktemp("ckpt")
    runs = {}
    for objective in ("mlm", "clm"):
        pretrain.run(tiny_config(root / objective, tiny_tokenizer, tiny_corpus, objective, max_steps=30, eval_every=30))
        runs[objective] = root / objective
    return runs


def continued(out, source, corpus, tokenizer_dir, objective, **train):
    """A continuation of ``source``: the tiny recipe with init set and no tokenizer."""
    cfg = tiny_config(out, tokenizer_dir, corpus, objective, **train)
    cfg.init, cfg.tokenizer = str(source), None
    return cfg


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_continuing_starts_from_the_checkpoint_weights_and_loss(
    tmp_path, checkpoints, tiny_corpus, tiny_tokenizer, objective
):
    source = checkpoints[objective]
    before = json.loads((source / "metrics.json").read_text())["eval_loss"]
    cfg = continued(
        tmp_path / "more",
        source,
        tiny_corpus,
        tiny_tokenizer,
        objective,
        max_steps=1,
        eval_every=1,
        lr=1e-9,
        warmup_steps=0,
    )
    _, model = load_tokenizer_and_model(cfg)
    saved = load_file(str(source / "model/model.safetensors"))
    state = model.state_dict()
    for key in saved:
        torch.testing.assert_close(state[key], saved[key], msg=key)
    metrics = pretrain.run(cfg)
    # same held-out blocks, same seeded masks: the first evaluation sees the checkpoint's loss
    assert metrics["eval_loss"] == pytest.approx(before, abs=1e-4)
    fresh = tiny_config(
        tmp_path / "fresh", tiny_tokenizer, tiny_corpus, objective, max_steps=1, eval_every=1, lr=1e-9, warmup_steps=0
    )
    assert pretrain.run(fresh)["eval_loss"] > before + 0.3


def test_a_different_tokenizer_is_refused(tmp_path, checkpoints, tiny_corpus, corpus_file):
    from nlp_ssl.data import DatasetSpec
    from nlp_ssl.tokenizer import TokenizerConfig
    from nlp_ssl.tokenizer import run as train_tokenizer

    other = tmp_path / "other-tok"  # same size (320), other corpus: other vocabulary
    train_tokenizer(
        TokenizerConfig(
            output_dir=str(other), datasets=[DatasetSpec(files=str(corpus_file))], vocab_size=320, model="wordpiece"
        )
    )
    cfg = continued(tmp_path / "run", checkpoints["mlm"], tiny_corpus, other, "mlm")
    cfg.tokenizer = str(other)
    with pytest.raises(DataError, match=r"does not match the tokenizer of .*different vocabularies"):
        pretrain.run(cfg)
    assert not (tmp_path / "run").exists()


def test_a_headless_encoder_gets_a_tied_mlm_head(tmp_path, checkpoints, tiny_corpus, tiny_tokenizer):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    full = AutoModelForMaskedLM.from_pretrained(checkpoints["mlm"] / "model")
    encoder_dir = tmp_path / "encoder"
    full.bert.save_pretrained(encoder_dir)  # a BertModel folder, as sentence-embedding models ship
    AutoTokenizer.from_pretrained(checkpoints["mlm"] / "model").save_pretrained(encoder_dir)
    assert json.loads((encoder_dir / "config.json").read_text())["architectures"] == ["BertModel"]

    model = load_masked_lm(str(encoder_dir))
    assert type(model).__name__ == "BertForMaskedLM"
    torch.testing.assert_close(
        model.bert.encoder.layer[0].output.dense.weight, full.bert.encoder.layer[0].output.dense.weight
    )
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    metrics = pretrain.run(continued(tmp_path / "run", encoder_dir, tiny_corpus, tiny_tokenizer, "mlm", max_steps=4))
    assert metrics["steps"] == 4 and metrics["eval_loss"] < 10


def test_an_architecture_that_cannot_do_the_objective_is_refused(tmp_path, checkpoints, tiny_corpus, tiny_tokenizer):
    cfg = continued(tmp_path / "run", checkpoints["clm"], tiny_corpus, tiny_tokenizer, "mlm")
    with pytest.raises(DataError, match=r"a 'gpt2' model cannot be trained as a masked-LM"):
        pretrain.run(cfg)


def test_documents_end_with_eos_even_without_a_template(tiny_tokenizer):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    ours = AutoTokenizer.from_pretrained(tiny_tokenizer)
    backend = ours.backend_tokenizer
    backend.post_processor = None  # GPT-2 style: the template adds nothing
    bare = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>")
    ids, flags = encode_documents(bare, ["a good film", "bad"], word_starts=True)
    assert all(doc[-1] == bare.eos_token_id for doc in ids)
    assert [len(f) for f in flags] == [len(d) for d in ids] and all(f[-1] == 0 for f in flags)
    ids, _ = encode_documents(ours, ["a good film"])  # a template that ends with </s>: nothing added
    assert ids[0].count(ours.eos_token_id) == 1
