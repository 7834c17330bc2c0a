"""Publishing, online part, against a strict loopback Hub (tests/hub_server.py): the real
huggingface_hub and transformers clients push over HTTP and load back what they pushed."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.hub_server import HubServer

TOKEN = "hf_" + "t" * 34
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def hub():
    with HubServer(TOKEN) as server:
        yield server


@pytest.fixture
def runs(tmp_path, pretrained, finetuned):
    """Copies of the shared runs (a push records itself in the run folder), finetune -> its base."""
    shutil.copytree(pretrained["mlm"], tmp_path / "mlm")
    shutil.copytree(finetuned, tmp_path / "ft")
    resolved = (tmp_path / "ft/resolved_config.yaml").read_text().replace(str(pretrained["mlm"]), str(tmp_path / "mlm"))
    (tmp_path / "ft/resolved_config.yaml").write_text(resolved)
    return {"base": tmp_path / "mlm", "ft": tmp_path / "ft"}


def client_env(tmp_path, endpoint: str, token: str = TOKEN) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_TOKEN=token,
        HF_HUB_DISABLE_TELEMETRY="1",
        NLP_SSL_PUSH_RETRY_WAIT="0.05",
    )
    return env


def nlp_ssl(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nlp_ssl", *args], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )


def files_of(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_then_load_the_model_back_through_the_hub(tmp_path, hub, runs):
    env = client_env(tmp_path, hub.endpoint)
    before = files_of(runs["ft"])
    pushed = nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", "me/rt-sentiment", "--tag", "v1")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert TOKEN not in pushed.stdout + pushed.stderr
    state = hub.hub.state()
    assert state["violations"] == []
    (commit,) = state["commits"]
    assert commit["ref"] == "main" and commit["summary"].startswith("Upload sentiment model (test accuracy")
    assert commit["files"] == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # the weights went through LFS, and the server checked their sha256 on upload
    assert state["lfs_objects"] == [hashlib.sha256((runs["ft"] / "model/model.safetensors").read_bytes()).hexdigest()]
    assert state["repos"]["me/rt-sentiment"]["tags"] == {"v1": commit["sha"]}
    # the run is as it was, plus the record of the push; no file anywhere holds the token
    after = files_of(runs["ft"])
    assert set(after) - set(before) == {"pushed.json"} and all(after[k] == before[k] for k in before)
    assert not any(TOKEN.encode() in data for data in after.values())

    load = (
        "import json, sys\nfrom transformers import pipeline\n"
        "clf = pipeline('text-classification', model='me/rt-sentiment')\n"
        "print(json.dumps(clf(['Great good brilliant film.', 'Boring awful slow movie.'])))"
    )
    loaded = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    remote = json.loads(loaded.stdout.strip().splitlines()[-1])
    from nlp_ssl.inference import predict_texts

    local = predict_texts(str(runs["ft"]), ["Great good brilliant film.", "Boring awful slow movie."])
    assert [r["label"] for r in remote] == [r["label"] for r in local]
    assert [r["score"] for r in remote] == pytest.approx([r["probability"] for r in local], abs=1e-5)
    assert hub.hub.state()["violations"] == []


def test_pull_request_and_branch_leave_main_alone(tmp_path, hub, runs):
    env = client_env(tmp_path, hub.endpoint)
    assert nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", "me/rt").returncode == 0
    main_sha = hub.hub.repos["me/rt"]["shas"]["main"]
    pr = nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", "me/rt", "--create-pr", "--message", "Try a new head")
    assert pr.returncode == 0, pr.stderr[-2000:]
    assert json.loads(pr.stdout)["pr_url"].endswith("/me/rt/discussions/1")
    branch = nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", "me/rt", "--revision", "experiment")
    assert branch.returncode == 0, branch.stderr[-2000:]
    repo = hub.hub.repos["me/rt"]
    assert repo["shas"]["main"] == main_sha and set(repo["refs"]) == {"main", "refs/pr/1", "experiment"}
    assert [c["ref"] for c in hub.hub.commits] == ["main", "refs/pr/1", "experiment"]
    assert hub.hub.commits[1]["summary"] == "Try a new head"
    assert hub.hub.violations == []


def test_a_finetuned_model_names_its_pushed_base_model(tmp_path, hub, runs):
    from huggingface_hub import ModelCard

    env = client_env(tmp_path, hub.endpoint)
    assert nlp_ssl(env, "push", str(runs["base"]), "--repo-id", "me/tiny-bert").returncode == 0
    assert nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", "me/tiny-bert-rt").returncode == 0
    card = hub.hub.repos["me/tiny-bert-rt"]["refs"]["main"]["README.md"].decode()
    assert ModelCard(card).data.base_model == "me/tiny-bert"
    base_card = ModelCard(hub.hub.repos["me/tiny-bert"]["refs"]["main"]["README.md"].decode())
    assert base_card.data.pipeline_tag == "fill-mask"


def test_a_refused_token_is_explained_and_nothing_changes(tmp_path, hub, runs):
    before = files_of(runs["ft"])
    bad = nlp_ssl(
        client_env(tmp_path, hub.endpoint, token="hf_" + "w" * 34), "push", str(runs["ft"]), "--repo-id", "me/x"
    )
    assert bad.returncode == 2
    err = bad.stderr.strip().splitlines()[-1]
    assert "refused (401)" in err and "HF_TOKEN" in err and "local files are intact" in err
    assert "w" * 34 not in bad.stderr + bad.stdout
    assert files_of(runs["ft"]) == before and hub.hub.repos == {}


def test_an_unreachable_hub_is_retried_then_explained(tmp_path, runs):
    env = client_env(tmp_path, "http://127.0.0.1:9")  # discard port: connection refused
    down = nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", "me/x")
    assert down.returncode == 2
    assert down.stderr.count("retrying") == 2
    assert "failed 3 times" in down.stderr and "rerun the same nlp-ssl push command" in down.stderr
    assert not (runs["ft"] / "pushed.json").exists()


def test_offline_push_is_refused_before_any_work(tmp_path, runs, capsys):
    from nlp_ssl.cli import main

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert main(["push", str(runs["ft"]), "--repo-id", "me/x"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_a_training_recipe_pushes_its_checkpoints_and_its_result(tmp_path, hub, runs, sentiment_dir):
    from nlp_ssl.config import dump_yaml
    from tests.finetune_helpers import sentiment_config

    cfg = sentiment_config(
        tmp_path / "run", runs["base"], sentiment_dir, epochs=2, save_every="epoch", tracker="tensorboard"
    )
    cfg.push_to_hub, cfg.hub_model_id, cfg.hub_checkpoint_branch = True, "me/trained", "checkpoints"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dump_yaml(cfg))
    done = nlp_ssl(client_env(tmp_path, hub.endpoint), "finetune", str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]
    repo = hub.hub.repos["me/trained"]
    assert [(c["ref"], c["summary"]) for c in hub.hub.commits] == [
        ("checkpoints", "Checkpoint at step 25"),
        ("checkpoints", "Checkpoint at step 50"),
        ("main", hub.hub.commits[-1]["summary"]),
    ]
    assert hub.hub.commits[-1]["summary"].startswith("Upload sentiment model (test accuracy")
    assert set(repo["tags"]) == {"step-25", "step-50"}
    assert set(repo["refs"]["main"]) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert json.loads((tmp_path / "run/pushed.json").read_text())["revision"] == "main"
    assert hub.hub.violations == []
    # the token was in the environment of the whole run: no file it wrote holds it (configs, logs,
    # TensorBoard events, checkpoints, optimizer state), nor anything it uploaded, nor its output
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.startswith("events.out.tfevents") for p in written) and any(
        p.suffix == ".safetensors" for p in written
    )
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()]
    uploaded = [content for r in hub.hub.repos.values() for files in r["refs"].values() for content in files.values()]
    assert uploaded and not [c for c in uploaded if TOKEN.encode() in c]
    assert TOKEN not in done.stdout + done.stderr


def test_a_recipe_that_would_push_offline_is_refused_before_training(tmp_path, runs, sentiment_dir):
    from nlp_ssl import finetune
    from nlp_ssl.errors import ConfigError
    from nlp_ssl.hub import Publisher, PublishError
    from tests.finetune_helpers import sentiment_config

    cfg = sentiment_config(tmp_path / "run", runs["base"], sentiment_dir)
    cfg.push_to_hub, cfg.hub_model_id = True, "me/trained"
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is too"):
        finetune.run(cfg, publisher=Publisher(cfg))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="this stage was given no publisher"):  # never a push dropped silently
        finetune.run(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("NLP_SSL_LIVE_HUB_TOKEN") and os.environ.get("NLP_SSL_LIVE_HUB_REPO")),
    reason="pushes to the real Hub: set NLP_SSL_LIVE_HUB_TOKEN and NLP_SSL_LIVE_HUB_REPO (by hand only)",
)
def test_live_push_to_the_real_hub(tmp_path, runs):
    """By hand: NLP_SSL_LIVE_HUB_TOKEN=hf_... NLP_SSL_LIVE_HUB_REPO=me/nlp-ssl-test pytest -m live."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_TOKEN=os.environ["NLP_SSL_LIVE_HUB_TOKEN"], HF_HOME=str(tmp_path / "hf_home"))
    repo = os.environ["NLP_SSL_LIVE_HUB_REPO"]
    pushed = nlp_ssl(env, "push", str(runs["ft"]), "--repo-id", repo, "--private")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    load = f"from transformers import pipeline; print(pipeline('text-classification', model='{repo}')('good film'))"
    assert subprocess.run([sys.executable, "-c", load], env=env, timeout=600).returncode == 0


