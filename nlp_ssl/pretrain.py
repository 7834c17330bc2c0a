"""Pretraining stage: ``nlp-ssl pretrain RECIPE.yaml`` (alone, or under ``accelerate launch``).

The recipe's ``objective`` picks its module (``nlp_ssl.objectives``): its recipe schema, and
the stage that trains it. Every transformer objective (mlm, clm, rtd) runs in
``objectives.transformer_stage``: tokenizer, model, packed data -> ``training.fit`` -> final
model folder; skipgram and cbow run gensim's word2vec in ``objectives.word2vec``. Output:
``<output_dir>/model/`` (``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``, for ``rtd`` the
encoder body for ``AutoModel`` / ``AutoModelForSequenceClassification``, for skipgram/cbow a
``SentenceTransformer`` folder; + tokenizer), ``checkpoints/``, ``logs/`` (TensorBoard),
``train_log.jsonl`` and the run files of every stage (``metrics.json`` last).
"""

from __future__ import annotations

from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives import OBJECTIVES, get_objective
from nlp_ssl.objectives.base import PretrainConfig, PretrainDataConfig  # noqa: F401  (the stage's recipe)
from nlp_ssl.outputs import locks_output
from nlp_ssl.stage import run_stage


def recipe_class(raw: dict, source: str) -> type:
    """The config class for a pretrain recipe: its ``objective``'s (``nlp_ssl.objectives``).
    The shallow embedding objectives (``skipgram``, ``cbow``) have a recipe of their own that
    shares nothing with ``PretrainConfig``."""
    objective = raw.get("objective")
    if objective is None:
        raise ConfigError(f"{source}: missing required key 'objective' (one of: {', '.join(OBJECTIVES)})")
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ConfigError(f"{source}: 'objective' must be one of: {', '.join(OBJECTIVES)}; got {objective!r}")
    return get_objective(objective).config


@locks_output()
def run(cfg, overwrite: bool = False, publisher=None) -> dict:
    """Pretrain with ``cfg``'s objective (``cfg`` is the class ``recipe_class`` picked), in
    its objective's stage; ``publisher`` as in ``nlp_ssl.stage.run_stage``."""
    return run_stage(get_objective(cfg.objective).stage(cfg), overwrite, publisher)
