"""Publishing, offline layer: the exported folder loads everywhere, carries exactly the files
a push would upload, and its model card round-trips the run's metrics."""

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file

from nlp_ssl.cli import main
from nlp_ssl.errors import DataError, OutputError
from nlp_ssl.export import export, export_files, scan_for_leaks

CLASSIFIER_FILES = {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, finetuned):
    out = tmp_path_factory.mktemp("export") / "rt-sentiment"
    export(str(finetuned), str(out), license="apache-2.0", repo_id="someone/rt-sentiment")
    return out


def test_export_holds_exactly_the_loadable_files(exported, finetuned):
    names = {p.name for p in exported.iterdir()}
    assert names == CLASSIFIER_FILES
    # the list upload_folder would send (no allow/ignore patterns) is that folder, nothing else
    assert set(filter_repo_objects(sorted(names))) == CLASSIFIER_FILES
    assert export_files(finetuned / "model") == sorted(CLASSIFIER_FILES - {"README.md"})
    ours, theirs = load_file(str(exported / "model.safetensors")), load_file(str(finetuned / "model/model.safetensors"))
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape
        assert torch.equal(ours[k], theirs[k])
    assert scan_for_leaks(exported) == []
    for folder in (exported, finetuned / "model"):  # how this session loaded it is not part of the tokenizer
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        assert not {"is_local", "local_files_only"} & set(tokenizer_config), folder
    assert str(finetuned) not in "".join(
        p.read_text(errors="replace") for p in exported.iterdir() if p.suffix != ".safetensors"
    )


def test_export_reloads_with_auto_classes_and_pipeline(exported, finetuned):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    assert AutoConfig.from_pretrained(exported).id2label == {0: "negative", 1: "positive"}
    tok = AutoTokenizer.from_pretrained(exported)
    assert (
        tok("Good film.")["input_ids"] == AutoTokenizer.from_pretrained(finetuned / "model")("Good film.")["input_ids"]
    )
    a = AutoModelForSequenceClassification.from_pretrained(exported).state_dict()
    b = AutoModelForSequenceClassification.from_pretrained(finetuned / "model").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    texts = ["Great good brilliant film.", "Boring awful slow movie."]
    assert [r["label"] for r in pipeline("text-classification", model=str(exported))(texts)] == ["positive", "negative"]


