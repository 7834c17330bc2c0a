"""Tokenize once (``datasets.map``, cached on disk) and pack documents into fixed-length
blocks, with no padding and no token lost or repeated.

Each document is tokenized as ``<s> text </s>`` (the tokenizer's template), so blocks carry
document boundaries. All documents are concatenated in order and cut into
``block_size`` windows; only the final partial window (fewer than ``block_size`` tokens) is
dropped. Blocks are stored as one ``.npy`` file, memory-mapped for training: any block is
one slice away, which is what makes resuming a seek rather than a replay.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlp_ssl.data import DatasetSpec, _check_columns, _HTML_BREAK, load_split, resolve
from nlp_ssl.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class PackedBlocks:
    blocks: np.ndarray
    """``[n_blocks, block_size]`` token ids (memory-mapped)."""
    n_docs: int
    n_tokens: int
    n_bytes: int

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(self.n_tokens, 1)


def default_cache_dir() -> Path:
    base = os.environ.get("NLP_SSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nlp_ssl"
    )
    return Path(base)


def tokenize_split(spec: DatasetSpec, tokenizer, num_proc: int | None = None):
    """``datasets.map`` tokenization of every text column; reused from the cache on the next
    run with the same data, tokenizer and settings. Adds ``n_bytes`` per row."""
    source = resolve(spec)
    ds = load_split(spec, source)
    _check_columns(ds.column_names, spec.text_columns, source.label)
    columns = spec.text_columns
    clean = spec.clean_html

    def tokenize(batch, indices):
        texts = []
        for column in columns:
            values = batch[column.split(".")[0]]
            for part in column.split(".")[1:]:
                values = [v.get(part) if isinstance(v, dict) else None for v in values]
            for i, value in zip(indices, values):
                if not isinstance(value, str):
                    kind = "null" if value is None else type(value).__name__
                    raise DataError(f"dataset {source.label}: row {i}: column {column!r} is {kind}, expected text")
                texts.append(_HTML_BREAK.sub("\n", value) if clean else value)
        encoded = tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)
        return {"input_ids": encoded["input_ids"], "n_bytes": [len(t.encode("utf-8")) for t in texts]}

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
) -> PackedBlocks:
    """Tokenize ``specs`` (cached) and pack their concatenation into ``block_size`` blocks."""
    import pyarrow.compute as pc

    tokenized = [tokenize_split(spec, tokenizer, num_proc) for spec in specs]
    key = hashlib.sha256(
        ("|".join(t._fingerprint for t in tokenized) + f"|{block_size}").encode()
    ).hexdigest()[:20]
    cache_dir = Path(cache_dir or default_cache_dir())
    path = cache_dir / f"packed-{key}.npy"
    meta_path = path.with_suffix(".meta.npy")
    n_docs = sum(len(t) for t in tokenized)
    if path.exists() and meta_path.exists():
        n_tokens, n_bytes = np.load(meta_path).tolist()
        return PackedBlocks(np.load(path, mmap_mode="r"), n_docs, int(n_tokens), int(n_bytes))

    flat = np.concatenate(
        [pc.list_flatten(t.data.column("input_ids")).to_numpy() for t in tokenized]
    )
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
    cache_dir.mkdir(parents=True, exist_ok=True)
    for target, array in ((path, blocks), (meta_path, np.array([flat.size, n_bytes], dtype=np.int64))):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, target)
    logger.info("packed %d docs, %d tokens into %d blocks of %d -> %s", n_docs, flat.size, n_blocks, block_size, path)
    return PackedBlocks(np.load(path, mmap_mode="r"), n_docs, int(flat.size), n_bytes)
