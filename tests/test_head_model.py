"""A baseline run's head is a model: evaluate, predict, export and push take it, and the
exported folder loads outside nlp-ssl (skops + sentence-transformers) with the stage's
predictions."""

import json
import re
import subprocess
import sys

import pytest

from nlp_ssl import baselines, pretrain
from nlp_ssl.config import from_dict
from tests.helpers import saved_head
from tests.test_embeddings import embedding_config
from tests.test_push import TOKEN, client_env, nlp_ssl


def data_section(sentiment_dir) -> dict:
    return {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "test": {"name": str(sentiment_dir), "split": "test"},
        "labels": ["negative", "positive"],
    }


@pytest.fixture(scope="module")
def heads(tmp_path_factory, tiny_corpus, tiny_tokenizer, sentiment_dir, pretrained):
    """Heads of every layout: static vectors + TF-IDF words and characters, a frozen transformer
    alone, TF-IDF alone."""
    root = tmp_path_factory.mktemp("heads")
    pretrain.run(embedding_config(root / "vectors", tiny_tokenizer, tiny_corpus, epochs=2))
    recipes = {
        "both": {"method": "frozen_logreg", "init": str(root / "vectors"), "tfidf": True, "char_ngrams": [2, 4]},
        "transformer": {"method": "frozen_logreg", "init": str(pretrained["mlm"])},
        "tfidf": {},
    }
    for name, recipe in recipes.items():
        raw = {"output_dir": str(root / name), "data": data_section(sentiment_dir), **recipe}
        baselines.run(from_dict(baselines.BaselineConfig, raw))
    return {name: root / name for name in recipes}


def stage_predictions(run) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("layout", ["both", "transformer", "tfidf"])
def test_predict_and_evaluate_give_the_stage_predictions(heads, sentiment_dir, tmp_path, layout):
    from nlp_ssl.inference import EvaluateConfig, evaluate_checkpoint, predict_texts

    run = heads[layout]
    records = stage_predictions(run)
    predicted = predict_texts(str(run), [r["text"] for r in records])
    assert [p["label"] for p in predicted] == [r["prediction"] for r in records]
    for p, r in zip(predicted, records):
        assert p["probabilities"] == pytest.approx(r["probabilities"], abs=1e-5)

    from nlp_ssl.data import DatasetSpec

    spec = DatasetSpec(name=str(sentiment_dir), split="test")
    metrics = evaluate_checkpoint(EvaluateConfig(str(run / "model"), spec, str(tmp_path / "scored")))
    stage = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(stage["test_accuracy"]) and metrics["examples"] == len(records)
    scored = stage_predictions(tmp_path / "scored")
    assert [s["prediction"] for s in scored] == [r["prediction"] for r in records]
    assert [s["label"] for s in scored] == [r["label"] for r in records]


def test_the_command_line_predicts_with_a_head(heads):
    env = {**client_env(heads["both"], "http://127.0.0.1:9"), "HF_HUB_OFFLINE": "1"}
    done = nlp_ssl(env, "predict", str(heads["both"]), "a great good film", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.strip().splitlines()
    assert json.loads(line)["label"] in ("negative", "positive")


def test_the_exported_head_loads_without_nlp_ssl_and_predicts_the_same(heads, tmp_path):
    from huggingface_hub import ModelCard

    from nlp_ssl.export import export

    run = heads["both"]
    out = export(str(run), str(tmp_path / "exported"))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert {"README.md", "head.skops", "head_config.json", "body/modules.json"} <= set(files)
    assert "body/README.md" not in files and not any(f.endswith((".joblib", ".pkl")) for f in files)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sklearn" and "nlp-ssl" in card.data.tags
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    stage = json.loads((run / "metrics.json").read_text())
    assert results[("test", "accuracy")] == pytest.approx(stage["test_accuracy"])
    assert "TF-IDF" in card.text and "no context" in card.text.replace("carry no context", "no context")

    snippet = re.search(r"```python\n(.*?)```", card.text, flags=re.S).group(1)
    assert "nlp_ssl" not in snippet
    records = stage_predictions(run)
    texts = [r["text"] for r in records]
    script = "import sys\nsys.modules['nlp_ssl'] = None  # any import of nlp-ssl fails\n" + snippet.replace(
        'folder = "PATH"', f"folder = {str(out)!r}"
    ).replace('texts = ["a gripping, beautifully shot film", "dull and far too long"]', f"texts = {texts!r}")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert eval(done.stdout.strip().splitlines()[-1]) == [r["prediction"] for r in records]


def test_push_uploads_the_head(heads, tmp_path):
    from tests.hub_server import HubServer

    with HubServer(TOKEN) as hub:
        env = client_env(tmp_path, hub.endpoint)
        pushed = nlp_ssl(env, "push", str(heads["tfidf"]), "--repo-id", "me/rt-tfidf")
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        state = hub.hub.state()
        assert state["violations"] == []
        (commit,) = state["commits"]
        assert commit["summary"].startswith("Upload tfidf_logreg sentiment head (test accuracy")
        assert commit["files"] == ["README.md", "head.skops", "head_config.json"]


def test_the_head_file_stays_small_in_members_whatever_the_vocabulary(heads):
    """skops stores each numpy scalar as an archive member and re-lists the archive for every
    one (hours for a 200,000-term vocabulary): the vocabularies are saved as Python ints."""
    import zipfile

    members = zipfile.ZipFile(heads["both"] / "model" / "head.skops").namelist()
    vocabulary = sum(len(part.vocabulary_) for _, part in saved_head(heads["both"])["vectorizer"].transformer_list)
    assert vocabulary > 500 and len(members) < 20
