"""Tokenizer stage: train BPE / WordPiece / Unigram on one or more datasets and save a
folder that ``AutoTokenizer.from_pretrained`` loads.

One tokenizer serves both pretraining objectives: it carries pad, unk, bos (= cls),
eos (= sep) and mask tokens, and wraps every text as ``bos text eos`` so packed
pretraining sequences have document boundaries.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nlp_ssl.config import to_dict
from nlp_ssl.data import DatasetSpec, iter_text_batches, load_split, resolve
from nlp_ssl.errors import ConfigError, DataError, Interrupted
from nlp_ssl.outputs import config_inputs, now, staged_output, write_json, write_run_files
from nlp_ssl.progress import progress_bar

logger = logging.getLogger(__name__)

Normalization = Literal["nfc", "nfd", "nfkc", "nfkd", "lowercase", "strip_accents"]
CORPUS_FILE = "tokenizer_corpus.json"


@dataclass
class SpecialTokens:
    pad: str = "<pad>"
    unk: str = "<unk>"
    bos: str = "<s>"
    """Start of text; also the classification (CLS) token of encoders."""
    eos: str = "</s>"
    """End of text; also the separator (SEP) and document boundary in packed sequences."""
    mask: str = "<mask>"

    def __post_init__(self):
        values = [self.pad, self.unk, self.bos, self.eos, self.mask]
        if any(not v for v in values):
            raise ConfigError("special_tokens: every special token must be a non-empty string")
        if len(set(values)) != len(values):
            raise ConfigError(f"special_tokens: tokens must be distinct, got {values}")

    def as_list(self) -> list[str]:
        # Order fixes the ids: pad=0, unk=1, bos=2, eos=3, mask=4.
        return [self.pad, self.unk, self.bos, self.eos, self.mask]


@dataclass
class TokenizerConfig:
    """Recipe of the ``tokenizer`` stage."""

    output_dir: str
    datasets: list[DatasetSpec]
    """Training corpora; texts of all of them are streamed into one trainer."""
    model: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    """``bpe`` is byte-level (GPT-2/RoBERTa style: no unknown tokens ever)."""
    vocab_size: int = 8192
    min_frequency: int = 2
    """Minimum pair/word count for a merge (BPE, WordPiece; Unigram ignores it)."""
    normalization: list[Normalization] = field(default_factory=list)
    """Applied in order, e.g. [nfkc, lowercase]; ``strip_accents`` needs ``nfd`` before it."""
    special_tokens: SpecialTokens = field(default_factory=SpecialTokens)
    model_max_length: int = 512
    batch_size: int = 1000
    """Texts handed to the trainer per batch (bounds memory while streaming)."""
    seed: int = 0

    def __post_init__(self):
        if not self.datasets:
            raise ConfigError("'datasets' must list at least one dataset")
        reserved = len(self.special_tokens.as_list())
        alphabet = 256 if self.model == "bpe" else 0
        if self.vocab_size <= reserved + alphabet:
            raise ConfigError(
                f"'vocab_size' must exceed {reserved + alphabet} for model {self.model!r}, got {self.vocab_size}"
            )
        if self.min_frequency < 1:
            raise ConfigError(f"'min_frequency' must be >= 1, got {self.min_frequency}")
        if self.model_max_length < 2:
            raise ConfigError(f"'model_max_length' must be >= 2, got {self.model_max_length}")
        if self.batch_size < 1:
            raise ConfigError(f"'batch_size' must be >= 1, got {self.batch_size}")


def build_tokenizer(cfg: TokenizerConfig):
    """An untrained ``tokenizers.Tokenizer`` and its trainer, for ``cfg.model``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    special = cfg.special_tokens
    common = dict(vocab_size=cfg.vocab_size, special_tokens=special.as_list(), show_progress=False)
    if cfg.model == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            min_frequency=cfg.min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common
        )
    elif cfg.model == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=special.unk))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(min_frequency=cfg.min_frequency, continuing_subword_prefix="##", **common)
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(unk_token=special.unk, **common)
    steps = {
        "nfc": normalizers.NFC,
        "nfd": normalizers.NFD,
        "nfkc": normalizers.NFKC,
        "nfkd": normalizers.NFKD,
        "lowercase": normalizers.Lowercase,
        "strip_accents": normalizers.StripAccents,
    }
    if cfg.normalization:
        tok.normalizer = normalizers.Sequence([steps[name]() for name in cfg.normalization])
    return tok, trainer


