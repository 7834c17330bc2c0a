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
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.parametrize("ending", ["finishes", "is killed with SIGKILL"])
def test_a_second_run_on_a_busy_output_dir_refuses_until_the_first_ends(tmp_path, pretrained, sentiment_dir, ending):
    out = tmp_path / "run"
    cfg = sentiment_config(out, pretrained["mlm"], sentiment_dir, epochs=1)
    holder = hold_lock(out)
    try:
        with pytest.raises(OutputError, match=rf"output_dir {out} is in use by another nlp-ssl run \(pid {holder.pid} on "):
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
    from tests.test_pipeline import pipeline_raw

    import yaml

    raw = pipeline_raw(tmp_path / "p", tiny_corpus, tmp_path)
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump({"run_dir": raw["run_dir"], "tokenizer": raw["tokenizer"]}))
    holder = hold_lock(tmp_path / "p")
    try:
        done = subprocess.run([sys.executable, "-m", "nlp_ssl", "pipeline", str(recipe)], capture_output=True,
                              text=True, timeout=120)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: output_dir {tmp_path / 'p'} is in use by another")
    assert not (tmp_path / "p").exists()