def test_card_round_trips_the_metrics(exported, finetuned):
    metrics = json.loads((finetuned / "metrics.json").read_text())
    card = ModelCard.load(exported / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-classification"
    assert card.data.library_name == "transformers" and "nlp-ssl" in card.data.tags
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    for split in ("validation", "test"):
        assert got[(split, "accuracy")] == pytest.approx(metrics[f"{split}_accuracy"], abs=1e-6)
        assert got[(split, "f1")] == pytest.approx(metrics[f"{split}_f1_macro"], abs=1e-6)
    assert {r.metric_type: r.metric_args for r in card.data.eval_results}["f1"] == {"average": "macro"}
    assert card.data.model_name == "rt-sentiment"
    assert 'pipeline("text-classification", model="someone/rt-sentiment")' in card.text
    assert "| lr | 0.003 |" in card.text and "Reproduce" in card.text


def test_pretrained_lm_export_has_generation_config_and_loss(tmp_path, pretrained):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lm"
    assert main(["export", str(pretrained["clm"]), str(out)]) == 0
    assert "generation_config.json" in {p.name for p in out.iterdir()}
    card = ModelCard.load(out / "README.md")
    metrics = json.loads((pretrained["clm"] / "metrics.json").read_text())
    got = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert got["loss"] == pytest.approx(metrics["eval_loss"], abs=1e-6)
    assert got["perplexity"] == pytest.approx(metrics["eval_perplexity"], rel=1e-6)
    assert card.data.pipeline_tag == "text-generation"
    AutoModelForCausalLM.from_pretrained(out)


def test_export_refuses_what_it_must_not_publish(tmp_path, finetuned, monkeypatch):
    # a token that found its way into a model file: refused, nothing written
    leaky = tmp_path / "leaky"
    shutil.copytree(finetuned / "model", leaky)
    token = "hf_" + "x" * 34
    config = json.loads((leaky / "config.json").read_text())
    config["note"] = token
    (leaky / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(OutputError, match="a Hub token in config.json"):
        export(str(leaky), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # pickled weights only
    pickled = tmp_path / "pickled"
    shutil.copytree(finetuned / "model", pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(DataError, match="no \\*.safetensors weights"):
        export(str(pickled), str(tmp_path / "out"))
    with pytest.raises(OutputError, match="lies inside the run"):
        export(str(finetuned), str(finetuned / "export"))


def test_export_does_not_replace_a_folder_without_overwrite(tmp_path, finetuned, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["export", str(finetuned), str(out)]) == 2
    assert "choose a new or empty folder" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep me"
    assert main(["export", str(finetuned), str(out), "--overwrite"]) == 2  # not an export: never replaced
    assert "is not an nlp-ssl output" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep me"
    exported = tmp_path / "exported"
    assert main(["export", str(finetuned), str(exported)]) == 0
    assert main(["export", str(finetuned), str(exported)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(finetuned), str(exported), "--overwrite"]) == 0
    assert {p.name for p in exported.iterdir()} == CLASSIFIER_FILES


def test_absolute_paths_on_the_command_line_do_not_reach_the_card(tmp_path, finetuned):
    """A run started with ``init=/abs/...`` and an absolute output_dir exports: the card's
    reproduce line keeps only each path's last part; a path that does leak is named."""
    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    info = json.loads((run / "run_info.json").read_text())
    info["command"] = [
        "/usr/bin/nlp-ssl",
        "finetune",
        "/work/me/recipes/rt.yaml",
        "init=/work/me/runs/mlm",
        f"output_dir={run}",
        "train.lr=3e-4",
        "--overwrite",
    ]
    (run / "run_info.json").write_text(json.dumps(info))
    card = ModelCard.load(export(str(run), str(tmp_path / "out")) / "README.md")
    assert (
        "nlp-ssl finetune <local>/rt.yaml init=<local>/mlm output_dir=<local>/run train.lr=3e-4 --overwrite"
        in card.text
    )

    config = json.loads((run / "model" / "config.json").read_text())
    config["note"] = "/work/me/private/notes.txt"
    (run / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(OutputError, match=r"a local path in config.json \(/work/me/private/notes.txt\)"):
        export(str(run), str(tmp_path / "out2"))


def test_a_pretraining_card_names_the_held_out_share_and_the_rows_it_scored(tmp_path, pretrained):
    """No validation set: the loss is on a held-out share of the training split, and a corpus
    read with max_rows is only its first rows; the model-index says both."""
    import yaml

    run = tmp_path / "mlm"
    shutil.copytree(pretrained["mlm"], run)
    recipe = yaml.safe_load((run / "resolved_config.yaml").read_text())
    recipe["data"]["validation"] = []
    recipe["data"]["datasets"][0].update({"max_rows": 500, "split": "train"})
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(recipe))
    card = ModelCard.load(export(str(run), str(tmp_path / "out")) / "README.md")
    splits = {r.dataset_split for r in card.data.eval_results}
    assert splits == {
        f"train (first 500 rows) (held out: a seeded {recipe['data']['validation_fraction']:.0%} of its blocks)"
    }


@pytest.mark.parametrize(
    "start,expected",
    [
        (
            {"from_scratch": True, "init_embeddings": "runs/pretrain-sg"},
            "from fresh weights, token embeddings from the word2vec run `runs/pretrain-sg`.",
        ),
        (
            {"from_scratch": False, "init_embeddings": "runs/pretrain-sg"},
            "token embeddings from the word2vec run `runs/pretrain-sg`.",
        ),
        ({"from_scratch": True, "init_embeddings": None}, "from fresh weights (no pretraining)."),
    ],
)
def test_the_card_says_where_the_weights_came_from(tmp_path, finetuned, start, expected):
    import yaml

    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    recipe = yaml.safe_load((run / "resolved_config.yaml").read_text())
    recipe.update(start)
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(recipe))
    card = ModelCard.load(export(str(run), str(tmp_path / "out")) / "README.md")
    summary = next(line for line in card.text.splitlines() if "fine-tuned for" in line)
    assert summary.endswith(expected), summary
