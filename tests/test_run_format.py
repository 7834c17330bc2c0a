"""What a run saves carries its format, and every reader goes through the upgrade functions;
the names of in-progress files are one spelling that the leftover recogniser knows."""

import json
import shutil

import pytest

from nlp_ssl import checkpoint as ckpt
from nlp_ssl.run_files import OLD, OVERWRITE, PARTIAL, TRASH, saved_format, sibling, sibling_of
from nlp_ssl.run_format import FORMAT, upgrade_run_info, upgrade_train_state


def test_every_saved_file_says_its_format(pretrained, tmp_path, tiny_corpus, tiny_tokenizer):
    from nlp_ssl import pretrain
    from tests.test_embeddings import embedding_config

    run = pretrained["mlm"]
    assert json.loads((run / "run_info.json").read_text())["format"] == FORMAT
    for step in ckpt.list_checkpoints(run):
        assert json.loads((step / ckpt.STATE_FILE).read_text())["format"] == FORMAT
    assert saved_format(run) == FORMAT
    pretrain.run(embedding_config(tmp_path / "vectors", tiny_tokenizer, tiny_corpus, epochs=1))
    assert json.loads((tmp_path / "vectors/model/embeddings.json").read_text())["format"] == FORMAT
    assert json.loads((tmp_path / "vectors/checkpoints/step-00000001/trainer_state.json").read_text())["format"] == 1

    interrupted = tmp_path / "interrupted"
    shutil.copytree(run, interrupted)
    (interrupted / "run_info.json").unlink()
    assert saved_format(interrupted) == FORMAT  # from its newest checkpoint
    shutil.rmtree(interrupted / "checkpoints")
    assert saved_format(interrupted) == 0


def test_a_checkpoint_without_its_manifest_is_damaged_unless_it_predates_manifests(pretrained, tmp_path):
    step = ckpt.list_checkpoints(pretrained["mlm"])[-1]
    copy = tmp_path / "step"
    shutil.copytree(step, copy)
    (copy / ckpt.MANIFEST).unlink()
    assert ckpt.verify(copy) == "manifest.json is missing"
    state = json.loads((copy / ckpt.STATE_FILE).read_text())
    (copy / ckpt.STATE_FILE).write_text(json.dumps({k: v for k, v in state.items() if k != "format"}))
    assert ckpt.verify(copy) is None  # format 0: written before manifests


def test_old_saved_states_and_run_info_read_in_todays_form():
    old = upgrade_train_state({"step": 3, "tokens": 10, "seconds": 1.0})
    assert old["evaluation_seconds"] == 0.0 and old["best"] == {} and old["length_group_batches"] == 50
    assert old["group_by_length"] is None and old["format"] == FORMAT
    assert upgrade_run_info({}, {"objective": "mlm"})["stage"] == "pretrain"
    assert upgrade_run_info({"stage": "baseline"}, {"task": "sentiment"})["stage"] == "baseline"


@pytest.mark.parametrize(
    "state,token", [(PARTIAL, None), (PARTIAL, "a1b2"), (OLD, "123"), (TRASH, "9"), (OVERWRITE, None)]
)
def test_every_in_progress_name_is_recognised_as_what_it_is(tmp_path, state, token):
    target = tmp_path / "run.v2"
    found = sibling_of(sibling(target, state, token).name)
    assert found is not None and found.target == "run.v2" and found.state == state
    assert sibling_of("run.v2") is None and sibling_of(".run.v2.unknown") is None
