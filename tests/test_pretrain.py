"""Pretraining: packing, masking, the training loop's promises, checkpoints and resume."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

from nlp_ssl import pretrain
from nlp_ssl.checkpoint import list_checkpoints, resume_candidates, staging_path
from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError, DataError, OutputError
from nlp_ssl.models import ModelConfig, check_vocab
from nlp_ssl.objectives.causal_lm import build_causal_lm
from nlp_ssl.objectives.masked_lm import build_masked_lm
from nlp_ssl.packing import pack
from nlp_ssl.train_log import read_log
from nlp_ssl.training import TrainingError, TrainingInterrupted, loop
from tests.helpers import needs_shared_data
from tests.pretrain_helpers import tiny_config


def weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=k)


def losses(run_dir: Path, key="train/loss") -> dict:
    return {r["step"]: r[key] for r in read_log(run_dir) if key in r}


def assert_resumed_as_straight(resumed: Path, straight: Path):
    """A resumed run logged the uninterrupted run's train and eval losses and ended at its weights."""
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-6)
    assert losses(resumed, "eval/loss") == pytest.approx(losses(straight, "eval/loss"))
    assert_same_weights(weights(resumed), weights(straight))


# -- packing ---------------------------------------------------------------------------


def test_packing_loses_and_duplicates_nothing(tmp_path, tiny_corpus, tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    packed = pack([DatasetSpec(files=str(tiny_corpus))], tok, 32, cache_dir=tmp_path)
    docs = [json.loads(line)["text"] for line in open(tiny_corpus)]
    stream = np.concatenate([tok(d)["input_ids"] for d in docs])
    n = len(packed.blocks)
    assert packed.n_tokens == len(stream) and len(stream) - n * 32 < 32  # only the last partial block dropped
    np.testing.assert_array_equal(np.asarray(packed.blocks).reshape(-1), stream[: n * 32])
    assert (np.asarray(packed.blocks) == tok.eos_token_id).sum() >= len(docs) - 1  # documents stay separated
    assert packed.n_bytes == sum(len(d.encode()) for d in docs)
    again = pack([DatasetSpec(files=str(tiny_corpus))], tok, 32, cache_dir=tmp_path)  # from the cache
    assert isinstance(again.blocks, np.memmap) and np.array_equal(again.blocks, packed.blocks)
    assert len(list(tmp_path.glob("packed-*.npy"))) == 2  # blocks + meta, nothing else


def test_packing_too_little_text(tmp_path, tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    small = tmp_path / "s.jsonl"
    small.write_text('{"text": "short"}\n')
    with pytest.raises(DataError, match=r"fewer than one block of 32"):
        pack([DatasetSpec(files=str(small))], tok, 32, cache_dir=tmp_path)


# -- masking ---------------------------------------------------------------------------


def test_masking_statistics_and_determinism(tiny_tokenizer):
    from nlp_ssl.objectives.masked_lm import MaskedLMTask, MaskingConfig

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    rng = np.random.default_rng(0)
    blocks = rng.integers(5, len(tok), size=(400, 128)).astype(np.uint16)
    blocks[:, ::16] = tok.eos_token_id  # document boundaries: special, never masked
    model = build_masked_lm(ModelConfig(preset="tiny"), tok)
    task = MaskedLMTask(model, tok, blocks, np.arange(400), blocks, np.arange(400), seed=0, masking=MaskingConfig())
    batch = task.make_batch(np.arange(400), epoch=0, split="train")
    ids = torch.from_numpy(blocks.astype(np.int64))
    inputs, labels = batch.inputs["input_ids"], batch.inputs["labels"]
    selected = labels != -100
    special = ids == tok.eos_token_id
    assert not selected[special].any()
    assert selected.float().sum() / (~special).sum() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(labels[selected], ids[selected])
    masked = (inputs == tok.mask_token_id) & selected
    unchanged = (inputs == ids) & selected
    n = selected.sum().item()
    assert masked.sum().item() / n == pytest.approx(0.8, abs=0.015)
    assert unchanged.sum().item() / n == pytest.approx(0.1, abs=0.015)  # random replacements are the rest
    assert torch.equal((inputs != ids), selected & ~unchanged)
    assert batch.n_targets == n
    # the same example is masked the same way whatever batch it is in; a new epoch masks anew
    again = task.make_batch(np.array([7, 3]), epoch=0, split="train")
    assert torch.equal(again.inputs["labels"][1], labels[3]) and torch.equal(again.inputs["labels"][0], labels[7])
    other = task.make_batch(np.array([3]), epoch=1, split="train")
    assert not torch.equal(other.inputs["labels"][0], labels[3])


# -- training --------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_loss_decreases_and_model_reloads(tmp_path, tiny_corpus, tiny_tokenizer, objective):
    cfg = tiny_config(
        tmp_path / "run", tiny_tokenizer, tiny_corpus, objective, max_steps=40, eval_every=20, save_every=20
    )
    metrics = pretrain.run(cfg)
    log = losses(tmp_path / "run")
    first, last = np.mean([log[s] for s in (1, 2, 3)]), np.mean([log[s] for s in (38, 39, 40)])
    assert last < first - 0.5, (first, last)
    evals = losses(tmp_path / "run", "eval/loss")
    assert evals[40] < evals[20]
    assert metrics["eval_perplexity"] == pytest.approx(np.exp(metrics["eval_loss"]))
    assert metrics["eval_bits_per_byte"] > 0 and metrics["tokens_per_s"] > 0 and metrics["steps"] == 40
    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    model = auto.from_pretrained(tmp_path / "run/model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "run/model")
    assert model.config.vocab_size == len(tok)
    with torch.no_grad():
        out = model(**tok(["the movie was good."], return_tensors="pt"))
    assert out.logits.shape[-1] == len(tok) and torch.isfinite(out.logits).all()
    for name in ("metrics.json", "resolved_config.yaml", "run_info.json", "train_log.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step-00000020", "step-00000040"]


def test_lr_schedule_steps_once_per_optimizer_step(tmp_path, tiny_corpus, tiny_tokenizer):
    from transformers import get_scheduler

    cfg = tiny_config(
        tmp_path / "run",
        tiny_tokenizer,
        tiny_corpus,
        "clm",
        max_steps=10,
        grad_accum_steps=3,
        micro_batch_size=4,
        warmup_steps=3,
        scheduler="linear",
    )
    pretrain.run(cfg)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    ref = get_scheduler("linear", opt, num_warmup_steps=3, num_training_steps=10)
    expected = {}
    for step in range(1, 11):
        opt.step()
        ref.step()
        expected[step] = ref.get_last_lr()[0]
    assert losses(tmp_path / "run", "train/lr") == pytest.approx(expected)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["global_batch"] == 12 and metrics["tokens"] == 10 * 12 * 32


def test_gradient_accumulation_equals_the_big_batch(tmp_path, tiny_corpus, tiny_tokenizer):
    big = tiny_config(tmp_path / "big", tiny_tokenizer, tiny_corpus, "mlm", max_steps=6, micro_batch_size=16)
    acc = tiny_config(
        tmp_path / "acc", tiny_tokenizer, tiny_corpus, "mlm", max_steps=6, micro_batch_size=4, grad_accum_steps=4
    )
    pretrain.run(big)
    pretrain.run(acc)
    assert losses(tmp_path / "acc") == pytest.approx(losses(tmp_path / "big"), rel=1e-5)
    assert_same_weights(weights(tmp_path / "acc"), weights(tmp_path / "big"), atol=1e-5)


def _sigterm_during_step(monkeypatch, step: int, micro_steps: int):
    """Deliver SIGTERM while step ``step`` is being built, as a cluster scheduler would."""
    from nlp_ssl.objectives.blocks import BlockTask

    real = BlockTask.make_batch
    calls = {"n": 0}

    def make_batch(self, indices, epoch, split):
        if split == "train":
            calls["n"] += 1
            if calls["n"] == (step - 1) * micro_steps + 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(self, indices, epoch, split)

    monkeypatch.setattr(BlockTask, "make_batch", make_batch)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_resume_is_exact_across_an_epoch_boundary(tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch, objective):
    kw = dict(max_steps=30, micro_batch_size=16, grad_accum_steps=2, save_every=15, eval_every=10)
    straight = tiny_config(tmp_path / "straight", tiny_tokenizer, tiny_corpus, objective, **kw)
    metrics = pretrain.run(straight)
    steps_per_epoch = metrics["train_blocks"] // 32
    assert metrics["steps"] == 30 and 15 < steps_per_epoch * 2 < 30  # stops in epoch 2, resumes into epoch 3

    stopped = tiny_config(tmp_path / "stopped", tiny_tokenizer, tiny_corpus, objective, **kw)
    with monkeypatch.context() as m:
        _sigterm_during_step(m, step=17, micro_steps=2)
        with pytest.raises(TrainingInterrupted, match=r"SIGTERM at step 17; .*train.resume=latest"):
            pretrain.run(stopped)
    assert [c.name for c in list_checkpoints(tmp_path / "stopped")] == ["step-00000015", "step-00000017"]
    assert not (tmp_path / "stopped/metrics.json").exists()
    with pytest.raises(OutputError, match=r"unfinished run; set train.resume=latest"):
        pretrain.run(stopped)
    stopped.train.resume = "latest"
    pretrain.run(stopped)
    assert_resumed_as_straight(tmp_path / "stopped", tmp_path / "straight")


def test_half_written_checkpoint_is_never_picked_up(tmp_path, tiny_corpus, tiny_tokenizer):
    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "clm", max_steps=4, save_every=4)
    pretrain.run(cfg)
    run_dir = tmp_path / "run"
    partial = staging_path(run_dir, 8)  # as if a crash hit mid-save of step 8
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "model.safetensors").write_bytes(b"garbage")
    torn = run_dir / "checkpoints" / "step-00000009"  # renamed dir without its state file
    torn.mkdir()
    assert [p.name for p in resume_candidates("latest", run_dir)] == ["step-00000004"]
    with pytest.raises(DataError, match=r"not a complete checkpoint"):
        next(resume_candidates(str(torn), run_dir))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch):
    from nlp_ssl.objectives import causal_lm as tasks

    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "clm", max_steps=10, save_every=3)
    real = tasks.CausalLMLoss.forward
    calls = {"n": 0}

    def poisoned(self, input_ids):
        calls["n"] += 1
        loss = real(self, input_ids)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(tasks.CausalLMLoss, "forward", poisoned)
    with pytest.raises(
        TrainingError, match=r"non-finite loss \(nan\) at step 5; last good checkpoint: .*step-00000003"
    ):
        pretrain.run(cfg)
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step-00000003"]
    assert not (tmp_path / "run/model").exists()


