"""``training.fit`` alone, on a fake task: a linear model fitted by squared error, no transformers
model, so that what fails here is the loop (accumulation, resume, evaluation, best model)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nlp_ssl.checkpoint import list_checkpoints
from nlp_ssl.train_log import read_log
from nlp_ssl.training import BEST_DIR, Batch, ScoredTask, Task, TrainConfig, evaluate, fit, make_accelerator

N_TRAIN, N_EVAL, DIM, OUT = 32, 10, 4, 3


class Linear(torch.nn.Linear):
    def save_pretrained(self, directory, safe_serialization=True):
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()},
            str(Path(directory) / "model.safetensors"),
        )


class SquaredError(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y, mask, example):
        return (mask * (self.model(x) - y) ** 2).sum()


class Tokenizer:
    def save_pretrained(self, directory):
        (Path(directory) / "tokenizer_config.json").write_text("{}", encoding="utf-8")


class PowerCut(Exception):
    pass


class Regression:
    """Example i maps x_i to y_i; only its first 1 + i % 3 outputs carry a loss, so batches hold
    different numbers of targets (a mean of per-micro-batch means would weigh them wrongly)."""

    def __init__(self, crash_at_train_batch: int | None = None):
        g = torch.Generator().manual_seed(0)
        self.model = Linear(DIM, OUT)
        with torch.no_grad():
            self.model.weight.copy_(torch.randn(OUT, DIM, generator=g))
            self.model.bias.zero_()
        self.module = SquaredError(self.model)
        self.tokenizer = Tokenizer()
        self.n_train = N_TRAIN
        w = torch.randn(DIM, OUT, generator=g)
        self.data = {}
        for split, n in (("train", N_TRAIN), ("eval", N_EVAL)):
            x = torch.randn(n, DIM, generator=g)
            mask = (torch.arange(OUT)[None, :] < 1 + torch.arange(n)[:, None] % 3).float()
            self.data[split] = (x, x @ w + 0.1 * torch.randn(n, OUT, generator=g), mask)
        self.crash_at, self.train_batches = crash_at_train_batch, 0

    def make_batch(self, indices, epoch, split):
        if split == "train":
            self.train_batches += 1
            if self.train_batches == self.crash_at:
                raise PowerCut
        idx = torch.as_tensor(np.asarray(indices))
        x, y, mask = (t[idx] for t in self.data[split])
        return Batch({"x": x, "y": y, "mask": mask, "example": idx}, n_targets=int(mask.sum()), n_tokens=len(idx))

    def eval_indices(self, split="eval"):
        return np.arange(N_EVAL)

    def flops_per_token(self):
        return 6.0 * DIM * OUT

    def describe(self):
        return {"parameters": sum(p.numel() for p in self.model.parameters())}


class ScoredRegression(Regression):
    """Evaluated in reverse order, with a scripted metric; records what ``compute_metrics`` gets."""

    def __init__(self, scores=()):
        super().__init__()
        self.scores, self.calls = list(scores), []

    def eval_indices(self, split="eval"):
        return np.arange(N_EVAL)[::-1].copy()

    def eval_step(self, module, inputs):
        return module(**inputs), {"example": inputs["example"], "prediction": self.model(inputs["x"])}

    def compute_metrics(self, outputs, split):
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.calls.append((split, outputs, weights))
        return {"score": self.scores[len(self.calls) - 1]} if self.scores else {}


def config(**overrides) -> TrainConfig:
    base = {
        "max_steps": 6,
        "micro_batch_size": 8,
        "lr": 0.05,
        "warmup_steps": 1,
        "scheduler": "linear",
        "eval_every": 3,
        "save_every": 3,
        "log_every": 1,
        "tracker": "none",
    }
    return TrainConfig(**{**base, **overrides})


def folder(tmp_path, name: str) -> Path:
    """A run folder: the stages create it before calling ``fit``."""
    (tmp_path / name).mkdir(exist_ok=True)
    return tmp_path / name


def by_hand_loss(task: Regression, n: int = N_EVAL) -> tuple[float, int]:
    """Mean squared error over the targets of the first ``n`` eval examples, in float64."""
    x, y, mask = (t[:n].double() for t in task.data["eval"])
    pred = x @ task.model.weight.detach().double().T + task.model.bias.detach().double()
    return float((mask * (pred - y) ** 2).sum() / mask.sum()), int(mask.sum())


def logged(run_dir: Path, drop=("train/tokens_per_s", "train/mfu")) -> list[dict]:
    """A run's log without the timings, which differ from run to run."""
    return [{k: v for k, v in r.items() if k not in drop} for r in read_log(run_dir)]


