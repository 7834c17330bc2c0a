"""Tokenize once (``datasets.map``, cached on disk) and pack documents into fixed-length
blocks, with no padding and no token lost or repeated.

Each document is tokenized as ``<s> text </s>`` (the tokenizer's template), so blocks carry
document boundaries. All documents are concatenated in order and cut into
``block_size`` windows; only the final partial window (fewer than ``block_size`` tokens) is
dropped. Blocks are stored as one ``.npy`` file, memory-mapped for training: any block is
one slice away, which is what makes resuming a seek rather than a replay.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlp_ssl.data import DatasetSpec, _check_columns, column_texts, diagnose_source, load_split, resolve
from nlp_ssl.errors import DataError
from nlp_ssl.run_files import atomic_file

logger = logging.getLogger(__name__)


@dataclass
class PackedBlocks:
    blocks: np.ndarray
    """``[n_blocks, block_size]`` token ids (memory-mapped)."""
    n_docs: int
    n_tokens: int
    n_bytes: int
    word_starts: np.ndarray | None = None
    """``[n_blocks, block_size]`` uint8: 1 where a token starts a word (whole-word masking)."""

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(self.n_tokens, 1)


def default_cache_dir() -> Path:
    base = os.environ.get("NLP_SSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nlp_ssl"
    )
    return Path(base)


def word_start_flags(encoding) -> list[int]:
    """1 for the first token of each word, from the tokenizer's own word ids (works for
    byte-level BPE and Unigram, not only WordPiece's ``##``); 0 for special tokens."""
    flags, previous = [], None
    for word in encoding.word_ids:
        flags.append(int(word is not None and word != previous))
        previous = word
    return flags


def encode_documents(tokenizer, texts: list[str], word_starts: bool = False):
    """Token ids of each document with its boundary tokens (and word-start flags, or None).

    The tokenizer's template supplies them (``<s> text </s>``, ``[CLS] text [SEP]``); one that
    adds no end token (GPT-2's) gets EOS appended, so packed documents stay separated.
    """
    encoded = tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)
    ids = encoded["input_ids"]
    flags = [word_start_flags(e) for e in encoded.encodings] if word_starts else None
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is not None:
        for i, doc in enumerate(ids):
            if not doc or doc[-1] != end:
                doc.append(end)
                if flags is not None:
                    flags[i].append(0)
    return ids, flags


def tokenize_split(spec: DatasetSpec, tokenizer, num_proc: int | None = None, word_starts: bool = False):
    """``datasets.map`` tokenization of every text column; reused from the cache on the next
    run with the same data, tokenizer and settings. Adds ``n_bytes`` per row (and
    ``word_start`` flags when asked)."""
    source = resolve(spec)
    ds = load_split(spec, source)
    _check_columns(ds.column_names, spec.text_columns, source.label)

    def tokenize(batch, indices):
        texts = [
            t for column in spec.text_columns for t in column_texts(batch, column, spec, source.label, rows=indices)
        ]
        ids, flags = encode_documents(tokenizer, texts, word_starts)
        out = {"input_ids": ids, "n_bytes": [len(t.encode("utf-8")) for t in texts]}
        if flags is not None:
            out["word_start"] = flags
        return out

    try:
        return ds.map(
            tokenize,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            num_proc=num_proc,
            desc=f"tokenizing {spec.describe()}",
        )
    except DataError:
        raise
    except Exception as exc:
        # datasets wraps errors raised in worker processes; surface ours unchanged
        inner = exc
        while inner is not None and not isinstance(inner, DataError):
            inner = inner.__cause__ or inner.__context__
        if inner is not None:
            raise inner from None
        raise


