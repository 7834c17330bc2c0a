"""Fine-tuning tasks: one module each, holding its setup, engine task, metrics and
``FinetuneTask`` descriptor (the module registered here), with its recipe schema, data
preparation or model builder in modules beside it once it outgrows one file
(``classification_recipe``, ``classification_data``; ``seq2seq_recipe``, ``seq2seq_model``).
A new task is a new module plus one line here."""

from __future__ import annotations

import importlib

from nlp_ssl.errors import ConfigError

TASKS = {
    "sentiment": "nlp_ssl.tasks.classification:SENTIMENT",
    "translation": "nlp_ssl.tasks.seq2seq:TRANSLATION",
    "summarization": "nlp_ssl.tasks.seq2seq:SUMMARIZATION",
}


def get_task(name: str | None, where: str = "task"):
    """The ``FinetuneTask`` registered as ``name`` (modules are imported on first use)."""
    if name not in TASKS:
        raise ConfigError(f"{where}: 'task' must be one of: {', '.join(TASKS)}; got {name!r}")
    module, _, attr = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