def wrap_for_transformers(tok, cfg: TokenizerConfig):
    """Add the bos/eos template and wrap as a ``transformers`` fast tokenizer."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    s = cfg.special_tokens
    # lstrip: "a <mask>" masks the word with its leading space, as RoBERTa does
    tok.add_special_tokens([AddedToken(s.mask, lstrip=True, normalized=False, special=True)])
    bos_id, eos_id = tok.token_to_id(s.bos), tok.token_to_id(s.eos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{s.bos} $A {s.eos}",
        pair=f"{s.bos} $A {s.eos} $B:1 {s.eos}:1",
        special_tokens=[(s.bos, bos_id), (s.eos, eos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=s.pad,
        unk_token=s.unk,
        bos_token=s.bos,
        eos_token=s.eos,
        cls_token=s.bos,
        sep_token=s.eos,
        mask_token=s.mask,
        model_max_length=cfg.model_max_length,
    )


class _CorpusCounter:
    """Streams text batches from every dataset while counting what went through."""

    def __init__(self, cfg: TokenizerConfig):
        self.cfg = cfg
        self.stop = False
        """Set by Ctrl-C: the iteration ends at the next batch (an exception raised inside
        ``train_from_iterator`` would cross the Rust trainer, which may swallow it)."""
        self.bytes = 0
        self.texts = 0
        self.per_dataset: list[dict] = []

    def total_texts(self) -> int | None:
        """Texts the corpus will yield (rows x text columns), or None when a dataset streams."""
        if any(spec.streaming for spec in self.cfg.datasets):
            return None
        return sum(len(load_split(spec)) * len(spec.text_columns) for spec in self.cfg.datasets)

    def __iter__(self) -> Iterator[list[str]]:
        bar = progress_bar(total=self.total_texts(), desc="reading corpus", unit=" texts", unit_scale=True)
        with bar:
            for spec in self.cfg.datasets:
                start_bytes, start_texts = self.bytes, self.texts
                for texts in iter_text_batches(spec, batch_size=self.cfg.batch_size):
                    if self.stop:
                        return
                    n = sum(len(t.encode("utf-8")) for t in texts)
                    self.bytes += n
                    self.texts += len(texts)
                    bar.update(len(texts))
                    bar.set_postfix_str(f"{self.bytes / 2**20:,.1f} MiB", refresh=False)
                    yield texts
                self.per_dataset.append(
                    {
                        "dataset": spec.describe(),
                        "source": resolve(spec).label,
                        "text_columns": spec.text_columns,
                        "texts": self.texts - start_texts,
                        "bytes": self.bytes - start_bytes,
                    }
                )


@contextlib.contextmanager
def _stop_on_signal(corpus: _CorpusCounter):
    """The first SIGINT/SIGTERM ends the corpus early (the run then stops and writes nothing);
    a second one kills the process at once."""

    def handle(signum, frame):
        corpus.stop = True
        signal.signal(signum, signal.SIG_DFL)
        logger.warning("received %s: stopping (press Ctrl-C again to kill)", signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handle)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train_tokenizer(cfg: TokenizerConfig):
    """Train and return ``(PreTrainedTokenizerFast, metrics)`` without writing anything."""
    tok, trainer = build_tokenizer(cfg)
    corpus = _CorpusCounter(cfg)
    start = time.perf_counter()
    with _stop_on_signal(corpus):
        tok.train_from_iterator(iter(corpus), trainer=trainer)
    if corpus.stop:
        raise Interrupted("tokenizer training interrupted; nothing was written")
    seconds = time.perf_counter() - start
    if corpus.bytes == 0:
        raise DataError("tokenizer corpus is empty")
    fast = wrap_for_transformers(tok, cfg)
    vocab = tok.get_vocab_size()
    if vocab < cfg.vocab_size:
        logger.warning(
            "vocabulary has %d entries, fewer than vocab_size=%d: the corpus is too small", vocab, cfg.vocab_size
        )
    metrics = {
        "model": cfg.model,
        "vocab_size": vocab,
        "vocab_size_requested": cfg.vocab_size,
        "corpus_texts": corpus.texts,
        "corpus_bytes": corpus.bytes,
        "corpus_mb": round(corpus.bytes / 1e6, 3),
        "seconds": round(seconds, 3),
        "mb_per_s": round(corpus.bytes / 1e6 / max(seconds, 1e-9), 3),
    }
    return fast, metrics, corpus.per_dataset


def run(cfg: TokenizerConfig, overwrite: bool = False) -> dict:
    """The ``tokenizer`` stage: train, then save the folder and the run files atomically."""
    started = now()
    out = Path(cfg.output_dir)
    with staged_output(out, overwrite, config_inputs(cfg), kind="tokenizer") as staging:
        fast, metrics, per_dataset = train_tokenizer(cfg)
        save_tokenizer(fast, staging)
        write_json(
            staging / CORPUS_FILE,
            {"datasets": per_dataset, "settings": {k: v for k, v in to_dict(cfg).items() if k != "datasets"}},
        )
        write_run_files(staging, stage="tokenizer", config=cfg, seed=cfg.seed, started_at=started, metrics=metrics)
    logger.info(
        "tokenizer: %s vocab %d from %.1f MB in %.1f s (%.2f MB/s) -> %s",
        cfg.model,
        metrics["vocab_size"],
        metrics["corpus_mb"],
        metrics["seconds"],
        metrics["mb_per_s"],
        out,
    )
    return metrics


def save_tokenizer(tokenizer, directory: Path) -> None:
    """``save_pretrained``, naming the class ``PreTrainedTokenizerFast`` (transformers 5 writes
    ``TokenizersBackend``, a name 4.x cannot load; 5.x reads either) and without the loading
    flags of this session (``is_local``, ``local_files_only``: written when it loaded offline,
    they would keep a user of the folder offline)."""
    import json

    tokenizer.save_pretrained(directory)
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    cleaned = {k: v for k, v in config.items() if k not in SESSION_KEYS}
    if cleaned.get("tokenizer_class") == "TokenizersBackend":
        cleaned["tokenizer_class"] = "PreTrainedTokenizerFast"
    if cleaned != config:
        path.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
"""The files that hold a tokenizer's vocabulary (``tokenizer_config.json`` holds only settings)."""

