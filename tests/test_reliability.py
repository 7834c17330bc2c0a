"""Reliability promises: one run per output folder (a lock that dies with its process)."""

import signal
import subprocess
import sys
import textwrap

import pytest

from nlp_ssl import finetune
from nlp_ssl.errors import OutputError
from tests.finetune_helpers import sentiment_config

HOLD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from nlp_ssl.outputs import run_lock
    with run_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()
""")


def hold_lock(path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.parametrize("ending", ["finishes", "is killed with SIGKILL"])
def test_a_second_run_on_a_busy_output_dir_refuses_until_the_first_ends(tmp_path, pretrained, sentiment_dir, ending):
    out = tmp_path / "run"
    cfg = sentiment_config(out, pretrained["mlm"], sentiment_dir, epochs=1)
    holder = hold_lock(out)
    try:
        with pytest.raises(
            OutputError, match=rf"output_dir {out} is in use by another nlp-ssl run \(pid {holder.pid} on "
        ):
            finetune.run(cfg)
        assert not out.exists()
    finally:
        if ending == "finishes":
            holder.stdin.close()
        else:
            holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert finetune.run(cfg)["test_accuracy"] >= 0  # the kernel released the lock with its process


def test_the_cli_says_the_folder_is_busy_in_one_line(tmp_path, tiny_corpus):
    import yaml

    from tests.test_pipeline import pipeline_raw

    raw = pipeline_raw(tmp_path / "p", tiny_corpus, tmp_path)
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump({"run_dir": raw["run_dir"], "tokenizer": raw["tokenizer"]}))
    holder = hold_lock(tmp_path / "p")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nlp_ssl", "pipeline", str(recipe)], capture_output=True, text=True, timeout=120
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: output_dir {tmp_path / 'p'} is in use by another")
    assert not (tmp_path / "p").exists()


# -- checkpoints: damage on disk, disk full, kill -9 at random points --------------------------------

import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from safetensors.torch import load_file  # noqa: E402

from nlp_ssl import pretrain  # noqa: E402
from nlp_ssl.config import from_dict  # noqa: E402
from tests.pretrain_helpers import tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def final_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "model" / "model.safetensors")


def logged(run_dir: Path) -> list[dict]:
    """Every logged figure except wall-clock ones."""
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(("tokens_per_s", "mfu", "seconds"))} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    import torch

    assert logged(a) == logged(b)
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def as_interrupted(run_dir: Path) -> None:
    """What a crash after the last checkpoint leaves: no final files."""
    import shutil

    for name in ("metrics.json", "run_info.json"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "model")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_corpus, tiny_tokenizer):
    """An uninterrupted run: what every interrupted one must end up equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    pretrain.run(tiny_config(out, tiny_tokenizer, tiny_corpus, "mlm", max_steps=12, save_every=4, keep_last=3))
    return out