def pack(
    specs: list[DatasetSpec],
    tokenizer,
    block_size: int,
    cache_dir: Path | None = None,
    num_proc: int | None = None,
    word_starts: bool = False,
) -> PackedBlocks:
    """Tokenize ``specs`` (cached) and pack their concatenation into ``block_size`` blocks."""
    import pyarrow.compute as pc

    cache_dir = Path(cache_dir or default_cache_dir())
    _check_cache_dir(cache_dir)  # before minutes of tokenizing
    tokenized = [tokenize_split(spec, tokenizer, num_proc, word_starts) for spec in specs]
    key = hashlib.sha256(("|".join(t._fingerprint for t in tokenized) + f"|{block_size}").encode()).hexdigest()[:20]
    path = cache_dir / f"packed-{key}.npy"
    meta_path = path.with_suffix(".meta.npy")
    ws_path = path.with_suffix(".words.npy")
    n_docs = sum(len(t) for t in tokenized)
    if path.exists() and meta_path.exists() and (ws_path.exists() or not word_starts):
        n_tokens, n_bytes = np.load(meta_path).tolist()
        ws = np.load(ws_path, mmap_mode="r") if word_starts else None
        return PackedBlocks(np.load(path, mmap_mode="r"), n_docs, int(n_tokens), int(n_bytes), ws)

    flat = np.concatenate([pc.list_flatten(t.data.column("input_ids")).to_numpy() for t in tokenized])
    n_bytes = int(sum(pc.sum(t.data.column("n_bytes")).as_py() or 0 for t in tokenized))
    vocab = len(tokenizer)
    if flat.size and int(flat.max()) >= vocab:
        raise DataError(f"token id {int(flat.max())} >= tokenizer size {vocab}: cache or tokenizer is corrupt")
    n_blocks = flat.size // block_size
    if n_blocks == 0:
        raise DataError(
            f"{', '.join(s.describe() for s in specs)}: {flat.size} tokens, fewer than one block of {block_size}"
        )
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.int32
    blocks = flat[: n_blocks * block_size].astype(dtype).reshape(n_blocks, block_size)
    arrays = [(path, blocks), (meta_path, np.array([flat.size, n_bytes], dtype=np.int64))]
    if word_starts:
        flags = np.concatenate([pc.list_flatten(t.data.column("word_start")).to_numpy() for t in tokenized])
        arrays.insert(1, (ws_path, flags[: n_blocks * block_size].astype(np.uint8).reshape(n_blocks, block_size)))
    for target, array in arrays:
        try:
            with atomic_file(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array)
        except OSError as exc:  # a disk that filled up while writing
            raise DataError(
                f"data.cache_dir {cache_dir}: the packed blocks cannot be written "
                f"({exc.strerror or exc}); free space there or set data.cache_dir to another folder"
            ) from None
    logger.info("packed %d docs, %d tokens into %d blocks of %d -> %s", n_docs, flat.size, n_blocks, block_size, path)
    ws = np.load(ws_path, mmap_mode="r") if word_starts else None
    return PackedBlocks(np.load(path, mmap_mode="r"), n_docs, int(flat.size), n_bytes, ws)


def _check_cache_dir(cache_dir: Path) -> None:
    """The packed-block cache must take a file: tried for real, since ``os.access`` says yes to
    root on a read-only file system."""
    import tempfile

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise DataError(
            f"data.cache_dir {cache_dir}: cannot hold the packed blocks ({exc.strerror or exc}); set "
            "data.cache_dir to a writable folder"
        ) from None