def test_vocab_mismatch_is_an_error(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    model = build_causal_lm(ModelConfig(preset="tiny"), tok)
    model.resize_token_embeddings(len(tok) - 10)
    with pytest.raises(
        DataError, match=rf"tokenizer has {len(tok)} tokens but the model's embedding has {len(tok) - 10}"
    ):
        check_vocab(model, tok, "tok")


def test_mlm_needs_a_mask_token(tmp_path, tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    tok.mask_token = None
    with pytest.raises(DataError, match=r"has no mask token"):
        build_masked_lm(ModelConfig(preset="tiny"), tok)


def test_bad_pretrain_recipes(tmp_path, tiny_corpus, tiny_tokenizer):
    with pytest.raises(ConfigError, match=r"'data.block_size' \(128\) exceeds 'model.max_positions' \(64\)"):
        cfg = tiny_config(tmp_path / "r", tiny_tokenizer, tiny_corpus)
        cfg.data.block_size = 128
        cfg.__post_init__()
    with pytest.raises(ConfigError, match=r"'lr' must be positive"):
        tiny_config(tmp_path / "r", tiny_tokenizer, tiny_corpus, lr=-1.0)
    with pytest.raises(ConfigError, match=r"global batch 4096 .* exceeds the \d+ training examples"):
        pretrain.run(tiny_config(tmp_path / "r", tiny_tokenizer, tiny_corpus, micro_batch_size=4096))
    assert not (tmp_path / "r").exists()  # a setting that does not fit the data is refused before the folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not a tokenizer folder"):
        pretrain.run(tiny_config(tmp_path / "r2", tmp_path / "empty", tiny_corpus))


@pytest.mark.integration
@needs_shared_data("imdb_unsup_lm")
@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_smoke_recipes_on_the_shared_corpus(tmp_path, objective):
    from nlp_ssl.cli import main

    repo = Path(__file__).resolve().parents[1]
    tok = tmp_path / "tok"
    assert main(["tokenizer", str(repo / "recipes/tokenizer/smoke.yaml"), f"output_dir={tok}"]) == 0
    out = tmp_path / objective
    args = [
        "pretrain",
        str(repo / f"recipes/pretrain/smoke_{objective}.yaml"),
        f"output_dir={out}",
        f"tokenizer={tok}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["corpus_docs"] == 1000
    log = losses(out)
    assert log[30] < log[5]
    vocab = len(AutoTokenizer.from_pretrained(out / "model"))
    assert metrics["eval_loss"] < np.log(vocab)  # better than a uniform guess over the vocabulary
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard by default


# -- streaming -------------------------------------------------------------------------


def test_stream_packs_like_the_cached_path_in_bounded_memory(tmp_path, tiny_corpus, tiny_tokenizer):
    from nlp_ssl.packing import PackedStream

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    packed = pack([DatasetSpec(files=str(tiny_corpus))], tok, 32, cache_dir=tmp_path)
    stream = PackedStream([DatasetSpec(files=str(tiny_corpus), streaming=True)], tok, 32, read_batch=8)
    got = []
    while len(got) * 4 < len(packed.blocks) - 4:
        blocks, numbers, _ = stream.next_blocks(4)
        assert numbers.tolist() == list(range(len(got) * 4, len(got) * 4 + 4))
        assert len(stream._buffer) < 32 * 4 + 8 * 64  # never more than a batch plus one read
        got.append(blocks)
    np.testing.assert_array_equal(np.concatenate(got), np.asarray(packed.blocks)[: len(got) * 4])
    assert stream.epoch == 0
    for _ in range(len(packed.blocks)):  # runs past the end: a new epoch starts
        stream.next_blocks(4)
    assert stream.epoch >= 1


def test_freed_heap_memory_is_returned_to_the_os_every_few_steps(tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch):
    """Without it glibc's heap fragments under variable-size activations and resident memory
    creeps up over a long (streaming) run; benchmarks/bench_stream_memory.py measures the effect."""
    import sys

    from nlp_ssl import memory

    if sys.platform.startswith("linux"):
        assert memory._MALLOC_TRIM is not None  # glibc: the trim is really there
    calls = []
    monkeypatch.setattr(loop, "release_free_memory", lambda: calls.append(1))
    pretrain.run(tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, max_steps=25, save_every=25, eval_every=25))
    # every RELEASE_MEMORY_EVERY steps, and after the evaluation and the checkpoint at step 25
    assert len(calls) == 25 // loop.RELEASE_MEMORY_EVERY + 2


def _streaming(cfg, corpus):
    cfg.data.datasets = [DatasetSpec(files=str(corpus), streaming=True)]
    cfg.data.validation = [DatasetSpec(files=str(corpus), max_rows=60)]
    return cfg


def test_streaming_recipe_needs_validation(tmp_path, tiny_corpus, tiny_tokenizer):
    from nlp_ssl.config import from_dict
    from nlp_ssl.pretrain import PretrainDataConfig

    with pytest.raises(ConfigError, match=r"streaming 'datasets' need 'validation'"):
        from_dict(PretrainDataConfig, {"datasets": [{"files": str(tiny_corpus), "streaming": True}]})


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_streaming_pretraining_resumes_exactly(tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch, objective):
    kw = dict(max_steps=40, micro_batch_size=16, save_every=10, eval_every=10)
    straight = _streaming(tiny_config(tmp_path / "straight", tiny_tokenizer, tiny_corpus, objective, **kw), tiny_corpus)
    metrics = pretrain.run(straight)
    assert metrics["train_blocks"] == "streaming" and metrics["steps"] == 40
    log = losses(tmp_path / "straight")
    assert log[40] < log[1] - 0.5
    assert {r["train/epoch"] for r in read_log(tmp_path / "straight") if "train/epoch" in r} >= {0, 1}  # past the end

    stopped = _streaming(tiny_config(tmp_path / "stopped", tiny_tokenizer, tiny_corpus, objective, **kw), tiny_corpus)
    with monkeypatch.context() as m:
        real = loop.save_checkpoint
        calls = {"n": 0}

        def save_then_signal(*args, **kwargs):
            path = real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return path

        m.setattr(loop, "save_checkpoint", save_then_signal)
        with pytest.raises(TrainingInterrupted, match=r"at step 10"):
            pretrain.run(stopped)
    stopped.train.resume = "latest"
    pretrain.run(stopped)
    assert losses(tmp_path / "stopped") == pytest.approx(log, rel=1e-6)
    assert_same_weights(weights(tmp_path / "stopped"), weights(tmp_path / "straight"))


# -- whole-word masking ------------------------------------------------------------------


def test_word_offsets_encode_word_boundaries():
    from transformers import DataCollatorForLanguageModeling

    from nlp_ssl.objectives.blocks import word_offsets

    starts = np.array([[0, 1, 0, 0, 1, 1, 0]])  # <s> [w1 w1 w1] [w2] [w3 w3]
    special = np.array([[1, 0, 0, 0, 0, 0, 0]])
    word_ids, _ = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(word_offsets(starts), special)
    assert word_ids.tolist() == [[-1, 1, 1, 1, 2, 3, 3]]


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_whole_word_masking_masks_whole_words_of_any_tokenizer(tmp_path, tiny_corpus, model):
    from nlp_ssl.objectives.masked_lm import MaskedLMTask, MaskingConfig
    from nlp_ssl.tokenizer import TokenizerConfig, run

    # a small vocabulary splits most words into several pieces
    run(
        TokenizerConfig(
            output_dir=str(tmp_path / "tok"),
            datasets=[DatasetSpec(files=str(tiny_corpus))],
            model=model,
            vocab_size=270 if model == "bpe" else 60,
        )
    )
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    packed = pack([DatasetSpec(files=str(tiny_corpus))], tok, 32, cache_dir=tmp_path / "c", word_starts=True)
    words = np.asarray(packed.word_starts)
    assert words.shape == packed.blocks.shape and 0 < words.mean() < 0.6  # multi-token words exist
    n = len(packed.blocks)
    task = MaskedLMTask(
        build_masked_lm(ModelConfig(preset="tiny"), tok),
        tok,
        packed.blocks,
        np.arange(n),
        packed.blocks,
        np.arange(n),
        seed=0,
        masking=MaskingConfig(whole_word=True),
        train_words=packed.word_starts,
        eval_words=packed.word_starts,
    )
    batch = task.make_batch(np.arange(n), 0, "train")
    selected = (batch.inputs["labels"] != -100).numpy()
    blocks = np.asarray(packed.blocks)
    special = np.isin(blocks, tok.all_special_ids)
    word_id = np.cumsum(words, axis=1)
    whole, split = 0, 0
    for r in range(n):
        for w in np.unique(word_id[r][~special[r] & (word_id[r] > 0)]):
            members = selected[r][(word_id[r] == w) & ~special[r]]
            whole += members.all() and len(members) > 1
            split += members.any() and not members.all()
    assert split == 0 and whole > 20
    assert 0.08 < selected.sum() / (~special).sum() < 0.3
    assert (batch.inputs["input_ids"].numpy()[selected] == tok.mask_token_id).all()


def test_whole_word_pretraining_runs(tmp_path, tiny_corpus, tiny_tokenizer):
    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "mlm", max_steps=6)
    cfg.masking.whole_word = True
    metrics = pretrain.run(cfg)
    assert metrics["steps"] == 6 and np.isfinite(metrics["eval_loss"])


def test_gradient_checkpointing_and_bf16_flags(tmp_path, tiny_corpus, tiny_tokenizer):
    plain = tiny_config(tmp_path / "plain", tiny_tokenizer, tiny_corpus, "clm", max_steps=4)
    ckpt_cfg = tiny_config(
        tmp_path / "gc", tiny_tokenizer, tiny_corpus, "clm", max_steps=4, gradient_checkpointing=True
    )
    pretrain.run(plain)
    pretrain.run(ckpt_cfg)
    # recomputing activations changes memory, not results
    assert losses(tmp_path / "gc") == pytest.approx(losses(tmp_path / "plain"), rel=1e-5)
    bf16 = tiny_config(tmp_path / "bf16", tiny_tokenizer, tiny_corpus, "mlm", max_steps=4, mixed_precision="bf16")
    metrics = pretrain.run(bf16)
    assert np.isfinite(metrics["eval_loss"])
    assert (
        load_file(str(tmp_path / "bf16/model/model.safetensors"))["bert.embeddings.word_embeddings.weight"].dtype
        == torch.float32
    )


def test_resuming_a_run_whose_last_checkpoint_is_final(tmp_path, tiny_corpus, tiny_tokenizer):
    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "clm", max_steps=4, save_every=4)
    first = pretrain.run(cfg)
    (tmp_path / "run/metrics.json").unlink()  # as if the process died after the final checkpoint
    cfg.train.resume = "latest"
    again = pretrain.run(cfg)
    assert again["steps"] == 4 and again["eval_loss"] == pytest.approx(first["eval_loss"])


