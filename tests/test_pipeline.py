"""The pipeline: stages run in order into one run folder; finished stages are skipped, a
changed recipe re-runs its stage and everything after it, an interrupted stage resumes."""

import json
import os

import pytest
import yaml

from nlp_ssl.config import from_dict
from nlp_ssl.errors import ConfigError
from nlp_ssl.pipeline import PipelineConfig, load_results, run


def pipeline_raw(run_dir, corpus, sentiment_dir) -> dict:
    return {
        "run_dir": str(run_dir),
        "tokenizer": {"datasets": [{"files": str(corpus)}], "vocab_size": 320},
        "pretrain": {
            "mlm": {
                "objective": "mlm",
                "data": {
                    "datasets": [{"files": str(corpus)}],
                    "block_size": 32,
                    "validation_fraction": 0.1,
                    "cache_dir": str(run_dir.parent / "cache"),
                },
                "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
                "train": {
                    "max_steps": 6,
                    "micro_batch_size": 8,
                    "lr": 3e-3,
                    "eval_every": 6,
                    "save_every": 3,
                    "log_every": 1,
                    "tracker": "none",
                    "warmup_steps": 1,
                },
            }
        },
        "finetune": {
            "rt": {
                "task": "sentiment",
                "init": "mlm",
                "dropout": 0.0,
                "data": {
                    "train": {"name": str(sentiment_dir), "split": "train"},
                    "validation": {"name": str(sentiment_dir), "split": "validation"},
                    "test": {"name": str(sentiment_dir), "split": "test"},
                    "labels": ["negative", "positive"],
                    "max_length": 32,
                },
                "train": {"epochs": 2, "micro_batch_size": 16, "lr": 3e-3, "tracker": "none"},
            }
        },
    }


def stamps(run_dir) -> dict:
    return {p.parent.name: os.stat(p).st_mtime_ns for p in run_dir.glob("*/metrics.json")}


def test_pipeline_runs_skips_and_reruns_what_changed(tmp_path, tiny_corpus, sentiment_dir, capsys):
    run_dir = tmp_path / "run"
    raw = pipeline_raw(run_dir, tiny_corpus, sentiment_dir)
    summary = run(from_dict(PipelineConfig, raw))
    assert summary["stages_run"] == 3 and summary["stages_skipped"] == 0
    assert sorted(stamps(run_dir)) == ["finetune-rt", "pretrain-mlm", "tokenizer"]
    table = capsys.readouterr().out
    assert "| finetune-rt | sentiment fine-tuning, 400 examples | test_accuracy" in table
    results = load_results(run_dir)
    assert set(results["stages"]) == {"tokenizer", "pretrain-mlm", "finetune-rt"}
    ft_config = (run_dir / "finetune-rt/resolved_config.yaml").read_text()
    assert f"init: {run_dir / 'pretrain-mlm'}" in ft_config  # the stage name became its folder

    first = stamps(run_dir)
    assert run(from_dict(PipelineConfig, raw))["stages_run"] == 0 and stamps(run_dir) == first

    # a stage an earlier version wrote (the key since renamed, a section its objective no longer
    # has) is still the same recipe: nothing re-runs
    saved = run_dir / "pretrain-mlm/resolved_config.yaml"
    old = yaml.safe_load(saved.read_text())
    old["init_from"] = old.pop("init")
    old["rtd"] = {"generator_layers": 1, "disc_weight": 50.0}
    # and its train section predates length grouping and evaluation batches (random, unset)
    assert old["train"].pop("group_by_length") is False and old["train"].pop("eval_batch_size") is None
    saved.write_text(yaml.safe_dump(old))
    assert run(from_dict(PipelineConfig, raw))["stages_run"] == 0 and stamps(run_dir) == first
    # nor a train section from before a key was added, when the recipe keeps the value it had
    saved = run_dir / "finetune-rt/resolved_config.yaml"
    old = yaml.safe_load(saved.read_text())
    assert old["train"].pop("length_group_batches") == 50
    saved.write_text(yaml.safe_dump(old))
    assert run(from_dict(PipelineConfig, raw))["stages_run"] == 0 and stamps(run_dir) == first

    raw["finetune"]["rt"]["train"]["lr"] = 1e-3  # only the last stage changed
    assert run(from_dict(PipelineConfig, raw))["stages_run"] == 1
    second = stamps(run_dir)
    assert second["finetune-rt"] != first["finetune-rt"]
    assert {k: second[k] for k in ("tokenizer", "pretrain-mlm")} == {k: first[k] for k in ("tokenizer", "pretrain-mlm")}

    raw["pretrain"]["mlm"]["train"]["max_steps"] = 9  # a middle stage changed: it and what follows re-run
    assert run(from_dict(PipelineConfig, raw))["stages_run"] == 2
    third = stamps(run_dir)
    assert third["tokenizer"] == first["tokenizer"] and third["finetune-rt"] != second["finetune-rt"]