class PackedStream:
    """Packs a streamed corpus into blocks on the fly, in bounded memory.

    Documents are read in order (each process reads its own share, through
    ``datasets.distributed.split_dataset_by_node``), tokenized a few at a time, appended to a
    token buffer and cut into blocks. The resumable position is the ``datasets`` iterator
    state plus the leftover tokens (less than a block plus one read batch), so a resume
    continues mid-epoch without re-reading what was consumed. When the stream ends, the next
    epoch starts over (``set_epoch`` reshuffles when ``shuffle_buffer`` is set).
    """

    def __init__(
        self,
        specs: list[DatasetSpec],
        tokenizer,
        block_size: int,
        *,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
        shuffle_buffer: int = 0,
        read_batch: int = 64,
        word_starts: bool = False,
    ):
        import datasets
        from datasets.distributed import split_dataset_by_node

        streams = []
        self._specs = specs
        for spec in specs:
            ds = load_split(spec)
            if ds.column_names is None:  # JSON streams learn their columns from the first rows
                with self._reading():
                    ds = ds._resolve_features()
            _check_columns(ds.column_names, spec.text_columns, spec.describe())
            streams.append(ds.map(_text_rows(spec), batched=True, remove_columns=ds.column_names))
        texts = streams
        ds = texts[0] if len(texts) == 1 else datasets.concatenate_datasets(texts)
        if shuffle_buffer:
            ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self.ds = split_dataset_by_node(ds, rank=process_index, world_size=num_processes)
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.read_batch = read_batch
        self.label = ", ".join(s.describe() for s in specs)
        self.epoch = 0
        self.blocks_out = 0
        self.bytes_in = 0
        self.tokens_in = 0
        self.word_starts = word_starts
        self._buffer = np.zeros(0, dtype=np.int64)
        self._words = np.zeros(0, dtype=np.uint8)
        self._iter = None

    def next_blocks(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``n`` blocks ``[n, block_size]``, their running numbers in this stream, and their
        word-start flags (or None)."""
        need = n * self.block_size
        empty_epochs = 0
        while len(self._buffer) < need:
            texts = self._read()
            if texts is None:  # end of the stream: next epoch
                empty_epochs = empty_epochs + 1 if self.tokens_in == 0 else 0
                if empty_epochs > 1:
                    raise DataError(f"streamed dataset {self.label}: no text")
                self.epoch += 1
                self.ds.set_epoch(self.epoch)
                self._iter = None
                continue
            docs, flags = encode_documents(self.tokenizer, texts, self.word_starts)
            self.bytes_in += sum(len(t.encode("utf-8")) for t in texts)
            ids = np.fromiter((i for seq in docs for i in seq), dtype=np.int64)
            self.tokens_in += len(ids)
            self._buffer = np.concatenate([self._buffer, ids])
            if self.word_starts:
                self._words = np.concatenate([self._words, np.fromiter((f for d in flags for f in d), dtype=np.uint8)])
        out, self._buffer = self._buffer[:need].reshape(n, self.block_size), self._buffer[need:].copy()
        words = None
        if self.word_starts:
            words, self._words = self._words[:need].reshape(n, self.block_size), self._words[need:].copy()
        numbers = np.arange(self.blocks_out, self.blocks_out + n)
        self.blocks_out += n
        return out, numbers, words

    def _read(self) -> list[str] | None:
        if self._iter is None:
            self._iter = iter(self.ds)
        texts = []
        with self._reading():
            for _ in range(self.read_batch):
                try:
                    row = next(self._iter)
                except StopIteration:
                    break
                texts.append(row["text"])
        return texts or None

    @contextlib.contextmanager
    def _reading(self):
        """A file that breaks while it is streamed (a corrupt or truncated archive) is a
        ``DataError`` naming it, as when it is loaded whole."""
        try:
            yield
        except DataError:
            raise
        except Exception as exc:
            problem = next(filter(None, (diagnose_source(resolve(spec)) for spec in self._specs)), None)
            if problem:
                raise DataError(problem) from None
            # not found in any file: say which stream, not guess which of its sources
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DataError(
                f"reading {', '.join(s.describe() for s in self._specs)} failed ({type(exc).__name__}: {message})"
            ) from None

    def state_dict(self) -> dict:
        return {
            "ds": self.ds.state_dict(),
            "epoch": self.epoch,
            "blocks_out": self.blocks_out,
            "bytes_in": self.bytes_in,
            "tokens_in": self.tokens_in,
            "buffer": self._buffer.tolist(),
            "words": self._words.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.ds.set_epoch(self.epoch)
        self.ds.load_state_dict(state["ds"])
        self.blocks_out, self.bytes_in, self.tokens_in = (
            int(state["blocks_out"]),
            int(state["bytes_in"]),
            int(state["tokens_in"]),
        )
        self._buffer = np.asarray(state["buffer"], dtype=np.int64)
        self._words = np.asarray(state.get("words", []), dtype=np.uint8)
        self._iter = None


def _text_rows(spec: DatasetSpec):
    """Batched map: one ``text`` row per (row, text column), validated and cleaned."""

    def to_text(batch):
        return {"text": [t for column in spec.text_columns for t in column_texts(batch, column, spec, spec.describe())]}

    return to_text