def pretrain_encoder(tmp_path, tiny_tokenizer, tiny_corpus, architecture: str):
    """A 40-step masked-LM run of ``architecture`` that must learn; its model reloaded."""
    cfg = tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, "mlm", max_steps=40, eval_every=20, save_every=20)
    cfg.model.architecture = architecture
    pretrain.run(cfg)
    log = losses(tmp_path / "run")
    assert np.mean([log[s] for s in (38, 39, 40)]) < np.mean([log[s] for s in (1, 2, 3)]) - 0.5
    return AutoModelForMaskedLM.from_pretrained(tmp_path / "run/model")


def test_pre_layer_norm_encoder_pretrains_and_fine_tunes(tmp_path, tiny_corpus, tiny_tokenizer, sentiment_dir):
    """``model.architecture: roberta-prelayernorm``: learns, reloads with the Auto classes, reports
    its usable positions (RoBERTa numbers them from pad + 1) and fine-tunes like BERT."""
    from nlp_ssl import finetune
    from nlp_ssl.models import max_positions
    from tests.finetune_helpers import sentiment_config

    model = pretrain_encoder(tmp_path, tiny_tokenizer, tiny_corpus, "roberta-prelayernorm")
    assert type(model).__name__ == "RobertaPreLayerNormForMaskedLM"
    assert max_positions(str(tmp_path / "run/model")) == 64
    tok = AutoTokenizer.from_pretrained(tmp_path / "run/model")
    with torch.no_grad():  # a full 64-token input fits the position table
        out = model(input_ids=torch.full((1, 64), tok.convert_tokens_to_ids("the") or 5))
    assert torch.isfinite(out.logits).all()
    ft = finetune.run(sentiment_config(tmp_path / "ft", tmp_path / "run", sentiment_dir, epochs=2))
    assert ft["test_accuracy"] > 0.5