def test_a_damaged_checkpoint_is_skipped_with_a_warning(tmp_path, tiny_corpus, tiny_tokenizer, reference, caplog):
    out = tmp_path / "run"
    cfg = tiny_config(out, tiny_tokenizer, tiny_corpus, "mlm", max_steps=12, save_every=4, keep_last=3)
    pretrain.run(cfg)
    as_interrupted(out)
    weights = out / "checkpoints/step-00000012/state/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only the checksum can tell
    weights.write_bytes(bytes(data))
    (out / "checkpoints/step-00000008/state/optimizer.bin").unlink()
    cfg.train.resume = "latest"
    with caplog.at_level("INFO"):
        pretrain.run(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("step-00000012 is damaged (state/model.safetensors does not match its checksum)" in w for w in warnings)
    assert any("step-00000008 is damaged (state/optimizer.bin is missing)" in w for w in warnings)
    assert any("resumed from" in r.getMessage() and "step-00000004" in r.getMessage() for r in caplog.records)
    assert_same_run(out, reference)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(
    tmp_path, tiny_corpus, tiny_tokenizer, reference, monkeypatch
):
    import errno

    from nlp_ssl import checkpoint as ckpt
    from nlp_ssl.training import checkpointing

    real, calls = checkpointing.write_model_folder, []

    def fills_the_disk(task, directory):
        calls.append(directory)
        if len(calls) == 2:  # the second checkpoint: half a file, then no space
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / "model.safetensors").write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(task, directory)

    monkeypatch.setattr(checkpointing, "write_model_folder", fills_the_disk)
    out = tmp_path / "run"
    cfg = tiny_config(out, tiny_tokenizer, tiny_corpus, "mlm", max_steps=12, save_every=4, keep_last=3)
    with pytest.raises(
        OutputError,
        match=r"saving the checkpoint of step 8 failed \(No space left on device\); "
        r"the last good checkpoint is .*step-00000004; free space and rerun",
    ):
        pretrain.run(cfg)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000004"]  # no partial one left
    assert ckpt.verify(out / "checkpoints/step-00000004") is None
    monkeypatch.setattr(checkpointing, "write_model_folder", real)  # space freed
    cfg.train.resume = "latest"
    pretrain.run(cfg)
    assert_same_run(out, reference)