def test_the_fakes_are_what_the_engine_says_they_are():
    assert isinstance(Regression(), Task) and not isinstance(Regression(), ScoredTask)
    assert isinstance(ScoredRegression(), Task) and isinstance(ScoredRegression(), ScoredTask)


def test_accumulated_micro_batches_give_the_big_batch_step(tmp_path):
    init = Regression().model.weight.detach().clone()
    small, big = Regression(), Regression()
    fit(small, config(micro_batch_size=2, grad_accum_steps=4, max_grad_norm=0), folder(tmp_path, "small"), seed=3)
    fit(big, config(micro_batch_size=8, grad_accum_steps=1, max_grad_norm=0), folder(tmp_path, "big"), seed=3)
    assert not torch.allclose(big.model.weight, init, atol=1e-2)  # it trained
    for a, b in zip(small.model.parameters(), big.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    losses = [[r["train/loss"] for r in read_log(tmp_path / run) if "train/loss" in r] for run in ("small", "big")]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path):
    straight = Regression()
    fit(straight, config(), folder(tmp_path, "straight"), seed=3)

    crashed = Regression(crash_at_train_batch=5)  # after the checkpoint of step 3 and the log of step 4
    with pytest.raises(PowerCut):
        fit(crashed, config(), folder(tmp_path, "resumed"), seed=3)
    assert [c.name for c in list_checkpoints(tmp_path / "resumed")] == ["step-00000003"]
    assert max(r["step"] for r in read_log(tmp_path / "resumed")) == 4
    resumed = Regression()  # a new process: the weights come from the checkpoint
    summary = fit(resumed, config(resume="latest"), folder(tmp_path, "resumed"), seed=3)

    assert summary["steps"] == 6
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    assert logged(tmp_path / "resumed") == logged(tmp_path / "straight")
    assert len(logged(tmp_path / "straight")) == 6 + 2  # every step, and the evaluations at 3 and 6


def test_eval_loss_is_the_mean_over_every_eval_target(tmp_path):
    task, cfg = Regression(), config(max_steps=2, micro_batch_size=4, eval_every=100)  # eval batches 4, 4, 2
    accelerator = make_accelerator(cfg, folder(tmp_path, "run"))
    summary = fit(task, cfg, folder(tmp_path, "run"), seed=3, accelerator=accelerator)
    loss, targets = by_hand_loss(task)
    assert summary["eval_loss"] == pytest.approx(loss, rel=1e-6)
    assert summary["eval_targets"] == targets
    eval_log = {f"eval/{k}": summary[f"eval_{k}"] for k in ("loss", "perplexity", "targets")}
    assert read_log(tmp_path / "run")[-1] == {"step": 2, **eval_log}

    cut = evaluate(task, task.module, accelerator, config(micro_batch_size=4, eval_max_batches=1))
    loss, targets = by_hand_loss(task, 4)  # the first batch only
    assert cut["loss"] == pytest.approx(loss, rel=1e-6) and cut["targets"] == targets