SESSION_KEYS = ("is_local", "local_files_only")
"""Keys ``save_pretrained`` copies from how the tokenizer was loaded, not what it is."""


def load_tokenizer(path: str | Path):
    """Load a tokenizer folder with a clear error if it is not one."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise DataError(f"{path}: not a tokenizer folder (no tokenizer.json or tokenizer_config.json)")
    vocabulary = [name for name in VOCABULARY_FILES if (path / name).is_file()] + [p.name for p in path.glob("*.model")]
    if not vocabulary:
        raise DataError(
            f"{path}: tokenizer_config.json but no tokenizer.json (nor a vocab.txt, vocab.json or "
            "*.model): the tokenizer's vocabulary is missing; copy tokenizer.json from the tokenizer "
            "the model was trained with"
        )
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # corrupted json, wrong class name, ...
        raise DataError(
            f"{path}: tokenizer cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None


def load_tokenizer_for(model_dir: str, tokenizer_dir: str | None = None):
    """The tokenizer saved with a model (or the one named instead, a folder or a Hub id),
    ready to pad batches."""
    from transformers import AutoTokenizer

    where = tokenizer_dir or model_dir
    tokenizer = load_tokenizer(where) if Path(where).exists() else AutoTokenizer.from_pretrained(where)
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers: pad with EOS, as is customary
        if tokenizer.eos_token is None:
            raise DataError(f"tokenizer {where}: has neither a pad nor an EOS token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
