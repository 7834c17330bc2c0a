"""Two-process CPU DDP (gloo) through `accelerate launch` and the shipped MULTI_CPU config
(mpirun from the `mpich` wheel): it trains, and with the same global batch it matches a single
process with gradient accumulation; a script that is not ours gets the same process group."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_ssl import pretrain
from nlp_ssl.checkpoint import verify
from nlp_ssl.config import dump_yaml
from nlp_ssl.train_log import read_log
from tests.pretrain_helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]
MPIRUN = shutil.which("mpirun", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(
    MPIRUN is None, reason="the MULTI_CPU config launches through mpirun: pip install mpich (in the dev extra)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """``accelerate launch`` with the shipped 2-process CPU config, from the repository root
    (its hostfile path is relative), with this environment's ``mpirun`` on PATH."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "accelerate_configs/cpu_ddp_2proc.yaml",
            "--main_process_port",
            str(free_port()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    # every rank's traceback, not only the last lines: the failing rank is often not the last to print
    assert launched.returncode == 0, launched.stdout + launched.stderr
    return launched


def launch_two_processes(stage: str, recipe: Path, env: dict | None = None) -> None:
    launch(["-m", "nlp_ssl", stage, str(recipe)], env)


@pytest.mark.slow
def test_cpu_config_gives_any_script_a_process_group(tmp_path):
    """The config means what it says without nlp-ssl's help: a plain Accelerate script gets
    two gloo ranks that reduce together."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import torch\nfrom accelerate import Accelerator\n"
        "a = Accelerator()\n"
        "total = a.reduce(torch.tensor([a.process_index + 1.0]), reduction='sum').item()\n"
        "print(f'rank {a.process_index}/{a.num_processes} {a.distributed_type.value} {total}', flush=True)\n"
        # a process group left to the interpreter's exit may abort in gloo's destructor
        "a.end_training()\n"
    )
    out = launch([str(script)]).stdout
    # mpirun forwards each rank's output in its own chunks: two lines may come out interleaved
    assert sorted(re.findall(r"rank \d/\d \w+ [\d.]+", out)) == ["rank 0/2 MULTI_CPU 3.0", "rank 1/2 MULTI_CPU 3.0"], (
        out
    )


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_two_process_ddp_matches_single_process(tmp_path, tiny_corpus, tiny_tokenizer, objective):
    ddp = tiny_config(
        tmp_path / "ddp",
        tiny_tokenizer,
        tiny_corpus,
        objective,
        max_steps=8,
        micro_batch_size=8,
        eval_every=4,
        save_every=4,
    )
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(dump_yaml(ddp))
    launch_two_processes("pretrain", recipe)
    metrics = json.loads((tmp_path / "ddp/metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["global_batch"] == 16 and metrics["tokens"] == 8 * 16 * 32

    single = tiny_config(
        tmp_path / "single",
        tiny_tokenizer,
        tiny_corpus,
        objective,
        max_steps=8,
        micro_batch_size=8,
        grad_accum_steps=2,
        eval_every=4,
        save_every=4,
    )
    pretrain.run(single)
    for key in ("train/loss", "eval/loss", "train/lr"):
        a = {r["step"]: r[key] for r in read_log(tmp_path / "ddp") if key in r}
        b = {r["step"]: r[key] for r in read_log(tmp_path / "single") if key in r}
        assert a and a == pytest.approx(b, rel=1e-5), key
    wa = load_file(str(tmp_path / "ddp/model/model.safetensors"))
    wb = load_file(str(tmp_path / "single/model/model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4, msg=k)
    # losses went down: it trained
    log = {r["step"]: r["train/loss"] for r in read_log(tmp_path / "ddp") if "train/loss" in r}
    assert log[8] < log[1]


@pytest.mark.slow
def test_two_process_finetune_matches_single_process(tmp_path, tiny_corpus, tiny_tokenizer):
    """Fine-tuning runs on the same engine: 2 processes (evaluation gathered from both) give
    the metrics and weights of 1 process with the same global batch."""
    from nlp_ssl import finetune
    from tests.finetune_helpers import sentiment_config, write_sentiment_folder

    pretrain.run(tiny_config(tmp_path / "mlm", tiny_tokenizer, tiny_corpus, "mlm", max_steps=4, save_every=4))
    data = write_sentiment_folder(tmp_path / "data", sizes=(160, 50, 51))  # odd sizes: uneven shares
    ddp = sentiment_config(tmp_path / "ddp", tmp_path / "mlm", data, epochs=2, micro_batch_size=8)
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(dump_yaml(ddp))
    launch_two_processes("finetune", recipe)
    a = json.loads((tmp_path / "ddp/metrics.json").read_text())
    single = sentiment_config(
        tmp_path / "single", tmp_path / "mlm", data, epochs=2, micro_batch_size=8, grad_accum_steps=2
    )
    b = finetune.run(single)
    assert a["processes"] == 2 and a["global_batch"] == b["global_batch"] == 16
    assert a["steps"] == b["steps"] == 20 and a["best_step"] == b["best_step"], (a, b)
    assert a["validation_targets"] == 50 and a["test_targets"] == 51
    for key in ("validation_loss", "validation_accuracy", "test_accuracy", "test_f1_macro"):
        assert a[key] == pytest.approx(b[key], rel=1e-4), key
    wa = load_file(str(tmp_path / "ddp/model/model.safetensors"))
    wb = load_file(str(tmp_path / "single/model/model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4, msg=k)
    ra = [json.loads(l) for l in (tmp_path / "ddp/predictions.jsonl").read_text().splitlines()]
    rb = [json.loads(l) for l in (tmp_path / "single/predictions.jsonl").read_text().splitlines()]
    assert [(r["text"], r["prediction"]) for r in ra] == [(r["text"], r["prediction"]) for r in rb]
    assert [r["probability"] for r in ra] == pytest.approx([r["probability"] for r in rb], abs=1e-4)


SLOW_RANK_1 = """
import time
import accelerate.accelerator as accelerator_module

_save = accelerator_module.save_accelerator_state


def slow_save(output_dir, model_states, optimizers, schedulers, dataloaders, process_index, *args, **kwargs):
    if process_index == 1:  # a busy machine descheduled rank 1 while rank 0 went on
        time.sleep(2)
    return _save(output_dir, model_states, optimizers, schedulers, dataloaders, process_index, *args, **kwargs)


accelerator_module.save_accelerator_state = slow_save
"""


@pytest.mark.slow
def test_checkpoint_waits_for_every_rank(tmp_path, tiny_corpus, tiny_tokenizer):
    """A rank that writes its share of a checkpoint late (a loaded CPU) must not find the
    checkpoint already renamed under it: every rank's RNG state is in every checkpoint, and
    the run resumes from it."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_RANK_1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO)])}
    cfg = tiny_config(
        tmp_path / "ddp",
        tiny_tokenizer,
        tiny_corpus,
        "clm",
        max_steps=4,
        micro_batch_size=8,
        eval_every=4,
        save_every=2,
        keep_last=5,
    )
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(dump_yaml(cfg))
    launch_two_processes("pretrain", recipe, env)
    checkpoints = sorted((tmp_path / "ddp/checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    for c in checkpoints:
        assert sorted(p.name for p in (c / "state").glob("random_states_*.pkl")) == [
            "random_states_0.pkl",
            "random_states_1.pkl",
        ], c
        assert verify(c) is None, c