def test_a_scored_task_gets_its_outputs_in_example_order(tmp_path):
    task = ScoredRegression()
    summary = fit(task, config(max_steps=3, micro_batch_size=4, eval_every=3), folder(tmp_path, "run"), seed=3)
    ((split, outputs, _),) = task.calls
    assert split == "eval"
    np.testing.assert_array_equal(outputs["index"], np.arange(N_EVAL))
    np.testing.assert_array_equal(outputs["example"], np.arange(N_EVAL))
    x = task.data["eval"][0]
    np.testing.assert_allclose(outputs["prediction"], task.model(x).detach().numpy(), rtol=1e-6)
    assert summary["eval_loss"] == pytest.approx(by_hand_loss(task)[0], rel=1e-6)
    assert "eval_perplexity" not in summary


def test_best_model_is_kept_and_patience_stops_the_run(tmp_path):
    # a tie (step 4) is no improvement: two evaluations without one after step 2 stop the run at 4
    task = ScoredRegression(scores=[1.0, 3.0, 2.0, 3.0, 9.0, 9.0])
    cfg = config(max_steps=6, eval_every=1, save_every=100, metric_for_best="score", early_stopping_patience=2)
    summary = fit(task, cfg, folder(tmp_path, "run"), seed=3)

    assert {k: summary[k] for k in ("steps", "best_step", "best_score", "stopped_early")} == {
        "steps": 4,
        "best_step": 2,
        "best_score": 3.0,
        "stopped_early": True,
    }
    assert len(task.calls) == 4 and max(r["step"] for r in read_log(tmp_path / "run")) == 4
    best = load_file(str(tmp_path / "run" / BEST_DIR / "model.safetensors"))
    at_step = {i + 1: weights for i, (_, _, weights) in enumerate(task.calls)}
    assert all(torch.equal(best[k], at_step[2][k]) for k in best)
    assert not torch.equal(best["weight"], at_step[4]["weight"])  # the tie did not replace it
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step-00000004"]
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "trainer_state.json").read_text())
    assert state["best"] == {"metric": "score", "value": 3.0, "step": 2, "stale": 2, "stopped_early": True}


def test_each_evaluation_is_a_line_of_progress_output(tmp_path, capfd):
    """A run shows its evaluations as it goes (a progress line per evaluation, an evaluation bar),
    not only in TensorBoard and the log file."""
    summary = fit(Regression(), config(micro_batch_size=4), folder(tmp_path, "run"), seed=3)
    err = capfd.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 3", "step 6"]
    assert lines[-1] == f"step 6: eval loss {summary['eval_loss']:.4f}"
    assert "evaluating (eval)" in err


class VaryingLengths(ScoredRegression):
    """A ``LengthAware`` task: example i is ``1 + (7 * i) % 13`` tokens long; records the
    examples of every batch it builds."""

    def __init__(self):
        super().__init__()
        self.built = []

    def lengths(self, split):
        n = N_TRAIN if split == "train" else N_EVAL
        return 1 + (7 * np.arange(n)) % 13

    def eval_indices(self, split="eval"):
        return np.arange(N_EVAL)

    def make_batch(self, indices, epoch, split):
        self.built.append((split, np.asarray(indices).copy()))
        return super().make_batch(indices, epoch, split)


def trained_on(task: VaryingLengths) -> list[list[int]]:
    """The examples of each training batch ``task`` built, in order."""
    return [idx.tolist() for split, idx in task.built if split == "train"]


def test_group_by_length_keeps_the_examples_and_batches_similar_lengths():
    from nlp_ssl.training import group_by_length

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=1000)
    order = rng.permutation(1000)
    grouped = group_by_length(order, lengths, batch=32, rng=np.random.default_rng(1), groups_of=5)
    assert sorted(grouped) == list(range(1000))  # a permutation: every example once
    np.testing.assert_array_equal(grouped[992:], order[992:])  # the same remainder falls off the epoch
    batches = grouped[:992].reshape(-1, 32)
    padded = lambda bs: sum(lengths[b].max() * len(b) for b in bs)  # noqa: E731
    assert padded(batches) < 0.75 * padded(order[:992].reshape(-1, 32))
    first_group = set(order[: 32 * 5])
    assert sum(set(b) <= first_group for b in batches) == 5  # batches never mix groups
    # batches are shuffled, not longest-first within each group
    maxima = [lengths[b].max() for b in batches]
    assert maxima != sorted(maxima, reverse=True)