def launch(stage: str, recipe: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nlp_ssl", stage, str(recipe), *overrides],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def progress(run_dir: Path) -> int:
    """Checkpoints and finished stages anywhere under ``run_dir``: grows as a run advances."""
    for _ in range(20):  # the run prunes checkpoints while we walk its folder: walk again
        try:
            done = len(list(run_dir.rglob("metrics.json")))
            steps = [
                int(p.name.split("-")[1])
                for p in run_dir.rglob("checkpoints/step-*")
                if (p / "trainer_state.json").is_file()
            ]
            return done * 10_000 + max(steps, default=0)
        except FileNotFoundError:
            continue
    return 0


def pretrain_recipe(out, c):
    return tiny_config(out, c["tokenizer"], c["corpus"], "mlm", max_steps=40, save_every=1, keep_last=2, eval_every=8)


def finetune_recipe(out, c):
    return sentiment_config(out, c["mlm"], c["sentiment"], epochs=2, save_every=2, eval_every=5, keep_last=2)


def pipeline_recipe(out, c):
    from nlp_ssl.pipeline import PipelineConfig
    from tests.test_pipeline import pipeline_raw

    raw = pipeline_raw(out, c["corpus"], c["sentiment"])
    raw["pretrain"]["mlm"]["train"].update(max_steps=12, save_every=1, keep_last=2)
    raw["finetune"]["rt"]["train"].update(save_every=3, keep_last=2)
    return from_dict(PipelineConfig, raw)


def compare_outputs(killed: Path, clean: Path, stage: str) -> None:
    runs = [""] if stage != "pipeline" else ["pretrain-mlm", "finetune-rt"]
    for sub in runs:
        assert_same_run(killed / sub, clean / sub)
        a, b = (json.loads((d / sub / "metrics.json").read_text()) for d in (killed, clean))
        varying = ("seconds", "tokens_per_s", "mfu", "model_dir", "_at", "init")  # init: the other run's folder
        assert {k: v for k, v in a.items() if not k.endswith(varying)} == {
            k: v for k, v in b.items() if not k.endswith(varying)
        }
        assert not list((killed / sub).rglob(".*partial*"))


@pytest.mark.parametrize(
    "stage, build, resume, kills_wanted",
    [
        ("pretrain", pretrain_recipe, "train.resume=latest", 3),
        ("finetune", finetune_recipe, "train.resume=latest", 2),
        ("pipeline", pipeline_recipe, None, 2),  # a pipeline resumes its interrupted stage by itself
    ],
)
def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_corpus, tiny_tokenizer, pretrained, sentiment_dir, stage, build, resume, kills_wanted
):
    """Checkpoints every step or two, so random kills land in steps, evaluations, checkpoint
    writes and pruning; after the kills the run is finished by resuming, and must be the run
    that was never interrupted: the same logged losses and metrics, the same final weights."""
    from nlp_ssl.config import dump_yaml

    rng = random.Random(7)
    common = {"tokenizer": tiny_tokenizer, "corpus": tiny_corpus, "mlm": pretrained["mlm"], "sentiment": sentiment_dir}
    recipes = {}
    for name in ("killed", "clean"):
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(dump_yaml(build(tmp_path / name, common)))
    clean = launch(stage, recipes["clean"])
    assert clean.wait(timeout=300) == 0, clean.stderr.read()[-2000:]
    killed, kills, extra, finished = tmp_path / "killed", 0, (), False
    while kills < kills_wanted and not finished:
        proc = launch(stage, recipes["killed"], *extra)
        start, deadline = progress(killed), time.time() + 120
        while progress(killed) <= start and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is not None:  # a fast machine finished it first: it must still be exact
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            finished = True
            break
        proc.kill()
        proc.wait()
        kills += 1
        extra = (resume,) if resume else ()
    if not finished:
        last = launch(stage, recipes["killed"], *extra)
        assert last.wait(timeout=300) == 0, last.stderr.read()[-2000:]
    assert kills >= 1
    compare_outputs(killed, tmp_path / "clean", stage)


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "embeddings"])
def test_overwrite_replaces_a_finished_run_only_when_the_new_one_succeeds(
    tmp_path, tiny_corpus, tiny_tokenizer, pretrained, sentiment_dir, monkeypatch, stage
):
    """--overwrite builds the new run beside the old one: a failure leaves the old run whole,
    a success replaces it and leaves nothing behind."""
    from dataclasses import replace

    from nlp_ssl import pretrain
    from nlp_ssl.training import TrainingError
    from tests.pretrain_helpers import tiny_config
    from tests.test_embeddings import embedding_config

    out = tmp_path / "run"
    if stage == "pretrain":
        cfg, run = tiny_config(out, tiny_tokenizer, tiny_corpus, max_steps=4), pretrain.run
    elif stage == "finetune":
        cfg, run = sentiment_config(out, pretrained["mlm"], sentiment_dir, epochs=1), finetune.run
    else:
        cfg, run = embedding_config(out, tiny_tokenizer, tiny_corpus), pretrain.run
    run(cfg)
    before = _tree(out)
    assert "metrics.json" in before

    if stage == "embeddings":

        def broken_train(*args, **kwargs):
            raise TrainingError("the new run failed")

        monkeypatch.setattr("gensim.models.Word2Vec.train", broken_train)
        failing = cfg
    else:
        # the loss turns non-finite; TensorBoard writes its logs before that
        failing = replace(cfg, train=replace(cfg.train, lr=1e30, tracker="tensorboard"))
    with pytest.raises(TrainingError):
        run(failing, overwrite=True)
    assert _tree(out) == before  # the finished run is untouched, byte for byte

    monkeypatch.undo()
    run(replace(cfg, seed=cfg.seed + 1), overwrite=True)
    after = _tree(out)
    assert "metrics.json" in after and after["resolved_config.yaml"] != before["resolved_config.yaml"]
    assert json.loads(after["run_info.json"])["processes"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")] == []  # no staging, no lock


def test_a_folder_reached_through_a_symlink_is_the_same_folder(tmp_path, pretrained, sentiment_dir):
    from dataclasses import replace

    """The lock and --overwrite act on the folder a symlink points to: a run through the link
    waits for the lock of the real folder, and --overwrite replaces the real folder's run,
    leaving the link in place."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    cfg = sentiment_config(link, pretrained["mlm"], sentiment_dir, epochs=1)
    holder = hold_lock(real)
    try:
        with pytest.raises(OutputError, match=rf"output_dir {real} is in use by another nlp-ssl run"):
            finetune.run(cfg)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    finetune.run(cfg)
    assert "seed: 0" in (real / "resolved_config.yaml").read_text()
    finetune.run(replace(cfg, seed=5), overwrite=True)
    assert link.is_symlink() and (real / "metrics.json").is_file()
    assert "seed: 5" in (real / "resolved_config.yaml").read_text()
    assert {p.name for p in tmp_path.iterdir()} == {"real", "link"}  # no staging left, no lock


SLOW_CORPUS = textwrap.dedent("""
    import sys, time
    import nlp_ssl.tokenizer as tokenizer
    read = tokenizer.iter_text_batches

    def slowly(*args, **kwargs):
        for batch in read(*args, **kwargs):
            print("batch read", file=sys.stderr, flush=True)
            time.sleep(0.3)
            yield batch

    tokenizer.iter_text_batches = slowly
""")


def test_ctrl_c_during_tokenizer_training_exits_130_and_writes_nothing(tmp_path, tiny_corpus):
    import os

    import yaml

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_CORPUS)  # reading takes seconds, so the signal lands in it
    out = tmp_path / "tok"
    recipe = tmp_path / "tok.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"output_dir": str(out), "vocab_size": 300, "batch_size": 10, "datasets": [{"files": str(tiny_corpus)}]}
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlp_ssl", "tokenizer", str(recipe)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "batch read" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)[::-1]
    err = "".join(lines) + rest
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert proc.returncode == 130, err[-2000:]
    assert errors == ["error: tokenizer training interrupted; nothing was written"] and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".tok*"))


def test_a_killed_runs_leftovers_are_tidied_and_a_moved_aside_output_put_back(tmp_path, monkeypatch):
    """What kill -9 can leave beside an output folder: a staging folder, a folder half deleted,
    and, between the two renames that replace a finished output, the previous output moved
    aside with nothing in its place. The next run on that folder tidies the first two and puts
    the third back, then refuses to replace it without --overwrite, as if the killed run had
    never started. Another output's staging folder, even one whose name starts the same, is
    left alone; so are several moved-aside outputs, which would be a guess to choose from."""
    from nlp_ssl.outputs import replace_dir, run_lock, staged_output

    out = tmp_path / "run[1]"  # glob and regex characters in the name are the name's own
    aside = tmp_path / ".run[1].old-12345"
    aside.mkdir()
    (aside / "metrics.json").write_text('{"test_accuracy": 0.8}')
    (aside / "run_info.json").write_text('{"stage": "finetune"}')
    leftovers = [tmp_path / ".run[1].partial-abc_1234", tmp_path / ".run[1].trash-777"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "half.bin").write_text("half")
    # the live staging folder of output "run[1].partial-b", and another output's
    neighbours = [tmp_path / ".run[1].partial-b.partial-abcd1234", tmp_path / ".run[1]x.partial-abc"]
    for folder in neighbours:
        folder.mkdir()

    with pytest.raises(OutputError, match="holds a finished run"):
        with staged_output(out, kind="finetune"):
            pass
    assert (out / "metrics.json").read_text() == '{"test_accuracy": 0.8}'
    assert not aside.exists() and not any(f.exists() for f in leftovers) and all(f.exists() for f in neighbours)

    stale = tmp_path / ".run[1].old-999"  # with the output in place, a moved-aside copy is stale
    stale.mkdir()
    with run_lock(out):
        pass
    assert not stale.exists() and (out / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([n.name for n in neighbours] + ["run[1]"])

    # replacing leaves nothing beside the folder (the old one goes through .trash-*)
    new = tmp_path / "new"
    new.mkdir()
    replace_dir(new, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([n.name for n in neighbours] + ["run[1]"])

    two = tmp_path / "two"
    for pid in (10000, 9999):
        (tmp_path / f".two.old-{pid}").mkdir()
    with run_lock(two):
        pass
    assert not two.exists() and (tmp_path / ".two.old-10000").exists() and (tmp_path / ".two.old-9999").exists()

    # a launched run's other processes stage their outputs without this lock: nothing is touched
    staging = tmp_path / ".two.partial-abcd1234"
    staging.mkdir()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with run_lock(two):
        pass
    assert staging.exists()
