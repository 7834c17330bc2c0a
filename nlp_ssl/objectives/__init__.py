"""Pretraining objectives: a module for each (word2vec's holds skipgram and cbow), holding its
recipe schema, model builder, loss, batch construction and ``Objective`` descriptor, which
names the stage that trains it (``transformer_stage`` for every transformer objective). A new
objective is a new module plus one line here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from nlp_ssl.errors import ConfigError

OBJECTIVES = {
    "mlm": "nlp_ssl.objectives.masked_lm:OBJECTIVE",
    "clm": "nlp_ssl.objectives.causal_lm:OBJECTIVE",
    "rtd": "nlp_ssl.objectives.replaced_token_detection:OBJECTIVE",
    "skipgram": "nlp_ssl.objectives.word2vec:SKIPGRAM",
    "cbow": "nlp_ssl.objectives.word2vec:CBOW",
}


@dataclass(frozen=True)
class Objective:
    """One pretraining objective as the rest of the toolkit sees it; ``pretrain``, ``model_card``,
    ``pipeline`` and ``report`` look everything objective-specific up here."""

    name: str
    config: type
    """The recipe's typed config."""
    title: str
    """The objective as a model card names it ("Masked language modeling")."""
    pipeline_tag: str | None
    what: str
    """What the saved model is, for the card ("masked-language-model (BERT-style)")."""
    usage: Callable[[str], str]
    """``usage(repo_or_path) -> str``: a Python snippet for the model card."""
    stage: Callable
    """``stage(recipe) -> nlp_ssl.stage.TrainingStage``: the stage that trains it."""
    card_sections: tuple[str, ...] = ()
    """Recipe sections listed as hyperparameters on the card (``masking``...)."""
    static_vectors: bool = False
    """The run is token vectors (``nlp_ssl.vectors``), not a transformer: read by
    ``init_embeddings`` and frozen-feature heads, not exported or pushed."""
    training: str = ""
    """The objective as the card's training section names it ("masked-LM")."""

    # The training side of transformer objectives (``objectives.transformer_stage`` runs them
    # all the same way over packed blocks; token-vector objectives leave these unset).
    build: Callable | None = None
    """``build(recipe, tokenizer) -> model``: a fresh model sized by ``recipe.model``."""
    load: Callable | None = None
    """``load(model_dir, recipe) -> model``: a saved checkpoint with the head this objective
    trains, to continue pretraining (``init``); None when the objective cannot continue
    one (its config class refuses ``init``)."""
    check_tokenizer: Callable | None = None
    """``check_tokenizer(tokenizer, where)``: refuse a checkpoint's tokenizer the objective
    cannot train with, before the checkpoint is loaded (``build`` checks a fresh model's)."""
    make_task: Callable | None = None
    """``make_task(model, tokenizer, recipe, **blocks) -> engine task``; ``blocks`` are
    ``nlp_ssl.objectives.blocks.BlockTask``'s data arguments."""
    word_starts: Callable[[object], bool] = lambda recipe: False
    """``word_starts(recipe)``: whether packing records where words start (whole-word masking)."""
    lm_loss_key: str = "eval_loss"
    """The metrics key of the held-out language-modelling loss (nats per token), from which
    ``eval_bits_per_byte`` is computed."""


def get_objective(name: str | None, where: str = "objective") -> Objective:
    """The ``Objective`` registered as ``name`` (modules are imported on first use)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"{where}: 'objective' must be one of: {', '.join(OBJECTIVES)}; got {name!r}")
    module, _, attr = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
