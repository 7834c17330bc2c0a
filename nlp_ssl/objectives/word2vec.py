"""Token embeddings first: ``nlp-ssl pretrain`` with ``objective: skipgram`` or ``cbow``.

word2vec's two objectives (predict a token's neighbours from it, or it from its neighbours,
with negative sampling and subsampling of frequent tokens) over the ids of the stage's own
tokenizer, so any tokenizer and language works. Training is gensim's (optimised C, many
threads, no GIL); the run goes through the stage flow of every stage (``nlp_ssl.stage``):
a recipe, cached tokenization, a checkpoint after every epoch with exact resume, a progress
bar with tokens/s, TensorBoard and ``train_log.jsonl``.

Output: ``<output_dir>/model/`` is a token-vector folder (``nlp_ssl.vectors``): a
``sentence_transformers`` static-embedding folder that warm-starts transformers
(``init_embeddings`` in ``pretrain`` and ``finetune``) and feeds frozen-feature heads
(``nlp-ssl baseline`` with ``method: frozen_logreg``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from nlp_ssl import checkpoint as ckpt
from nlp_ssl import train_log
from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.objectives import Objective
from nlp_ssl.progress import launched
from nlp_ssl.run_files import MODEL_DIR, write_json
from nlp_ssl.run_format import FORMAT
from nlp_ssl.stage import TrainingStage
from nlp_ssl.training import Tracker
from nlp_ssl.vectors import save_vector_folder

logger = logging.getLogger(__name__)

# gensim truncates longer "sentences" in its batches; longer documents are cut into pieces
MAX_PIECE = 10_000


@dataclass
class EmbeddingDataConfig:
    datasets: list[DatasetSpec]
    """Unlabelled corpora; every document is one "sentence" (windows never cross documents)."""
    num_proc: int | None = None
    """Processes for tokenization (datasets.map, cached)."""

    def __post_init__(self):
        if not self.datasets:
            raise ConfigError("'datasets' must list at least one dataset")
        for i, d in enumerate(self.datasets):
            if d.streaming:
                raise ConfigError(
                    f"'datasets[{i}].streaming': skipgram/cbow read their corpus once per epoch "
                    "(cached); set streaming: false"
                )


@dataclass
class EmbeddingModelConfig:
    dim: int = 256
    """Vector width; a transformer warm-started from the run must have this hidden size."""
    window: int = 5
    """Tokens on each side (word2vec samples a window of 1..window per position)."""
    negative: int = 5
    """Negative samples per positive pair."""
    ns_exponent: float = 0.75
    """Negatives are drawn from the unigram distribution raised to this power."""
    sample: float = 1e-4
    """Frequent-token subsampling threshold (0 keeps every token)."""
    min_count: int = 5
    """Tokens seen fewer times get no vector (zeros; a warm start keeps the model's init)."""

    def __post_init__(self):
        for name in ("dim", "window", "negative", "min_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.sample < 1:
            raise ConfigError(f"'sample' must be in [0, 1), got {self.sample}")
        if not math.isfinite(self.ns_exponent):
            raise ConfigError(f"'ns_exponent' must be a finite number, got {self.ns_exponent}")


@dataclass
class EmbeddingTrainConfig:
    epochs: int = 5
    lr: float = 0.025
    """Starting learning rate (gensim's alpha), decayed linearly to ``min_lr`` over all epochs."""
    min_lr: float = 1e-4
    workers: int = 2
    """Training threads. More than 1 is faster but not bit-for-bit reproducible (threads race
    on shared vectors, as in every word2vec); 1 makes a seed and a resume exact."""
    resume: str | None = None
    """``latest``: continue from the newest epoch checkpoint of ``output_dir``."""
    tracker: Tracker = "tensorboard"
    mixed_precision: ClassVar[str] = "no"  # gensim trains in float32; read by the shared tracker set-up

    def __post_init__(self):
        for name in ("epochs", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"'{name}' must be a positive finite number, got {value}")
        if self.min_lr > self.lr:
            raise ConfigError(f"'min_lr' ({self.min_lr}) exceeds 'lr' ({self.lr})")
        if self.resume not in (None, "latest"):
            raise ConfigError(f"'resume' must be 'latest' (or unset), got {self.resume!r}")


@dataclass
class EmbeddingPretrainConfig:
    """Recipe of ``pretrain`` with ``objective: skipgram`` or ``objective: cbow``."""

    output_dir: str
    objective: Literal["skipgram", "cbow"]
    """``skipgram``: predict each neighbour from the token; ``cbow``: predict the token from
    the mean of its neighbours (faster, a little worse on rare tokens)."""
    tokenizer: str
    """Tokenizer folder (the tokenizer stage's output_dir): the vectors are for its ids."""
    data: EmbeddingDataConfig
    model: EmbeddingModelConfig = field(default_factory=EmbeddingModelConfig)
    train: EmbeddingTrainConfig = field(default_factory=EmbeddingTrainConfig)
    seed: int = 0


def lr_schedule(train: EmbeddingTrainConfig) -> list[float]:
    """Learning rate at each epoch boundary (``epochs + 1`` values): word2vec's linear decay,
    cut at epochs so that every epoch can be its own ``train`` call and a checkpoint."""
    return [train.lr + (train.min_lr - train.lr) * e / train.epochs for e in range(train.epochs + 1)]


class TokenCorpus:
    """The tokenized corpus as gensim "sentences": one list of token-id strings per document
    (special tokens dropped), re-iterable, counting the tokens it hands out for the progress
    bar."""

    def __init__(self, splits, special_ids: set[int], vocab_size: int):
        self.splits = splits
        self.names = [str(i) for i in range(vocab_size)]  # shared str objects: no per-token allocation
        self.special = np.zeros(vocab_size, dtype=bool)
        self.special[sorted(special_ids)] = True
        self.on_tokens = None
        self.n_docs = sum(len(s) for s in splits)

    def __iter__(self) -> Iterator[list[str]]:
        names = self.names
        for split in self.splits:
            for batch in split.iter(batch_size=1000):
                for ids in batch["input_ids"]:
                    ids = np.asarray(ids, dtype=np.int64)
                    ids = ids[~self.special[ids]]
                    for start in range(0, len(ids), MAX_PIECE):
                        piece = ids[start : start + MAX_PIECE]
                        if len(piece) > 1:
                            if self.on_tokens is not None:
                                self.on_tokens(len(piece))
                            yield [names[i] for i in piece.tolist()]


def build_word2vec(cfg: EmbeddingPretrainConfig):
    from gensim.models import Word2Vec

    m = cfg.model
    return Word2Vec(
        vector_size=m.dim,
        window=m.window,
        negative=m.negative,
        ns_exponent=m.ns_exponent,
        sample=m.sample,
        min_count=m.min_count,
        sg=1 if cfg.objective == "skipgram" else 0,
        hs=0,
        workers=cfg.train.workers,
        seed=cfg.seed,
        alpha=cfg.train.lr,
        min_alpha=cfg.train.min_lr,
        epochs=cfg.train.epochs,
        compute_loss=True,
    )


def vectors_by_id(w2v, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``[vocab_size, dim]`` float32 vectors indexed by token id (zeros where the token got none)
    and the mask of ids that got one."""
    vectors = np.zeros((vocab_size, w2v.wv.vector_size), dtype=np.float32)
    trained = np.zeros(vocab_size, dtype=bool)
    ids = np.array([int(k) for k in w2v.wv.index_to_key], dtype=np.int64)
    vectors[ids] = w2v.wv.vectors
    trained[ids] = True
    return vectors, trained


def _save_checkpoint(w2v, out: Path, epoch: int, state: dict) -> None:
    """The checkpoint layout of every stage (``checkpoint.py``: hidden staging folder, manifest,
    rename, the last two kept), with the epoch as the step."""
    staging = ckpt.staging_path(out, epoch)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    w2v.save(str(staging / "word2vec.model"))
    write_json(staging / ckpt.STATE_FILE, {**state, "format": FORMAT})
    ckpt.write_manifest(staging)
    ckpt.commit(staging, keep_last=2)


def _load_checkpoint(out: Path):
    """The newest intact epoch checkpoint of ``out`` (a damaged one is skipped with a warning),
    or None."""
    from gensim.models import Word2Vec

    for path in ckpt.resume_candidates("latest", out):
        try:
            return Word2Vec.load(str(path / "word2vec.model")), ckpt.read_trainer_state(path), path
        except Exception as exc:  # a damaged file the manifest could not know about (written before it)
            logger.warning(
                "checkpoint %s cannot be loaded (%s); trying the previous one", path, str(exc).splitlines()[0][:160]
            )
    return None


def load_corpus(cfg: EmbeddingPretrainConfig, tokenizer) -> TokenCorpus:
    from nlp_ssl.packing import tokenize_split

    splits = [tokenize_split(spec, tokenizer, cfg.data.num_proc) for spec in cfg.data.datasets]
    special = {i for i in tokenizer.all_special_ids if i is not None}
    corpus = TokenCorpus(splits, special, len(tokenizer))
    if corpus.n_docs == 0:
        raise DataError(f"data: {', '.join(s.describe() for s in cfg.data.datasets)} hold no documents")
    return corpus


class Word2VecPretraining(TrainingStage):
    """``pretrain`` for an ``EmbeddingPretrainConfig``: gensim's epochs, a checkpoint after each."""

    kind = "pretrain"
    resumed = False
    """Whether ``setup`` found a checkpoint to continue."""

    def check(self) -> None:
        if launched().world_size > 1:
            raise ConfigError(
                f"objective {self.cfg.objective} trains with train.workers threads in one process; run it "
                "without accelerate launch / torchrun"
            )

    def setup(self, accelerator, work: Path) -> None:
        from nlp_ssl.tokenizer import load_tokenizer

        cfg = self.cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        if not self.tokenizer.is_fast:
            raise DataError(
                f"tokenizer {cfg.tokenizer}: not a fast (tokenizers-backed) tokenizer, which the "
                "sentence-transformers output folder needs"
            )
        self.corpus = load_corpus(cfg, self.tokenizer)
        resumed = _load_checkpoint(work) if cfg.train.resume == "latest" and work.is_dir() else None
        if resumed is None and cfg.train.resume == "latest":
            logger.warning("train.resume=latest: %s holds no checkpoint yet; starting from epoch 0", work)
        self.resumed = resumed is not None
        if resumed is not None:
            self.w2v, self.state, path = resumed
            self.w2v.workers = cfg.train.workers
            logger.info("resumed from %s (epoch %d of %d)", path, self.state["epoch"], cfg.train.epochs)
            return
        self.w2v = build_word2vec(cfg)
        t = time.perf_counter()
        self.w2v.build_vocab(self.corpus)
        self.state = {"epoch": 0, "tokens": 0, "seconds": 0.0, "loss": None}
        self.state["vocab_seconds"] = round(time.perf_counter() - t, 3)
        if len(self.w2v.wv) == 0:
            raise DataError(
                f"data: no token occurs {cfg.model.min_count} times (model.min_count); "
                "the corpus is too small for these settings"
            )

    @property
    def resume(self) -> str | None:
        return "latest" if self.resumed else None

    def train(self, work: Path, accelerator, on_checkpoint) -> dict:
        from nlp_ssl.progress import progress_bar

        cfg, w2v, corpus, state = self.cfg, self.w2v, self.corpus, self.state
        ckpt.clean_partials(work)
        total = w2v.corpus_total_words
        alphas = lr_schedule(cfg.train)
        # one record per epoch, through the trackers and train_log.jsonl of every stage
        train_log.start(accelerator, work, state["epoch"], cfg.train.tracker, cfg)
        logger.info(
            "%s embeddings: %d of %d token ids in the vocabulary, %d dims, %s tokens x %d epochs, %d workers",
            cfg.objective,
            len(w2v.wv),
            len(self.tokenizer),
            cfg.model.dim,
            f"{total:,}",
            cfg.train.epochs,
            cfg.train.workers,
        )
        for epoch in range(state["epoch"], cfg.train.epochs):
            bar = progress_bar(
                total=total, unit="tok", unit_scale=True, desc=f"{cfg.objective} epoch {epoch + 1}/{cfg.train.epochs}"
            )
            corpus.on_tokens = bar.update
            t = time.perf_counter()
            with bar:  # closed however training ends, so an error line starts a line of its own
                trained_words, _ = w2v.train(
                    corpus,
                    total_examples=w2v.corpus_count,
                    total_words=total,
                    epochs=1,
                    start_alpha=alphas[epoch],
                    end_alpha=alphas[epoch + 1],
                    compute_loss=True,
                )
            seconds = time.perf_counter() - t
            corpus.on_tokens = None
            # gensim sums the pairs' negative log-likelihood in float32, and with several threads
            # some additions are lost (gensim #2735): a trend to watch, not a figure to compare
            loss = w2v.get_latest_training_loss() / max(trained_words, 1)
            state = {
                "epoch": epoch + 1,
                "tokens": state["tokens"] + total,
                "loss": loss,
                "seconds": round(state["seconds"] + seconds, 3),
                "vocab_seconds": state.get("vocab_seconds"),
            }
            train_log.log(
                accelerator,
                work,
                epoch + 1,
                {
                    "train/loss": loss,
                    "train/lr": alphas[epoch + 1],
                    "train/tokens_per_s": total / seconds,
                    "train/tokens": state["tokens"],
                },
                cfg.train.tracker,
            )
            logger.info(
                "epoch %d/%d: %.2f nats per trained token, %s tokens/s",
                epoch + 1,
                cfg.train.epochs,
                loss,
                f"{total / seconds:,.0f}",
            )
            _save_checkpoint(w2v, work, epoch + 1, state)
        return state

    def finish(self, summary: dict, accelerator, folder: Path) -> dict:
        cfg, tokenizer = self.cfg, self.tokenizer
        vectors, trained = vectors_by_id(self.w2v, len(tokenizer))
        info = {
            "objective": cfg.objective,
            "dim": cfg.model.dim,
            "vocab_size": len(tokenizer),
            "trained_tokens": int(trained.sum()),
            "tokenizer": str(Path(cfg.tokenizer).absolute()),
        }
        save_vector_folder(vectors, trained, tokenizer, folder / MODEL_DIR, info)
        return {
            **info,
            "window": cfg.model.window,
            "negative": cfg.model.negative,
            "epochs": cfg.train.epochs,
            "corpus_docs": self.corpus.n_docs,
            "corpus_tokens": int(self.w2v.corpus_total_words),
            "tokens": int(summary["tokens"]),
            "train_seconds": summary["seconds"],
            "tokens_per_s": round(summary["tokens"] / max(summary["seconds"], 1e-9)),
            "parameters": int(trained.sum()) * cfg.model.dim,
            "final_train_loss": round(summary["loss"], 4) if summary.get("loss") is not None else None,
        }


def _usage(where: str) -> str:
    return (
        f"from sentence_transformers import SentenceTransformer\n\n"
        f'model = SentenceTransformer("{where}")  # a sentence vector is the mean of its token vectors\n'
        'model.encode(["a gripping, beautifully shot film"])'
    )


# Not exported or pushed: the model folder is already a sentence-transformers folder.
SKIPGRAM = Objective(
    name="skipgram",
    config=EmbeddingPretrainConfig,
    title="Skip-gram token embeddings",
    pipeline_tag="sentence-similarity",
    what="static token embeddings (word2vec skip-gram)",
    usage=_usage,
    stage=Word2VecPretraining,
    static_vectors=True,
    training="skip-gram with negative sampling",
)
CBOW = Objective(
    name="cbow",
    config=EmbeddingPretrainConfig,
    title="CBOW token embeddings",
    pipeline_tag="sentence-similarity",
    what="static token embeddings (word2vec CBOW)",
    usage=_usage,
    stage=Word2VecPretraining,
    static_vectors=True,
    training="CBOW with negative sampling",
)