def test_training_groups_by_length_and_evaluation_reads_longest_first(tmp_path):
    task = VaryingLengths()
    fit(
        task,
        config(max_steps=4, micro_batch_size=8, eval_every=4, group_by_length=True, eval_batch_size=4),
        folder(tmp_path, "run"),
        seed=3,
    )
    lengths = task.lengths("train")
    train = [idx for split, idx in task.built if split == "train"]
    assert all(len(b) == 8 for b in train)
    spread = np.mean([np.ptp(lengths[b]) for b in train])
    assert spread < np.ptp(lengths) / 2  # similar lengths in a batch
    evals = [idx for split, idx in task.built if split == "eval"]
    assert [len(b) for b in evals] == [4, 4, 2]  # eval_batch_size, not micro_batch_size
    read = np.concatenate(evals)
    assert list(task.lengths("eval")[read]) == sorted(task.lengths("eval"), reverse=True)
    ((_, outputs, _),) = task.calls
    np.testing.assert_array_equal(outputs["index"], np.arange(N_EVAL))  # handed back in example order
    np.testing.assert_array_equal(outputs["example"], np.arange(N_EVAL))


def test_a_resume_keeps_the_batch_order_the_run_started_with(tmp_path, caplog):
    """A run started with ``group_by_length`` and resumed under a recipe (or a default) that
    says otherwise continues with the batches it would have had: the checkpoint decides."""
    straight = VaryingLengths()
    fit(straight, config(group_by_length=True), folder(tmp_path, "straight"), seed=3)
    crashed = VaryingLengths()
    crashed.crash_at = 5  # after the checkpoint of step 3
    with pytest.raises(PowerCut):
        fit(crashed, config(group_by_length=True), folder(tmp_path, "resumed"), seed=3)
    resumed = VaryingLengths()
    with caplog.at_level("WARNING", logger="nlp_ssl.training"):
        fit(resumed, config(group_by_length=False, resume="latest"), folder(tmp_path, "resumed"), seed=3)
    assert "resuming keeps the run's batch order" in caplog.text
    assert trained_on(resumed) == trained_on(straight)[3:]
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    ungrouped = VaryingLengths()
    fit(ungrouped, config(group_by_length=False), folder(tmp_path, "ungrouped"), seed=3)
    assert trained_on(ungrouped) != trained_on(straight)  # the setting does change the order


def test_a_checkpoint_from_before_the_group_size_was_saved_resumes_with_groups_of_50(tmp_path, monkeypatch):
    from nlp_ssl.training import TrainState

    grouped = {"group_by_length": True, "micro_batch_size": 2}  # 16 batches an epoch: 50 sorts it whole
    straight = VaryingLengths()
    fit(straight, config(**grouped, length_group_batches=50), folder(tmp_path, "straight"), seed=3)
    saves = TrainState.state_dict
    # the state an earlier version saved: no length_group_batches
    monkeypatch.setattr(
        TrainState, "state_dict", lambda self: {k: v for k, v in saves(self).items() if k != "length_group_batches"}
    )
    crashed = VaryingLengths()
    crashed.crash_at = 5
    with pytest.raises(PowerCut):
        fit(crashed, config(**grouped, length_group_batches=50), folder(tmp_path, "resumed"), seed=3)
    monkeypatch.undo()
    saved = torch.load(
        list_checkpoints(tmp_path / "resumed")[-1] / "state" / "custom_checkpoint_1.pkl", weights_only=False
    )
    assert saved["step"] == 3 and "length_group_batches" not in saved
    resumed = VaryingLengths()
    fit(resumed, config(**grouped, length_group_batches=2, resume="latest"), folder(tmp_path, "resumed"), seed=3)
    fresh = VaryingLengths()
    fit(fresh, config(**grouped, length_group_batches=2), folder(tmp_path, "fresh"), seed=3)
    assert trained_on(resumed) == trained_on(straight)[3:]
    assert trained_on(fresh)[3:] != trained_on(straight)[3:]


