"""``evaluate`` metric modules shipped with nlp-ssl, so scoring works offline.

``load("classification")`` returns the shipped module; a name that is not shipped (or
``hub:<id>``) goes to ``evaluate.load`` and so to the Hub, which only works online.
"""

from __future__ import annotations

from pathlib import Path

from nlp_ssl.errors import ConfigError

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