@pytest.mark.parametrize("architecture", ["bert", "roberta-prelayernorm", "modernbert"])
def test_sparse_masked_lm_loss_equals_the_models_own_loss(architecture, tiny_tokenizer):
    """The head run only at masked positions gives the loss the full model computes over all
    positions (labels -100 elsewhere), for every encoder architecture we build."""
    from transformers import AutoTokenizer

    from nlp_ssl.models import ModelConfig
    from nlp_ssl.objectives.masked_lm import MaskedLMLoss, build_masked_lm

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    torch.manual_seed(0)
    model = build_masked_lm(ModelConfig(preset="tiny", max_positions=32, architecture=architecture), tok).eval()
    ids = torch.randint(5, len(tok), (3, 32))
    labels = torch.full_like(ids, -100)
    picked = torch.rand(ids.shape) < 0.3
    labels[picked] = ids[picked]
    ids[picked] = tok.mask_token_id
    with torch.no_grad():
        sparse = MaskedLMLoss(model)(ids, labels) / picked.sum()
        full = model(input_ids=ids, labels=labels).loss
    assert sparse.item() == pytest.approx(full.item(), rel=1e-5)


def test_causal_lm_loss_equals_the_models_own_loss_and_gradients(tiny_tokenizer):
    """Projecting all positions but the last gives the model's own next-token loss and the same
    gradients, including those of the output matrix tied to the input embeddings."""
    from transformers import AutoTokenizer

    from nlp_ssl.models import ModelConfig
    from nlp_ssl.objectives.causal_lm import CausalLMLoss, build_causal_lm

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    torch.manual_seed(0)
    model = build_causal_lm(ModelConfig(preset="tiny", max_positions=64), tok)
    ids = torch.randint(5, len(tok), (4, 64))
    ours_loss = CausalLMLoss(model)(ids)
    ours_loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    full = model(input_ids=ids, labels=ids).loss * (ids.size(0) * (ids.size(1) - 1))
    full.backward()
    assert ours_loss.item() == pytest.approx(full.item(), rel=1e-5)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_modernbert_encoder_pretrains_reloads_and_fine_tunes_with_mean_pooling(
    tmp_path, tiny_corpus, tiny_tokenizer, sentiment_dir
):
    """``model.architecture: modernbert`` (rotary positions, pre-LN, GeGLU): learns, reloads with
    AutoModelForMaskedLM, and fine-tunes through a classifier that mean-pools the tokens."""
    from nlp_ssl import finetune
    from tests.finetune_helpers import sentiment_config

    model = pretrain_encoder(tmp_path, tiny_tokenizer, tiny_corpus, "modernbert")
    assert type(model).__name__ == "ModernBertForMaskedLM"
    assert model.config.classifier_pooling == "mean"
    ft = finetune.run(sentiment_config(tmp_path / "ft", tmp_path / "run", sentiment_dir, epochs=2))
    assert ft["test_accuracy"] > 0.5
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft/model")
    assert type(clf).__name__ == "ModernBertForSequenceClassification"
    classify = pipeline("text-classification", model=str(tmp_path / "ft/model"))
    assert classify("a fine film")[0]["label"] in ("negative", "positive")
