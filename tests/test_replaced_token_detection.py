"""``objective: rtd`` (ELECTRA-style replaced-token detection): the loss, the sampling, training,
exact resume and what the run leaves for fine-tuning."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from nlp_ssl import pretrain
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig
from nlp_ssl.objectives.masked_lm import MaskingConfig
from nlp_ssl.objectives.replaced_token_detection import (
    ReplacedTokenDetectionPretrainConfig,
    ReplacedTokenDetectionTask,
    build_discriminator,
    build_generator,
    sample_rows,
)
from nlp_ssl.tokenizer import load_tokenizer
from nlp_ssl.training import TrainingInterrupted
from tests.pretrain_helpers import tiny_config
from tests.test_pretrain import _sigterm_during_step, assert_same_weights, losses, weights


def rtd_task(tok, architecture="bert", blocks=None):
    cfg = ModelConfig(preset="tiny", layers=2, max_positions=32, architecture=architecture)
    torch.manual_seed(0)
    model = build_discriminator(cfg, tok)
    generator = build_generator(cfg, 1, model, tok)
    if blocks is None:
        rng = np.random.default_rng(0)
        blocks = rng.integers(5, len(tok), size=(40, 32))
    return ReplacedTokenDetectionTask(
        model,
        tok,
        blocks,
        np.arange(len(blocks)),
        blocks,
        np.arange(len(blocks)),
        seed=0,
        masking=MaskingConfig(),
        generator=generator,
    )


@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
def test_generator_shares_the_encoders_word_embeddings(tiny_tokenizer, architecture):
    task = rtd_task(load_tokenizer(tiny_tokenizer), architecture)
    gen, disc = task.module.generator, task.model
    assert gen.get_input_embeddings() is disc.get_input_embeddings()
    assert gen.get_output_embeddings().weight is disc.get_input_embeddings().weight
    assert gen.config.num_hidden_layers == 1 and disc.config.num_hidden_layers == 2
    # the optimizer sees every parameter once: the encoder's, the generator's own, the head's
    names = [n for n, _ in task.module.named_parameters()]
    assert any(n.startswith("generator.") for n in names) and any(n.startswith("rtd_head.") for n in names)
    assert len({id(p) for p in task.module.parameters()}) == len(names)


def test_loss_is_generator_ce_plus_weighted_discriminator_bce(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    task = rtd_task(tok)
    batch = task.make_batch(np.arange(8), epoch=0, split="train")
    with torch.no_grad():
        loss, parts = task.module(**batch.inputs, parts=True)
    assert int(parts["masked"].sum()) == batch.n_targets > 0
    expected = parts["generator_loss_sum"].sum() + 50.0 * 0.15 * parts["discriminator_loss_sum"].sum()
    torch.testing.assert_close(loss, expected.float(), rtol=1e-5, atol=1e-4)
    # an untrained generator replaces nearly every masked token with a different one, and only those
    assert 0 < parts["replaced"].sum() <= parts["masked"].sum()
    assert int(parts["tokens"].sum()) == 8 * 32


def test_replacements_depend_on_the_block_not_on_the_batch(tiny_tokenizer):
    """Sampling is seeded per block: the same block gets the same replacements alone or in a
    batch, on one process or split over several, and after a resume."""
    torch.manual_seed(0)
    logits = torch.randn(7, 50)
    seeds = torch.tensor([11, 22, 33])
    together = sample_rows(logits, torch.tensor([3, 0, 4]), seeds)
    alone = sample_rows(logits[3:], torch.tensor([4]), seeds[2:])
    assert torch.equal(together[3:], alone)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(sample_rows(logits, torch.tensor([3, 0, 4]), seeds), together)

    task = rtd_task(load_tokenizer(tiny_tokenizer))
    a = task.make_batch(np.array([4, 9]), epoch=0, split="train")
    b = task.make_batch(np.array([9]), epoch=0, split="train")
    assert a.inputs["sample_seeds"][1] == b.inputs["sample_seeds"][0]
    assert (
        task.make_batch(np.array([9]), epoch=1, split="train").inputs["sample_seeds"][0] != b.inputs["sample_seeds"][0]
    )


def test_rtd_pretrains_reloads_and_fine_tunes(tmp_path, tiny_corpus, tiny_tokenizer, sentiment_dir):
    from nlp_ssl import finetune
    from tests.finetune_helpers import sentiment_config

    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "rtd", max_steps=40, eval_every=20, save_every=20)
    metrics = pretrain.run(cfg)
    log = losses(tmp_path / "run")
    assert np.mean([log[s] for s in (38, 39, 40)]) < np.mean([log[s] for s in (1, 2, 3)]) - 0.5
    gen = losses(tmp_path / "run", "eval/generator_loss")
    assert gen[40] < gen[20] < np.log(len(load_tokenizer(tiny_tokenizer)))
    # the discriminator beats the trivial "nothing was replaced" answer
    assert metrics["eval_discriminator_accuracy"] > 1 - metrics["eval_replaced_fraction"]
    assert 0 < metrics["eval_replaced_recall"] <= 1 and metrics["eval_bits_per_byte"] > 0
    assert metrics["generator_parameters"] > 0 and "eval_perplexity" not in metrics

    # the run's model is the encoder body, loadable as is and with a classification head
    saved = weights(tmp_path / "run")
    assert not any("generator" in k or "rtd_head" in k for k in saved)
    body = AutoModel.from_pretrained(tmp_path / "run/model").state_dict()
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run/model", num_labels=2)
    base = getattr(classifier, classifier.base_model_prefix).state_dict()
    for name, tensor in saved.items():  # every trained weight arrives, under either class
        torch.testing.assert_close(body[name], tensor, msg=name)
        torch.testing.assert_close(base[name], tensor, msg=name)
    ft = finetune.run(sentiment_config(tmp_path / "ft", tmp_path / "run", sentiment_dir, epochs=2))
    assert ft["test_accuracy"] > 0.5

    # published, its card says what it is and how to use it
    from huggingface_hub import ModelCard

    from nlp_ssl.export import export

    card = ModelCard.load(
        export(str(tmp_path / "run"), str(tmp_path / "export"), repo_id="someone/electra") / "README.md"
    )
    assert card.data.pipeline_tag == "feature-extraction"
    assert {r.task_name for r in card.data.eval_results} == {"Replaced token detection"}
    assert "replaced-token detection" in card.text and "rtd.disc_weight" in card.text
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/electra", num_labels=2)' in card.text


def test_rtd_resumes_exactly(tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch):
    kw = dict(max_steps=12, micro_batch_size=8, save_every=6, eval_every=6)
    straight = tiny_config(tmp_path / "straight", tiny_tokenizer, tiny_corpus, "rtd", **kw)
    pretrain.run(straight)
    stopped = tiny_config(tmp_path / "stopped", tiny_tokenizer, tiny_corpus, "rtd", **kw)
    with monkeypatch.context() as m:
        _sigterm_during_step(m, step=8, micro_steps=1)
        with pytest.raises(TrainingInterrupted):
            pretrain.run(stopped)
    stopped.train.resume = "latest"
    pretrain.run(stopped)
    assert losses(tmp_path / "stopped") == pytest.approx(losses(tmp_path / "straight"), rel=1e-6)
    assert losses(tmp_path / "stopped", "eval/discriminator_accuracy") == pytest.approx(
        losses(tmp_path / "straight", "eval/discriminator_accuracy")
    )
    assert_same_weights(weights(tmp_path / "stopped"), weights(tmp_path / "straight"))


def test_rtd_recipe_errors(tmp_path, tiny_corpus, tiny_tokenizer):
    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "rtd")
    raw = {
        "output_dir": str(tmp_path / "x"),
        "tokenizer": str(tiny_tokenizer),
        "objective": "rtd",
        "data": {"datasets": [{"files": str(tiny_corpus)}]},
        "model": {"preset": "tiny"},
    }
    from nlp_ssl.config import from_dict

    with pytest.raises(ConfigError, match=r"'rtd.generator_layers' \(3\) exceeds the encoder's 2 layers"):
        from_dict(ReplacedTokenDetectionPretrainConfig, {**raw, "rtd": {"generator_layers": 3}})
    with pytest.raises(ConfigError, match=r"rtd: 'disc_weight' must be positive"):
        from_dict(ReplacedTokenDetectionPretrainConfig, {**raw, "rtd": {"disc_weight": 0}})
    with pytest.raises(ConfigError, match=r"'init' continues mlm or clm pretraining"):
        from_dict(ReplacedTokenDetectionPretrainConfig, {**raw, "init": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"unknown key 'rtd.generator_layer'; did you mean 'rtd.generator_layers'"):
        from_dict(ReplacedTokenDetectionPretrainConfig, {**raw, "rtd": {"generator_layer": 1}})
    assert cfg.rtd.generator_layers == 1
