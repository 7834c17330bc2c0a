"""Texts longer than one model input: read in overlapping windows whose logits are averaged
into one prediction per text, or cut to the first window.

The windows are the tokenizer's own overflow (``truncation=True, stride=overlap,
return_overflowing_tokens=True``), so a user with nothing but ``transformers`` gets the same
windows, and the same prediction, from the model card's snippet. Each tokenized row keeps all
its windows (``input_ids`` is a list of windows); which of them a batch reads is decided when
the batch is built: every window in evaluation, one or all in training (``train_windows``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from nlp_ssl.errors import ConfigError

logger = logging.getLogger(__name__)

LongTexts = Literal["windows", "truncate"]
TrainWindows = Literal["random", "first", "all"]

WARN_SHARE = 0.1
"""A split with more than this share of its texts cut gets a warning."""


@dataclass(frozen=True)
class Windows:
    """How a text is cut into model inputs of ``length`` tokens (special tokens included)."""

    length: int
    overlap: int | None
    """Tokens each window repeats from the one before (the tokenizers' ``stride``); None: a
    long text is truncated, only its first window read."""
    train: TrainWindows = "random"
    """What training reads of a long text: one window drawn per epoch (seeded by text and
    epoch), the first, or all of them with their logits averaged as in evaluation."""

    @classmethod
    def of(cls, length: int, long_texts: LongTexts, overlap: int | None, train: TrainWindows = "random") -> Windows:
        if long_texts == "truncate":
            return cls(length, None, "first")
        return cls(length, default_overlap(length) if overlap is None else overlap, train)

    @property
    def whole(self) -> bool:
        """Whether every token of a text is read (in evaluation)."""
        return self.overlap is not None

    def check(self, tokenizer, key: str = "data.window_overlap") -> None:
        """Refuse an overlap that leaves a window nothing new to read, and a tokenizer that
        cannot cut windows."""
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no fast (tokenizers) backend, which "
                "cutting texts into windows needs; save it with a tokenizer.json"
            )
        if self.overlap is None:
            return
        room = self.length - tokenizer.num_special_tokens_to_add(pair=False)
        if self.overlap < 0 or self.overlap >= room:
            raise ConfigError(
                f"{key}: {self.overlap} must be at least 0 and smaller than the "
                f"{room} text tokens of a {self.length}-token window (max_length less the special tokens)"
            )

    def saved(self) -> dict:
        """What a fine-tuned model's ``config.nlp_ssl`` records, so that ``evaluate`` and
        ``predict`` read long texts as its evaluation did."""
        return {"long_texts": "windows" if self.whole else "truncate", "window_overlap": self.overlap}

    def encode(self, tokenizer, texts: list[list[str]]) -> dict:
        """Tokenize one batch of texts into windows (``encode_windows``)."""
        return encode_windows(tokenizer, self.length, self.overlap, texts)

    def picked(self, n_windows: int, row: int, epoch: int, seed: int, training: bool) -> range | list[int]:
        """Which windows of a text of ``n_windows`` a batch reads: all in evaluation; in
        training one (drawn, or the first) or all, as ``train`` says."""
        if not training or self.train == "all" or n_windows == 1:
            return range(n_windows)
        if self.train == "first":
            return [0]
        return [int(np.random.default_rng([seed, row, epoch]).integers(n_windows))]


ENCODING = 1
"""Bumped when ``encode_windows`` changes what it writes: ``datasets`` hashes the function
that ``map`` runs by reference, so only its arguments (this among them) renew the cache."""

COUNT_COLUMN = "text_windows"
"""The column holding how many windows a whole text makes."""


def encode_windows(tokenizer, length: int, overlap: int | None, texts: list[list[str]], version: int = ENCODING):
    """One batch of texts (one list per text column) as the tokenizer's windows of ``length``
    tokens overlapping by ``overlap`` (None: the first window only): ``input_ids`` (and
    ``token_type_ids`` where the tokenizer makes them) as a list of windows per text, and
    ``COUNT_COLUMN``, how many windows the whole text makes (more than are kept: it is cut)."""
    if len(texts) == 2:
        # a sentence pair is one input: cut the longer side, as transformers does; the full
        # length says whether anything was cut
        full = tokenizer(*texts, truncation=False, return_attention_mask=False, verbose=False)["input_ids"]
        enc = tokenizer(*texts, truncation=True, max_length=length, return_attention_mask=False)
        out = {k: [[row] for row in rows] for k, rows in enc.items()}
        return {**out, COUNT_COLUMN: [1 + (len(f) > length) for f in full]}
    enc = tokenizer(
        texts[0],
        truncation=True,
        max_length=length,
        stride=overlap or 0,
        return_overflowing_tokens=True,
        return_attention_mask=False,
    )
    owner = enc.pop("overflow_to_sample_mapping")
    grouped: dict[str, list] = {k: [[] for _ in texts[0]] for k in enc}
    for k, rows in enc.items():
        for text, row in zip(owner, rows):
            grouped[k][text].append(row)
    counts = [len(w) for w in grouped["input_ids"]]
    if overlap is None:
        grouped = {k: [w[:1] for w in v] for k, v in grouped.items()}
    return {**grouped, COUNT_COLUMN: counts}


def default_overlap(length: int) -> int:
    """A quarter of the window: a sentence cut at one window's edge is whole in the next."""
    return length // 4


def pool_logits(logits: torch.Tensor, owner: torch.Tensor, n_texts: int) -> torch.Tensor:
    """The mean of each text's window logits: ``owner[w]`` is the text of window ``w``."""
    logits = logits.float()
    summed = torch.zeros(n_texts, logits.shape[-1], dtype=logits.dtype, device=logits.device)
    summed.index_add_(0, owner, logits)
    counts = torch.bincount(owner, minlength=n_texts).clamp(min=1).to(logits.dtype)
    return summed / counts[:, None]


def cut_share(counts: np.ndarray, stored: np.ndarray, plan: Windows, training: bool) -> float:
    """The share of texts of which the model does not read every token: of ``counts``
    windows a whole text makes, more than it reads (the ``stored`` windows in evaluation and
    with ``train: all``; one in training otherwise)."""
    if not len(counts):
        return 0.0
    reads = stored if not training or plan.train == "all" else 1
    return float(np.mean(counts > reads))


def report_cuts(
    shares: dict[str, float], long_share: dict[str, float], plan: Windows, option: str = "data.long_texts: windows"
) -> None:
    """One warning per split where many texts are cut, saying what would read them whole
    (``option``, as the command takes it); the main process only."""
    from nlp_ssl.progress import is_main_process

    if not is_main_process():
        return
    for split, share in shares.items():
        if share <= WARN_SHARE:
            continue
        if split == "train" and plan.whole:
            hint = "training reads one window of each (data.train_windows: all reads every window)"
        elif plan.whole:
            hint = "sentence pairs are one input each, cut on the longer side"
        else:
            hint = f"set {option} to read them whole" + (" in evaluation" if split == "train" else "")
        logger.warning(
            "%s: %.0f%% of the texts are longer than max_length (%d tokens) and are cut; %s",
            split,
            100 * share,
            plan.length,
            hint,
        )
    for split, share in long_share.items():
        if plan.whole and share > 0 and split != "train" and shares.get(split, 0.0) == 0.0:
            logger.info("%s: %.1f%% of the texts are read in windows of %d tokens", split, 100 * share, plan.length)