@pytest.mark.parametrize(
    "key, value",
    [("length_group_batches", 0), ("length_group_batches", 2.5), ("micro_batch_size", "epoch"), ("eval_every", True)],
)
def test_counts_must_be_positive_integers(key, value):
    from nlp_ssl.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"'{key}' must be a positive integer, got {value!r}"):
        config(**{key: value})


def test_a_resume_keeps_the_length_groups_the_run_started_with(tmp_path, caplog):
    grouped = {"group_by_length": True, "micro_batch_size": 4}  # 8 batches an epoch
    straight = VaryingLengths()
    fit(straight, config(**grouped, length_group_batches=2), folder(tmp_path, "straight"), seed=3)
    crashed = VaryingLengths()
    crashed.crash_at = 5
    with pytest.raises(PowerCut):
        fit(crashed, config(**grouped, length_group_batches=2), folder(tmp_path, "resumed"), seed=3)
    resumed = VaryingLengths()
    with caplog.at_level("WARNING", logger="nlp_ssl.training"):
        fit(resumed, config(**grouped, length_group_batches=8, resume="latest"), folder(tmp_path, "resumed"), seed=3)
    assert "resuming keeps its length groups" in caplog.text
    assert trained_on(resumed) == trained_on(straight)[3:]
    whole_epoch = VaryingLengths()
    fit(whole_epoch, config(**grouped, length_group_batches=8), folder(tmp_path, "whole"), seed=3)
    assert trained_on(whole_epoch)[3:] != trained_on(straight)[3:]  # what the resume would have built from the recipe
    lengths = straight.lengths("train")
    spread = lambda task: np.mean([np.ptp(lengths[b]) for b in trained_on(task)])  # noqa: E731
    assert spread(whole_epoch) < spread(straight)  # one group of 8 batches sorts more finely than four of 2


def test_final_eval_is_the_evaluation_of_the_weights_the_run_ends_with(tmp_path):
    """With ``metric_for_best`` the best model's scores, saved with it, come back in the summary
    (a fine-tuning run reports them instead of scoring the split again); a ``best_model/`` that
    is not the one the run's state counts as best gives nothing to reuse."""
    from nlp_ssl.training import BEST_SCORES

    task = ScoredRegression(scores=[0.9, 0.5])
    summary = fit(
        task, config(max_steps=2, eval_every=1, save_every=1, metric_for_best="score"), folder(tmp_path, "best"), seed=3
    )
    assert summary["best_step"] == 1 and summary["final_eval"]["score"] == 0.9
    saved = json.loads((tmp_path / "best" / BEST_DIR / BEST_SCORES).read_text())
    assert saved["step"] == 1 and saved["metrics"]["score"] == 0.9

    last = fit(ScoredRegression(scores=[0.9, 0.5]), config(max_steps=2, eval_every=1), folder(tmp_path, "last"), seed=3)
    assert last["final_eval"]["score"] == 0.5 and last["final_eval"]["loss"] == last["eval_loss"]

    # another run's best model left in the folder (its scores name step 1, this run's best is step 2)
    task = ScoredRegression(scores=[0.1, 0.8])
    stale = folder(tmp_path, "stale")
    (stale / BEST_DIR).mkdir()
    (stale / BEST_DIR / BEST_SCORES).write_text(json.dumps({"step": 7, "metrics": {"score": 5.0}}))
    cfg = config(max_steps=2, eval_every=1, save_every=1, metric_for_best="score")
    assert fit(task, cfg, stale, seed=3)["final_eval"]["score"] == 0.8  # its own best replaced the stale one
    (stale / BEST_DIR / BEST_SCORES).write_text(json.dumps({"step": 7, "metrics": {"score": 5.0}}))
    assert (
        fit(ScoredRegression(scores=[0.1, 0.8]), config(**{**cfg.__dict__, "resume": "latest"}), stale, seed=3)[
            "final_eval"
        ]
        == {}
    )
