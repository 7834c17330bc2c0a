"""``evaluate`` metric modules shipped with nlp-ssl, so scoring works offline.

``load("classification")`` returns the shipped module; a name that is not shipped (or
``hub:<id>``) goes to ``evaluate.load`` and so to the Hub, which only works online.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.errors import ConfigError


@dataclass(frozen=True)
class Reported:
    """How a figure a metric module returns is published: its model-index ``type`` and
    display name on model cards, the arguments it was computed with, and whether it is a
    share in [0, 1] (reports show those in percentage points)."""

    type: str
    name: str
    share: bool = False
    args: dict | None = field(default=None, hash=False)


REPORTED = {
    "accuracy": Reported("accuracy", "Accuracy", share=True),
    "f1_macro": Reported("f1", "F1 (macro)", share=True, args={"average": "macro"}),
    "precision_macro": Reported("precision", "Precision (macro)", share=True, args={"average": "macro"}),
    "recall_macro": Reported("recall", "Recall (macro)", share=True, args={"average": "macro"}),
    "loss": Reported("loss", "Cross-entropy loss"),
    "perplexity": Reported("perplexity", "Perplexity"),
    "bleu": Reported("bleu", "sacreBLEU"),
    "chrf": Reported("chrf", "chrF"),
    "rouge1": Reported("rouge1", "ROUGE-1"),
    "rouge2": Reported("rouge2", "ROUGE-2"),
    "rougeL": Reported("rougeL", "ROUGE-L"),
    "rougeLsum": Reported("rougeLsum", "ROUGE-Lsum"),
}
"""Every figure the shipped metric modules (and the engine's loss) return; a new metric
module adds its figures here, and cards and study reports pick them up."""

HERE = Path(__file__).resolve().parent
SHIPPED = sorted(p.name for p in HERE.iterdir() if p.is_dir() and (p / f"{p.name}.py").is_file())


def module_path(name: str) -> Path:
    return HERE / name


def load(name: str, **kwargs):
    import evaluate

    if name.startswith("hub:"):
        return evaluate.load(name[4:], **kwargs)
    if name in SHIPPED:
        return evaluate.load(str(module_path(name)), **kwargs)
    try:
        return evaluate.load(name, **kwargs)
    except Exception as exc:
        raise ConfigError(
            f"metric {name!r}: not shipped with nlp-ssl (shipped: {', '.join(SHIPPED)}) and not loadable "
            f"from the Hub ({type(exc).__name__})"
        ) from None
