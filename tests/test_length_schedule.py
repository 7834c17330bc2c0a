"""A sequence-length schedule in pretraining (``data.long_blocks``): short rows, then whole
long blocks, the same tokens per step, a resume across the change, the positions saved."""

import json

import numpy as np
import pytest

from nlp_ssl import pretrain
from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError
from nlp_ssl.packing import pack
from nlp_ssl.training import TrainingInterrupted
from tests.pretrain_helpers import tiny_config
from tests.test_pretrain import _sigterm_during_step, assert_resumed_as_straight, assert_same_weights, losses, weights

LONG = {"block_size": 64, "fraction": 0.3}


def scheduled(out, tokenizer, corpus, objective="mlm", long=LONG, **train):
    train = {"max_steps": 10, "micro_batch_size": 8, **train}
    return tiny_config(out, tokenizer, corpus, objective, data={"long_blocks": long}, **train)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_steps_read_short_rows_then_whole_blocks_with_the_same_tokens(
    tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch, objective
):
    from nlp_ssl.objectives.causal_lm import CausalLMTask
    from nlp_ssl.objectives.masked_lm import MaskedLMTask

    seen = []
    task_class = {"mlm": MaskedLMTask, "clm": CausalLMTask}[objective]
    real = task_class._batch

    def spy(self, blocks, example_ids, epoch, split, words=None):
        if split == "train":
            seen.append(np.array(blocks))
        return real(self, blocks, example_ids, epoch, split, words)

    monkeypatch.setattr(task_class, "_batch", spy)
    cfg = scheduled(tmp_path / "run", tiny_tokenizer, tiny_corpus, objective)
    metrics = pretrain.run(cfg)
    assert [b.shape for b in seen] == [(8, 32)] * 7 + [(4, 64)] * 3  # the last 30% of 10 steps at 64
    assert metrics["tokens"] == 10 * 8 * 32 and metrics["block_size"] == 32 and metrics["long_block_size"] == 64
    assert set(metrics) >= {"eval_loss_at_32", "eval_loss_at_64"}
    assert (metrics["global_batch"], metrics["long_global_batch"]) == (8, 4)
    # a short step's rows are consecutive halves of packed 64-token blocks of the text
    packed = pack([DatasetSpec(files=str(tiny_corpus))], _tokenizer(tiny_tokenizer), 64, str(tmp_path / "cache"))
    halves = {tuple(r) for b in packed.blocks for r in np.asarray(b).reshape(2, 32)}
    assert all(tuple(r) in halves for r in seen[0])
    pairs = seen[0].reshape(4, 64)
    assert all(any((pairs[k] == np.asarray(b)).all() for b in packed.blocks) for k in range(4))
    # the model is saved with the positions it was trained on, and its card says how
    model = tmp_path / "run" / "model"
    assert json.loads((model / "tokenizer_config.json").read_text())["model_max_length"] == 64
    from nlp_ssl.model_card import build_card, find_run

    card = build_card(find_run(str(tmp_path / "run"))).text
    assert "packed blocks of 32 tokens, then blocks of 64 tokens for the last 30% of the steps" in card
    assert f"{metrics['eval_loss_at_64']:.4f} at 64" in card


def _tokenizer(path):
    from nlp_ssl.tokenizer import load_tokenizer

    return load_tokenizer(str(path))


def test_a_resume_across_the_length_change_equals_the_uninterrupted_run(
    tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch
):
    kw = dict(max_steps=12, save_every=5, eval_every=4, grad_accum_steps=2)
    straight = scheduled(
        tmp_path / "straight", tiny_tokenizer, tiny_corpus, long={"block_size": 64, "fraction": 0.5}, **kw
    )
    pretrain.run(straight)
    stopped = scheduled(
        tmp_path / "stopped", tiny_tokenizer, tiny_corpus, long={"block_size": 64, "fraction": 0.5}, **kw
    )
    with monkeypatch.context() as m:
        _sigterm_during_step(m, step=4, micro_steps=2)  # stopped at step 4 of the short phase (steps 0-5)
        with pytest.raises(TrainingInterrupted):
            pretrain.run(stopped)
    stopped.train.resume = "latest"
    pretrain.run(stopped)
    assert_resumed_as_straight(tmp_path / "stopped", tmp_path / "straight")
    a = json.loads((tmp_path / "stopped/metrics.json").read_text())
    b = json.loads((tmp_path / "straight/metrics.json").read_text())
    assert a["eval_loss_at_64"] == pytest.approx(b["eval_loss_at_64"]) and a["tokens"] == b["tokens"]