def test_an_interrupted_stage_resumes(tmp_path, tiny_corpus, sentiment_dir):
    run_dir = tmp_path / "run"
    raw = pipeline_raw(run_dir, tiny_corpus, sentiment_dir)
    run(from_dict(PipelineConfig, raw))
    pre = run_dir / "pretrain-mlm"
    finished = json.loads((pre / "metrics.json").read_text())
    # as if killed after its step-3 checkpoint: no final files, the last checkpoint gone
    for name in ("metrics.json", "run_info.json"):
        (pre / name).unlink()
    import shutil

    shutil.rmtree(pre / "checkpoints/step-00000006")
    summary = run(from_dict(PipelineConfig, raw))
    assert summary["stages_run"] == 2  # the interrupted stage, and the one that reads it
    resumed = json.loads((pre / "metrics.json").read_text())
    assert resumed["steps"] == 6 and resumed["eval_loss"] == pytest.approx(finished["eval_loss"], abs=1e-6)
    log = [json.loads(l) for l in (pre / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "train/loss" in r] == list(range(1, 7))


def test_stage_recipes_are_checked_before_anything_runs(tmp_path, tiny_corpus, sentiment_dir):
    raw = pipeline_raw(tmp_path / "run", tiny_corpus, sentiment_dir)
    raw["finetune"]["rt"]["data"]["lables"] = ["a", "b"]
    with pytest.raises(
        ConfigError, match=r"unknown key 'finetune.rt.data.lables'; did you mean 'finetune.rt.data.labels'"
    ):
        from_dict(PipelineConfig, raw)
    raw = pipeline_raw(tmp_path / "run", tiny_corpus, sentiment_dir)
    raw["pretrain"]["mlm"]["output_dir"] = "elsewhere"
    with pytest.raises(ConfigError, match="remove their 'output_dir'"):
        from_dict(PipelineConfig, raw)
    assert not (tmp_path / "run").exists()


def test_the_your_own_data_recipe_runs_on_a_generated_csv(tmp_path, monkeypatch):
    """recipes/pipeline/your_data.yaml on generated files: a CSV of reviews with HTML line
    breaks and string labels, unlabelled text; the data written once reaches every stage."""
    import csv
    from pathlib import Path

    from nlp_ssl.config import load_recipe
    from tests.helpers import make_reviews, make_sentences

    recipe = Path(__file__).resolve().parents[1] / "recipes/pipeline/your_data.yaml"
    (tmp_path / "data").mkdir()
    (tmp_path / "data/unlabelled.txt").write_text("\n".join(make_sentences(400, seed=5)) + "\n")
    for name, n, seed in (("labelled", 240, 1), ("test", 80, 2)):
        with open(tmp_path / f"data/{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["review", "sentiment"])
            for row in make_reviews(n, seed=seed):
                writer.writerow([row["text"].replace(" ", " <br /> ", 1), row["label"]])
    monkeypatch.chdir(tmp_path)  # the recipe's paths are relative to where it runs
    tiny = {
        "tokenizer.vocab_size": 320,
        "pretrain.sg.model.dim": 32,
        "pretrain.sg.model.min_count": 1,
        "pretrain.sg.train.epochs": 1,
        "pretrain.sg.train.workers": 1,
        "pretrain.sg.train.tracker": "none",
        "pretrain.mlm.model.preset": "tiny",
        "pretrain.mlm.model.layers": 1,
        "pretrain.mlm.model.hidden": 32,
        "pretrain.mlm.model.heads": 2,
        "pretrain.mlm.model.max_positions": 64,
        "pretrain.mlm.data.block_size": 32,
        "pretrain.mlm.data.validation_fraction": 0.1,
        "pretrain.mlm.data.cache_dir": str(tmp_path / "cache"),
        "pretrain.mlm.train.max_steps": 4,
        "pretrain.mlm.train.eval_every": 4,
        "pretrain.mlm.train.save_every": 4,
        "pretrain.mlm.train.tracker": "none",
        "finetune.classifier.data.max_length": 32,
        "finetune.classifier.dropout": 0.0,
        "finetune.classifier.train.epochs": 3,
        "finetune.classifier.train.micro_batch_size": 16,
        "finetune.classifier.train.lr": 3e-3,
        "finetune.classifier.train.tracker": "none",
        "baseline.frozen.char_ngrams": [2, 3],
    }
    overrides = [f"run_dir={tmp_path / 'run'}"] + [f"{k}={v}" for k, v in tiny.items()]
    cfg = load_recipe(PipelineConfig, recipe, overrides)
    summary = run(cfg)
    assert summary["stages_run"] == 6
    results = load_results(tmp_path / "run")
    for stage in ("finetune-classifier", "baseline-frozen", "baseline-tfidf"):
        metrics = results["stages"][stage]
        assert metrics["test_accuracy"] > 0.5, stage  # the label words decide the label
        assert {"test_f1_negative", "test_f1_positive"} <= set(metrics)  # the string labels, in order
    ft = yaml.safe_load((tmp_path / "run/finetune-classifier/resolved_config.yaml").read_text())
    assert ft["data"]["label_column"] == "sentiment" and ft["data"]["max_length"] == 32
    assert ft["data"]["test"]["files"] == "data/test.csv" and ft["data"]["test"]["text_column"] == "review"
    sg = yaml.safe_load((tmp_path / "run/pretrain-sg/resolved_config.yaml").read_text())
    assert sg["data"]["datasets"][0]["files"] == "data/unlabelled.txt"
    records = [json.loads(x) for x in (tmp_path / "run/baseline-tfidf/predictions.jsonl").read_text().splitlines()]
    assert "<br" not in records[0]["text"] and records[0]["label"] in ("negative", "positive")
