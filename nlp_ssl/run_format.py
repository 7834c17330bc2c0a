"""The format of what a run saves, and the one place where what earlier versions saved is
read in today's form.

Every run folder's ``run_info.json``, every checkpoint's ``trainer_state.json`` and every
token-vector folder's ``embeddings.json`` carry ``format``: ``FORMAT`` when written, absent
(read as 0) in what was saved before formats were numbered. A change to what is saved bumps
``FORMAT`` and adds the step from the previous format below; readers call the upgrade
functions here (and ``config.upgrade``) and never branch on old layouts themselves. A step
that only fills in what a file lacks (a renamed key under its old name, an added key) applies
whatever the file's format says, so a file edited by hand reads the same; a step that changes
a value a file holds must check the format.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FORMAT = 1

# Format 0 -> 1. Recipe keys by the config class that holds them (its subclasses inherit
# the step): keys renamed since, and keys added since with the value the earlier runs had,
# so that a saved recipe without one is the same recipe as one that sets it to that value.
RECIPE_RENAMED: dict[str, dict[str, str]] = {
    "PretrainConfig": {"init_from": "init"},
    "Seq2SeqConfig": {"encoder": "init", "decoder": "init_decoder"},
}
RECIPE_ADDED: dict[str, dict[str, object]] = {
    "TrainConfig": {"group_by_length": False, "eval_batch_size": None, "length_group_batches": 50},
    "Seq2SeqTrainConfig": {"pack_pairs": False},
    # added within format 1 (a fill-in, so it needs no new format): earlier classifiers cut
    # long texts, earlier pretraining had one block length
    "SentimentDataConfig": {"long_texts": "truncate", "window_overlap": None, "train_windows": "random"},
    "PretrainDataConfig": {"long_blocks": None},
}
# Trainer-state counters added since, with what a checkpoint without them means;
# ``group_by_length`` None: not recorded, the recipe says.
STATE_ADDED: dict[str, object] = {
    "evaluation_seconds": 0.0,
    "checkpoint_seconds": 0.0,
    "best": {},
    "group_by_length": None,
    "length_group_batches": RECIPE_ADDED["TrainConfig"]["length_group_batches"],
}


def _by_class(table: dict[str, dict], cls: type) -> dict:
    merged: dict = {}
    for klass in reversed(cls.__mro__):
        merged.update(table.get(klass.__name__, {}))
    return merged


def renamed_keys(cls: type) -> dict[str, str]:
    """Old recipe key -> today's, for the section ``cls`` (also the hint for a recipe written
    with an old name)."""
    return _by_class(RECIPE_RENAMED, cls)


def recipe_step(cls: type, data: dict, saved_format: int) -> dict:
    """One section of a saved recipe of ``saved_format``, its own keys brought to ``FORMAT``
    (its subsections are the caller's: ``config.upgrade``)."""
    renamed = renamed_keys(cls)
    data = {renamed.get(k, k): v for k, v in data.items()}
    return {**_by_class(RECIPE_ADDED, cls), **data}


def upgrade_train_state(state: dict) -> dict:
    """A checkpoint's ``trainer_state.json`` in today's form."""
    return {**STATE_ADDED, **state, "format": FORMAT}


def checkpoint_has_manifest(state: dict) -> bool:
    """Whether a checkpoint of this ``trainer_state.json`` was written with a manifest (those
    of format 0 may predate manifests: taken as they are)."""
    return state.get("format", 0) >= 1


def vector_arrays(arrays: dict, read_static: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The vectors and trained-row mask of a token-vector folder: today the vectors are the
    StaticEmbedding's weights (``read_static``); folders of format 0 may keep them beside the
    mask too."""
    vectors = arrays["vectors"] if "vectors" in arrays else read_static()
    return vectors, arrays["trained"].astype(bool)


def upgrade_run_info(info: dict, recipe: dict) -> dict:
    """A run folder's ``run_info.json`` in today's form: format 0 may lack ``stage``, told by
    the recipe's keys."""
    if "stage" in info:
        return info
    return {**info, "stage": "pretrain" if "objective" in recipe else "finetune"}