@pytest.mark.parametrize(
    "long, train, message",
    [
        (
            {"block_size": 48},
            {},
            "'long_blocks.block_size' (48) must be a multiple of 'block_size' (32) larger than it",
        ),
        ({"block_size": 32}, {}, "must be a multiple of 'block_size' (32) larger than it"),
        ({"block_size": 128}, {}, "'data.long_blocks.block_size' (128) exceeds 'model.max_positions' (64)"),
        ({"block_size": 64, "fraction": 0}, {}, "data.long_blocks: 'fraction' must be in (0, 1], got 0"),
        ({"block_size": 64}, {"micro_batch_size": 7}, "'train.micro_batch_size' (7) must be a multiple of 2"),
        ({"block_size": 64}, {"eval_batch_size": 5}, "'train.eval_batch_size' (5) must be a multiple of 2"),
        ({"block_size": 64}, {"metric_for_best": "loss"}, "with data.long_blocks they are at two lengths"),
    ],
)
def test_bad_length_schedules_are_one_line_errors(tmp_path, tiny_corpus, tiny_tokenizer, long, train, message):
    from nlp_ssl.config import from_dict
    from nlp_ssl.pretrain import recipe_class

    raw = {
        "output_dir": str(tmp_path / "run"),
        "tokenizer": str(tiny_tokenizer),
        "objective": "mlm",
        "data": {"datasets": [{"files": str(tiny_corpus)}], "block_size": 32, "long_blocks": long},
        "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
        "train": {"max_steps": 4, "micro_batch_size": 8, **train},
    }
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        from_dict(recipe_class(raw, "r.yaml"), raw)
    assert not (tmp_path / "run").exists()


def test_a_resume_inside_the_long_phase_and_from_the_final_checkpoint(
    tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch
):
    kw = dict(long={"block_size": 64, "fraction": 0.5}, max_steps=12, save_every=5, eval_every=4)
    straight = scheduled(tmp_path / "straight", tiny_tokenizer, tiny_corpus, **kw)
    done = pretrain.run(straight)
    stopped = scheduled(tmp_path / "stopped", tiny_tokenizer, tiny_corpus, **kw)
    with monkeypatch.context() as m:
        _sigterm_during_step(m, step=9, micro_steps=1)  # in the long phase (steps 6-11)
        with pytest.raises(TrainingInterrupted):
            pretrain.run(stopped)
    stopped.train.resume = "latest"
    pretrain.run(stopped)
    assert losses(tmp_path / "stopped") == pytest.approx(losses(tmp_path / "straight"), rel=1e-6)
    assert_same_weights(weights(tmp_path / "stopped"), weights(tmp_path / "straight"))
    # the process died after the final checkpoint: nothing left to train, and the final
    # evaluation reads the long phase's rows, as the run ended
    (tmp_path / "straight/metrics.json").unlink()
    straight.train.resume = "latest"
    again = pretrain.run(straight)
    assert again["steps"] == 12 and again["eval_loss"] == pytest.approx(done["eval_loss"], rel=1e-6)
    assert again["eval_loss_at_64"] == pytest.approx(done["eval_loss_at_64"], rel=1e-6)


def test_replaced_token_detection_scores_whole_blocks_in_the_short_phase(
    tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch
):
    from nlp_ssl.training import evaluation

    seen = []
    real = evaluation.evaluate

    def spy(task, module, accelerator, cfg, split="eval", outputs=False):
        metrics, out = real(task, module, accelerator, cfg, split, outputs=True)
        seen.append((task.rows, {k: len(v) for k, v in out.items()}, len(task.eval_indices(split))))
        return (metrics, out) if outputs else metrics

    monkeypatch.setattr(evaluation, "evaluate", spy)
    from nlp_ssl.training import loop

    monkeypatch.setattr(loop, "evaluate", spy)
    cfg = scheduled(tmp_path / "rtd", tiny_tokenizer, tiny_corpus, "rtd", max_steps=6, eval_every=2)
    metrics = pretrain.run(cfg)
    assert {rows for rows, _, _ in seen} == {1, 2}
    for rows, lengths, n in seen:
        assert set(lengths.values()) == {n}, (rows, lengths)  # one entry per block, whatever the rows
    assert 0 <= metrics["eval_discriminator_accuracy"] <= 1
