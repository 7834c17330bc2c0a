"""What every transformer objective shares: packed token blocks (memory-mapped, or streamed)
and the engine task that reads them.

``BlockTask`` slices blocks by index and leaves to its objective's subclass how a batch of
blocks becomes model inputs (``_batch``), what the loss module is (``module``) and what a
token costs (``flops_per_token``). Any randomness an objective needs (masks, samples) is
seeded per block by ``example_seed``, so that a batch is the same whether it is built on one
process or split over several, and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nlp_ssl.data import hold_out
from nlp_ssl.models import count_parameters
from nlp_ssl.packing import pack
from nlp_ssl.training.contract import Batch

if TYPE_CHECKING:
    from nlp_ssl.objectives.base import PretrainConfig


@dataclass(frozen=True)
class LengthSchedule:
    """Blocks packed at the long length, read as ``rows`` consecutive short rows each until
    the last ``fraction`` of the steps (``data.long_blocks``)."""

    rows: int
    fraction: float

    @classmethod
    def of(cls, cfg: PretrainConfig) -> LengthSchedule | None:
        long = cfg.data.long_blocks
        return None if long is None else cls(cfg.data.rows_per_block, long.fraction)

    def long_from(self, total: int) -> int:
        """The first step (counted from 0) that reads whole blocks in a run of ``total`` steps."""
        return total - max(1, round(self.fraction * total))


def load_data(cfg: PretrainConfig, tokenizer, word_starts: bool = False):
    """Packed train and validation blocks, and which block indices each split uses
    (train blocks are None when the training data streams). ``word_starts``: also record
    where words start, for whole-word masking. With a length schedule, blocks are packed at
    the long length (its own cache); the short rows are cut from them."""
    d = cfg.data
    size = d.longest_block
    if d.streaming:
        valid = pack(d.validation, tokenizer, size, d.cache_dir, d.num_proc, word_starts)
        return None, None, valid, np.arange(len(valid.blocks))
    train = pack(d.datasets, tokenizer, size, d.cache_dir, d.num_proc, word_starts)
    if d.validation:
        valid = pack(d.validation, tokenizer, size, d.cache_dir, d.num_proc, word_starts)
        return train, np.arange(len(train.blocks)), valid, np.arange(len(valid.blocks))
    # hold out a seeded sample of blocks; training sees the rest
    n = len(train.blocks)
    train_idx, eval_idx = hold_out(
        n,
        d.validation_fraction,
        cfg.seed,
        f"data: only {n} blocks of {size} tokens; need more text to hold out validation",
        salt=12345,
    )
    return train, train_idx, train, eval_idx


def word_offsets(word_starts: np.ndarray) -> np.ndarray:
    """Character offsets that encode word boundaries the way ``DataCollatorForLanguageModeling``
    reads them (a gap before a token starts a new word).

    Packed blocks keep no text, so the offsets are synthetic: consecutive positions within a
    word, one position skipped before each word start. The word starts themselves come from
    the tokenizer's ``word_ids()``, so this works for byte-level BPE and Unigram as well as
    WordPiece, whose real offsets would glue a BPE word to the space before it.
    """
    starts = np.asarray(word_starts, dtype=np.int64)
    pos = np.arange(starts.shape[1])[None, :] + np.cumsum(starts, axis=1)
    return np.stack([pos, pos + 1], axis=-1)


class BlockTask:
    """Engine task over memory-mapped packed blocks (or a ``PackedStream``); an objective
    subclasses it with its loss ``module``, ``_batch`` and ``flops_per_token``."""

    def __init__(
        self,
        model,
        tokenizer,
        train_blocks: np.ndarray | None,
        train_index: np.ndarray | None,
        eval_blocks: np.ndarray,
        eval_index: np.ndarray,
        *,
        seed: int,
        stream=None,
        train_words: np.ndarray | None = None,
        eval_words: np.ndarray | None = None,
        schedule: LengthSchedule | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        # index arrays select rows of the (memory-mapped) block arrays without copying them
        self.blocks = {"eval": (eval_blocks, np.asarray(eval_index))}
        self.words = {"train": train_words, "eval": eval_words}
        """Word-start flags per block, for whole-word masking (None otherwise)."""
        self.stream = stream
        """A ``PackedStream`` when the training data streams; then ``n_train`` is None."""
        if stream is None:
            self.blocks["train"] = (train_blocks, np.asarray(train_index))
        self.seed = seed
        self.n_train = None if stream is not None else len(train_index)
        self.packed_size = eval_blocks.shape[1]
        """Tokens per stored block (the long length under a length schedule)."""
        self.schedule = schedule
        self.rows = schedule.rows if schedule is not None else 1
        """Rows each block is read as now: the schedule's short rows, 1 in its long phase."""
        self._eval = np.arange(len(eval_index))

    @property
    def block_size(self) -> int:
        """Tokens per model row now."""
        return self.packed_size // self.rows

    def at_step(self, step: int, total: int) -> None:
        """The row length of step ``step`` (from 0) of ``total``: short rows, then whole blocks."""
        if self.schedule is not None:
            self.read_as(1 if step >= self.schedule.long_from(total) else self.schedule.rows)

    def read_as(self, rows: int) -> None:
        """Read each block as ``rows`` rows from now on (evaluation at a given length)."""
        self.rows = rows

    def eval_indices(self, split: str = "eval") -> np.ndarray:
        return self._eval

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        blocks, index = self.blocks[split]
        rows = index[np.asarray(indices)]
        words = self.words[split]
        words = None if words is None else np.asarray(words[rows])
        ids = np.asarray(blocks[rows], dtype=np.int64)
        if self.rows > 1:  # consecutive short rows of each block, numbered apart for their seeds
            ids = ids.reshape(-1, self.block_size)
            words = None if words is None else words.reshape(-1, self.block_size)
            rows = (rows[:, None] * self.rows + np.arange(self.rows)).reshape(-1)
        return self._batch(ids, rows, epoch, split, words)

    def next_batch(self, size: int) -> Batch:
        """Streaming: the next ``size`` blocks of this process's share of the stream."""
        blocks, numbers, words = self.stream.next_blocks(size)
        return self._batch(blocks, numbers, self.stream.epoch, "train", words)

    def _batch(
        self, blocks: np.ndarray, example_ids: np.ndarray, epoch: int, split: str, words: np.ndarray | None = None
    ) -> Batch:
        """The objective's ``Batch`` of ``blocks`` (token ids, one row per block); ``example_ids``
        number the blocks for ``example_seed``."""
        raise NotImplementedError

    def example_seed(self, index: int, epoch: int, split: str, *purpose: int) -> int:
        """A seed of its own for each (run seed, split, epoch, block[, purpose]): what a block
        gets does not depend on the batch or process it lands in."""
        stream = 0 if split == "train" else 1
        return int(np.random.SeedSequence([self.seed, stream, epoch, int(index), *purpose]).generate_state(1)[0])

    def flops_per_token(self) -> float:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "parameters": count_parameters(self.model),
            "train_blocks": self.n_train if self.n_train is not None else "streaming",
            "eval_blocks": int(len(self._eval)),
            "block_size": self.packed_size // (self.schedule.rows if self.schedule else 1),
            **({"long_block_size": self.packed_size} if self.schedule else {}),
        }