def test_the_pipeline_pushes_each_stage_and_links_the_fine_tuned_model_to_its_base(
    tmp_path, hub, tiny_corpus, sentiment_dir
):
    import yaml
    from huggingface_hub import ModelCard

    from tests.test_pipeline import pipeline_raw

    raw = pipeline_raw(tmp_path / "demo", tiny_corpus, sentiment_dir)
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump(raw))  # first without pushing
    env = client_env(tmp_path, hub.endpoint)
    assert nlp_ssl(env, "pipeline", str(recipe)).returncode == 0
    assert hub.hub.commits == []

    # turning pushing on pushes the finished stages without training them again
    stamp = (tmp_path / "demo/finetune-rt/metrics.json").stat().st_mtime_ns
    recipe.write_text(yaml.safe_dump({**raw, "push_to_hub": True, "hub_namespace": "me"}))
    done = nlp_ssl(env, "pipeline", str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "demo/finetune-rt/metrics.json").stat().st_mtime_ns == stamp
    assert set(hub.hub.repos) == {"me/demo-pretrain-mlm", "me/demo-finetune-rt"}
    card = ModelCard(hub.hub.repos["me/demo-finetune-rt"]["refs"]["main"]["README.md"].decode())
    assert card.data.base_model == "me/demo-pretrain-mlm"
    results = json.loads((tmp_path / "demo/results.json").read_text())
    assert results["hub"] == {"pretrain-mlm": "me/demo-pretrain-mlm", "finetune-rt": "me/demo-finetune-rt"}

    # pushed already: a third run neither trains nor pushes
    commits = len(hub.hub.commits)
    assert nlp_ssl(env, "pipeline", str(recipe)).returncode == 0
    assert len(hub.hub.commits) == commits and hub.hub.violations == []


def test_a_pipeline_that_would_push_offline_is_refused_before_any_stage(tmp_path, tiny_corpus, sentiment_dir):
    from nlp_ssl.config import from_dict
    from nlp_ssl.hub import PublishError
    from nlp_ssl.pipeline import PipelineConfig, run
    from tests.test_pipeline import pipeline_raw

    raw = {**pipeline_raw(tmp_path / "demo", tiny_corpus, sentiment_dir), "push_to_hub": True, "hub_namespace": "me"}
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is too"):
        run(from_dict(PipelineConfig, raw))
    assert not (tmp_path / "demo").exists()
