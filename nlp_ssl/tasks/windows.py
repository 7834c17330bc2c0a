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
        """Refuse an overlap that leaves a window nothing new to read."""
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
        """Tokenize one batch of texts (one list per text column) into windows: ``input_ids``
        (and ``token_type_ids`` where the tokenizer makes them) as a list of windows per text,
        and ``windows``, how many windows the whole text makes (more than one: it is cut
        unless the windows are read)."""
        if len(texts) == 2:
            return self._encode_pairs(tokenizer, texts)
        enc = tokenizer(
            texts[0],
            truncation=True,
            max_length=self.length,
            stride=self.overlap or 0,
            return_overflowing_tokens=True,
            return_attention_mask=False,
        )
        owner = enc.pop("overflow_to_sample_mapping")
        grouped: dict[str, list] = {k: [[] for _ in texts[0]] for k in enc}
        for k, rows in enc.items():
            for text, row in zip(owner, rows):
                grouped[k][text].append(row)
        counts = [len(w) for w in grouped["input_ids"]]
        if not self.whole:
            grouped = {k: [w[:1] for w in v] for k, v in grouped.items()}
        return {**grouped, "windows": counts}

    def _encode_pairs(self, tokenizer, texts) -> dict:
        # a sentence pair is one input: cut the longer side, as transformers does; the full
        # length says whether anything was cut
        full = tokenizer(*texts, truncation=False, return_attention_mask=False, verbose=False)["input_ids"]
        enc = tokenizer(*texts, truncation=True, max_length=self.length, return_attention_mask=False)
        out = {k: [[row] for row in rows] for k, rows in enc.items()}
        return {**out, "windows": [1 + (len(f) > self.length) for f in full]}

    def picked(self, n_windows: int, row: int, epoch: int, seed: int, training: bool) -> range | list[int]:
        """Which windows of a text of ``n_windows`` a batch reads: all in evaluation; in
        training one (drawn, or the first) or all, as ``train`` says."""
        if not training or self.train == "all" or n_windows == 1:
            return range(n_windows)
        if self.train == "first":
            return [0]
        return [int(np.random.default_rng([seed, row, epoch]).integers(n_windows))]


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


def cut_share(windows: np.ndarray, plan: Windows, training: bool) -> float:
    """The share of texts of which the model does not read every token: texts of more than
    one window, unless every window is read (evaluation with windows, or ``train: all``)."""
    if not len(windows):
        return 0.0
    reads_all = plan.whole and (not training or plan.train == "all")
    return 0.0 if reads_all else float(np.mean(windows > 1))


def report_cuts(shares: dict[str, float], long_share: dict[str, float], plan: Windows) -> None:
    """One warning per split where many texts are cut, saying what would read them whole."""
    for split, share in shares.items():
        if share <= WARN_SHARE:
            continue
        if split == "train":
            hint = (
                "training reads one window of each (data.train_windows: all reads every window)"
                if plan.whole
                else "set data.long_texts: windows to read them whole in evaluation"
            )
        else:
            hint = "set data.long_texts: windows to read them whole"
        logger.warning(
            "%s: %.0f%% of the texts are longer than max_length (%d tokens) and are cut; %s",
            split,
            100 * share,
            plan.length,
            hint,
        )
    for split, share in long_share.items():
        if plan.whole and share > 0 and split != "train":
            logger.info("%s: %.0f%% of the texts are read in windows of %d tokens", split, 100 * share, plan.length)
