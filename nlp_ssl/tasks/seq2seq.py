"""Sequence to sequence (``task: translation`` and ``task: summarization``).

The recipe schemas (``TranslationConfig``, ``SummarizationConfig``), setup, and what these
tasks add to the engine: source/target pairs tokenized once (``datasets.map``,
cached; targets end with EOS, no BOS, since the decoder starts from ``decoder_start_token_id``),
an ``EncoderDecoderModel`` warm-started from our checkpoints (Rothe et al. 2020: BERT encoder +
GPT-2 or BERT decoder with cross-attention added) or built with
the same shapes from scratch, training rows of several packed pairs (``pair_packing``) or
one padded pair each (``DataCollatorForSeq2Seq``: labels padded with -100, so padding carries
no loss; decoder inputs shifted from the labels), and evaluation by generation (beam
search, the one ``GenerationConfig`` saved with the model) scored by the shipped sacreBLEU/chrF
or ROUGE ``evaluate`` modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.data import DatasetSpec, column_texts, dig, hold_out, load_split, missing_column, resolve
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.hub_options import HubOptions
from nlp_ssl.models import count_parameters
from nlp_ssl.tasks import pair_packing
from nlp_ssl.tasks.base import FinetuneTask, FinetuneTrainConfig, TokenizedSplits, check_dropout, pad_multiple
from nlp_ssl.training.contract import Batch

logger = logging.getLogger(__name__)


@dataclass
class GenerationOptions:
    """How evaluation, ``evaluate`` and ``predict`` generate (saved as the model's
    ``generation_config.json``, so everyone uses the same settings)."""

    max_new_tokens: int = 64
    num_beams: int = 4
    """1 is greedy decoding; then ``length_penalty`` and ``early_stopping`` do not apply."""
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    early_stopping: bool | None = None
    """Beam search stops when ``num_beams`` finished candidates exist (default: true with
    beam search)."""

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError("'max_new_tokens' and 'num_beams' must be >= 1")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"'no_repeat_ngram_size' must be >= 0, got {self.no_repeat_ngram_size}")
        if self.num_beams == 1 and (self.early_stopping or self.length_penalty != 1.0):
            raise ConfigError(
                "'generation.early_stopping' and 'generation.length_penalty' apply to beam search only: "
                "set generation.num_beams > 1 or leave them unset"
            )
        from transformers import GenerationConfig

        try:  # every other combination transformers would refuse when the model is saved
            GenerationConfig(**self.kwargs()).validate(strict=True)
        except ValueError as exc:
            problems = [line.strip("- ") for line in str(exc).splitlines()[1:] if line.startswith("- ")]
            raise ConfigError(f"'generation': {problems[0] if problems else str(exc).splitlines()[0]}") from None

    def kwargs(self) -> dict:
        """``GenerationConfig`` arguments; beam-only ones only with beam search."""
        out = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        if self.num_beams > 1:
            out.update(
                length_penalty=self.length_penalty,
                early_stopping=True if self.early_stopping is None else self.early_stopping,
            )
        return out


@dataclass(kw_only=True)
class Seq2SeqData:
    """Splits and lengths shared by translation and summarization."""

    train: DatasetSpec
    validation: DatasetSpec | None = None
    """When absent, ``validation_fraction`` of ``train`` is held out (seeded). Every evaluation
    generates for each example: keep it small (``max_rows``)."""
    test: DatasetSpec | None = None
    max_source_length: int = 128
    max_target_length: int = 64
    """Target tokens including the final EOS."""
    train_samples: int | None = None
    """Train on a seeded random subsample of this many pairs."""
    validation_fraction: float = 0.05
    num_proc: int | None = None

    def __post_init__(self):
        if self.max_source_length < 2 or self.max_target_length < 2:
            raise ConfigError("'max_source_length' and 'max_target_length' must be >= 2")
        if self.train_samples is not None and self.train_samples < 1:
            raise ConfigError(f"'train_samples' must be positive, got {self.train_samples}")
        if not 0 < self.validation_fraction < 0.5:
            raise ConfigError(f"'validation_fraction' must be in (0, 0.5), got {self.validation_fraction}")


@dataclass(kw_only=True)
class TranslationData(Seq2SeqData):
    source_lang: str
    """Key of the source language inside ``column`` (``en``)."""
    target_lang: str
    column: str = "translation"
    """The column holding ``{lang: text}`` pairs, as in the Hub's translation datasets."""

    @property
    def source_column(self) -> str:
        return f"{self.column}.{self.source_lang}"

    @property
    def target_column(self) -> str:
        return f"{self.column}.{self.target_lang}"


@dataclass(kw_only=True)
class SummarizationData(Seq2SeqData):
    source_column: str = "document"
    target_column: str = "summary"


@dataclass(kw_only=True)
class Seq2SeqTrainConfig(FinetuneTrainConfig):
    """Fine-tuning defaults, keeping the model with the lowest validation loss (generation-based
    metrics are computed at every evaluation too; ``metric_for_best: bleu`` selects on them)."""

    ADDED: ClassVar[dict[str, Any]] = {**FinetuneTrainConfig.ADDED, "pack_pairs": False}

    metric_for_best: str | None = "loss"
    lr: float = 3e-4
    group_by_length: bool = False
    """Random batches: length-sorted ones cost translation quality, and packed pairs take out
    most of the padding without sorting (docs/benchmarks.md)."""
    length_group_batches: int = 5
    """With ``group_by_length: true``: the coarser the groups, the more quality they cost."""
    pack_pairs: bool | None = None
    """Train on rows holding several pairs each (up to ``max_source_length`` /
    ``max_target_length`` tokens), every pair attending only to itself: the padding of a
    random batch is not computed, and the loss is the padded batch's. Needs BERT, RoBERTa or
    ModernBERT encoders, GPT-2, BERT or RoBERTa decoders, SDPA or eager attention. Default:
    pack when the model allows it, else one pair per row (logged); ``true`` requires it."""


@dataclass(kw_only=True)
class Seq2SeqConfig(HubOptions):
    """Recipe of ``finetune`` with ``task: translation`` or ``task: summarization``."""

    RENAMED: ClassVar[dict[str, str]] = {"encoder": "init", "decoder": "init_decoder"}

    output_dir: str
    init: str
    """The checkpoint to start from, as the encoder (and as the decoder unless ``init_decoder``
    is set): our masked-LM run (BERT), any encoder folder, ``pkg:``, a Hub id."""
    init_decoder: str | None = None
    """The decoder's checkpoint (cross-attention is added): our next-token run (GPT-2), or a
    masked-LM run (BERT as decoder, its own copy of the weights: transformers 5 dropped shared
    encoder-decoder weights). Default: ``init``."""
    from_scratch: bool | Literal["decoder"] = False
    """``true``: the same shapes with fresh weights, the labels-only baseline. ``decoder``: the
    encoder from ``init``, a fresh decoder in the shapes of ``init_decoder`` (an encoder-only
    warm start)."""
    init_embeddings: str | None = None
    """A skipgram/cbow run (same tokenizer, as wide as both halves) whose vectors replace the
    token embeddings of the encoder and of the decoder (and so a tied output layer) before
    training; with ``from_scratch: true``, the embeddings are then the only pretrained part."""
    tokenizer: str | None = None
    """Default: the encoder's tokenizer (the decoder's must be the same)."""
    dropout: float | None = 0.1
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    seed: int = 0

    def __post_init__(self):
        self.check_hub_options()
        check_dropout(self.dropout)


@dataclass(kw_only=True)
class TranslationConfig(Seq2SeqConfig):
    task: Literal["translation"]
    data: TranslationData


@dataclass(kw_only=True)
class SummarizationConfig(Seq2SeqConfig):
    task: Literal["summarization"]
    data: SummarizationData


class Seq2SeqLoss(torch.nn.Module):
    """Sum of target-token cross-entropies (labels of -100, the padding, carry none)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids,
        attention_mask,
        labels,
        decoder_input_ids,
        cross_attention_mask=None,
        position_ids=None,
        decoder_attention_mask=None,
        decoder_position_ids=None,
    ):
        if cross_attention_mask is None:
            # the decoder reads the start token, then every target but the last: padding after
            # the targets is masked (the decoder would otherwise warn that its input looks padded)
            decoder_mask = torch.ones_like(decoder_input_ids)
            decoder_mask[:, 1:] = labels[:, :-1] != -100
            logits = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_mask,
            ).logits
        else:
            # packed rows (``pair_packing``): the model would give the decoder the encoder's own
            # mask for cross-attention, so the encoder runs first and the decoder gets its own
            for_attention = pair_packing.for_attention
            encoder, decoder = self.model.encoder, self.model.decoder
            encoded = encoder(
                input_ids=input_ids,
                attention_mask=for_attention(attention_mask, encoder),
                position_ids=position_ids,
                return_dict=True,
            )
            logits = self.model(
                encoder_outputs=encoded,
                attention_mask=for_attention(cross_attention_mask, decoder),
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=for_attention(decoder_attention_mask, decoder),
                decoder_position_ids=decoder_position_ids,
            ).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")


def end_token_id(tokenizer) -> int:
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise DataError(f"tokenizer {tokenizer.name_or_path}: has no EOS (or SEP) token to end targets with")
    return end


def start_token_id(tokenizer) -> int:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    if start is None:
        raise DataError(f"tokenizer {tokenizer.name_or_path}: has no BOS (or CLS) token to start decoding with")
    return start


def tokenize_pairs(
    spec: DatasetSpec,
    tokenizer,
    source_column: str,
    target_column: str,
    max_source_length: int,
    max_target_length: int,
    num_proc: int | None = None,
):
    """Load a split, check both columns row by row, tokenize sources and targets (cached)."""
    source = resolve(spec)
    ds = load_split(spec, source)
    where = f"dataset {source.label}"
    for column in (source_column, target_column):
        if column.split(".")[0] not in ds.column_names:
            raise missing_column(where, column.split(".")[0], ds.column_names)
    end = end_token_id(tokenizer)

    def encode(batch, indices):
        sources = column_texts(batch, source_column, spec, source.label, rows=indices)
        targets = column_texts(batch, target_column, spec, source.label, rows=indices)
        for column, kind, texts in ((source_column, "source", sources), (target_column, "target", targets)):
            for row, text in zip(indices, texts):
                if not text.strip():
                    raise DataError(f"{where}: row {row}: column {column!r} is empty, expected a {kind} text")
        enc = tokenizer(sources, truncation=True, max_length=max_source_length)
        tgt = tokenizer(targets, add_special_tokens=False, truncation=True, max_length=max_target_length - 1)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": [ids + [end] for ids in tgt["input_ids"]],
        }

    return ds.map(encode, batched=True, with_indices=True, num_proc=num_proc, desc=f"tokenizing {spec.describe()}")


def build_seq2seq(
    encoder_dir: str,
    decoder_dir: str,
    tokenizer,
    *,
    from_scratch: bool | str = False,
    dropout: float | None = None,
    generation=None,
):
    """An ``EncoderDecoderModel`` from an encoder folder and a decoder folder (cross-attention
    added to the decoder), or the same shapes with fresh weights (all of them, or the
    decoder's alone with ``from_scratch="decoder"``); every id that generation and the label
    shift need is set (a warm start without them repeats one token)."""
    from safetensors import SafetensorError
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        EncoderDecoderConfig,
        EncoderDecoderModel,
        GenerationConfig,
    )

    from nlp_ssl.models import check_vocab, from_pretrained, load_model_config, set_dropout

    enc_cfg, dec_cfg = load_model_config(encoder_dir, "init"), load_model_config(decoder_dir, "init_decoder")
    dec_cfg.is_decoder, dec_cfg.add_cross_attention = True, True
    if dropout is not None:
        set_dropout(enc_cfg, dropout)
        set_dropout(dec_cfg, dropout)
    try:
        if from_scratch is True:
            config = EncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)
            model = EncoderDecoderModel(config=config)
        else:
            # what EncoderDecoderModel.from_encoder_decoder_pretrained does, each half's load
            # reported in one line (the decoder's new cross-attention is the point, not a fault)
            encoder = from_pretrained(AutoModel, encoder_dir, config=enc_cfg)
            if from_scratch == "decoder":
                decoder = AutoModelForCausalLM.from_config(dec_cfg)
            else:
                decoder = from_pretrained(AutoModelForCausalLM, decoder_dir, config=dec_cfg)
            config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
            model = EncoderDecoderModel(encoder=encoder, decoder=decoder, config=config)
    except ValueError as exc:
        raise DataError(
            f"cannot build an encoder-decoder from {encoder_dir} and {decoder_dir}: {str(exc).splitlines()[0][:200]}"
        ) from None
    except (OSError, SafetensorError) as exc:  # missing, truncated or corrupted weights
        raise DataError(
            f"encoder {encoder_dir} / decoder {decoder_dir}: weights cannot be loaded "
            f"({str(exc).splitlines()[0][:160]}); the checkpoint may be incomplete or damaged"
        ) from None
    check_vocab(model.encoder, tokenizer, tokenizer.name_or_path)
    check_vocab(model.decoder, tokenizer, tokenizer.name_or_path)
    ids = {
        "decoder_start_token_id": start_token_id(tokenizer),
        "eos_token_id": end_token_id(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": start_token_id(tokenizer),
    }
    for key, value in ids.items():
        setattr(model.config, key, value)
    model.config.vocab_size = model.config.decoder.vocab_size
    g = generation or GenerationOptions()
    model.generation_config = GenerationConfig(**g.kwargs(), **ids)
    return model


class Seq2SeqTask(TokenizedSplits):
    """Engine task over tokenized source/target pairs (``train``, ``eval``, optionally ``test``)."""

    length_columns = ("input_ids", "labels")

    def __init__(
        self,
        model,
        tokenizer,
        splits: dict,
        *,
        source_column: str,
        target_column: str,
        metric: str,
        train_index: np.ndarray | None = None,
        pack_widths: tuple[int, int] | None = None,
    ):
        from transformers import DataCollatorForSeq2Seq

        self.model = model
        self.pack_widths = pack_widths
        """Source and target tokens per packed training row; None: one pair per row."""
        self.tokenizer = tokenizer
        self.module = Seq2SeqLoss(model)
        self.source_column, self.target_column = source_column, target_column
        self.metric = metric
        """``sacrebleu_chrf`` (translation) or ``rouge`` (summarization)."""
        self.init_splits(splits, ["input_ids", "attention_mask", "labels"], train_index)
        # labels padded with -100; decoder inputs made by the model's own shift of the labels
        self.collator = DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_multiple()
        )

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        _, examples = self.examples(split, indices)
        if split == "train" and self.pack_widths is not None:  # evaluation generates from one pair per row
            inputs = pair_packing.pack_pairs(
                examples,
                self.model.config,
                source_width=self.pack_widths[0],
                target_width=self.pack_widths[1],
                pad_id=self.tokenizer.pad_token_id,
                start_id=self.model.config.decoder_start_token_id,
                pad_to_multiple_of=pad_multiple(),
            )
        else:
            inputs = dict(self.collator(examples))
        targets = int((inputs["labels"] != -100).sum())
        sources = sum(len(e["input_ids"]) for e in examples)
        return Batch(inputs, n_targets=targets, n_tokens=sources + targets)

    def eval_step(self, module, inputs: dict):
        loss = module(**inputs)
        generated = self.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        width = self.model.generation_config.max_new_tokens + 1  # fixed, so batches concatenate
        out = torch.full((generated.size(0), width), self.tokenizer.pad_token_id, dtype=torch.long)
        out[:, : min(width, generated.size(1))] = generated[:, :width].cpu()
        return loss, {"hypothesis": out}

    def hypotheses(self, outputs: dict) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(outputs["hypothesis"], skip_special_tokens=True)]

    def references(self, split: str, outputs: dict) -> list[str]:
        return [dig(row, self.target_column) for row in self.source_rows(split, outputs)]

    def compute_metrics(self, outputs: dict, split: str) -> dict:
        from nlp_ssl import metrics

        if not outputs:
            return {}
        hyps, refs = self.hypotheses(outputs), self.references(split, outputs)
        scores = metrics.load(self.metric).compute(predictions=hyps, references=[[r] for r in refs])
        scores["gen_len"] = float(
            np.mean([len(self.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in hyps])
        )
        return scores

    def records(self, split: str, outputs: dict) -> list[dict]:
        rows = self.source_rows(split, outputs)
        return [
            {"source": dig(row, self.source_column), "reference": dig(row, self.target_column), "hypothesis": hyp}
            for row, hyp in zip(rows, self.hypotheses(outputs))
        ]

    def flops_per_token(self) -> float:
        # 6 x the matmul weights (embedding tables excluded, the output projection included)
        embeddings = sum(
            p.numel() for m in self.model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
        )
        dec = self.model.config.decoder
        hidden = getattr(dec, "hidden_size", None) or dec.n_embd
        return 6.0 * (count_parameters(self.model) - embeddings + dec.vocab_size * hidden)

    def describe(self) -> dict:
        return {
            "parameters": count_parameters(self.model),
            "train_examples": self.n_train,
            **{f"{name}_examples": len(idx) for name, idx in self.index.items() if name != "train"},
        }


def setup_seq2seq(cfg: Seq2SeqConfig, accelerator):
    """Tokenizer, source/target splits and encoder-decoder for translation and summarization."""
    from accelerate.utils import set_seed

    from nlp_ssl.models import check_same_tokenizer, copy_token_embeddings, max_positions, resolve_model_dir
    from nlp_ssl.tokenizer import load_tokenizer_for

    d = cfg.data
    encoder = resolve_model_dir(cfg.init, key="init")
    decoder = resolve_model_dir(cfg.init_decoder, key="init_decoder") if cfg.init_decoder else encoder
    for folder, length, key in (
        (encoder, d.max_source_length, "max_source_length"),
        (decoder, d.max_target_length, "max_target_length"),
    ):
        positions = max_positions(folder, "init" if folder == encoder else "init_decoder")
        if positions is not None and length > positions:
            raise ConfigError(f"'data.{key}' ({length}) exceeds the {positions} positions of the model in {folder}")
    tokenizer = load_tokenizer_for(encoder, cfg.tokenizer)
    if decoder != encoder:
        check_same_tokenizer(tokenizer, decoder, cfg.tokenizer or encoder)
    tokenizer.model_max_length = d.max_source_length

    def pairs(spec):
        return tokenize_pairs(
            spec, tokenizer, d.source_column, d.target_column, d.max_source_length, d.max_target_length, d.num_proc
        )

    with accelerator.main_process_first():
        train = pairs(d.train)
        splits = {"train": train}
        pool = np.arange(len(train))
        if d.validation is not None:
            splits["eval"] = pairs(d.validation)
        else:
            pool, held = hold_out(
                len(train),
                d.validation_fraction,
                cfg.seed,
                f"data.train: {len(train)} pairs are too few to hold out a validation set",
            )
            splits["eval"] = train.select(held)
        if d.test is not None:
            splits["test"] = pairs(d.test)
    if d.train_samples is not None and d.train_samples < len(pool):
        pool = np.sort(np.random.default_rng([cfg.seed, 0x5A3]).permutation(pool)[: d.train_samples])
    set_seed(cfg.seed)
    model = build_seq2seq(
        encoder, decoder, tokenizer, from_scratch=cfg.from_scratch, dropout=cfg.dropout, generation=cfg.generation
    )
    if cfg.init_embeddings is not None:
        rows = copy_token_embeddings(
            [model.encoder, model.decoder], cfg.init_embeddings, tokenizer, cfg.tokenizer or encoder
        )
        logger.info("encoder and decoder token embeddings of %d ids from %s", rows, cfg.init_embeddings)
    # what evaluate/predict need to know about this model, saved in its config.json
    model.config.nlp_ssl = {"task": cfg.task, "source_column": d.source_column, "target_column": d.target_column}
    metric = METRICS[cfg.task]
    pack_widths = None
    if cfg.train.pack_pairs is not False:
        if (reason := pair_packing.unsupported(model)) is None:
            pack_widths = (d.max_source_length, d.max_target_length)
            logger.info("training on packed rows of up to %d source and %d target tokens", *pack_widths)
        elif cfg.train.pack_pairs:
            raise ConfigError(f"'train.pack_pairs': {reason}; set it to false")
        else:
            logger.warning(
                "training one pair per row, padded: %s (train.pack_pairs: false silences this; "
                "train.group_by_length: true pads less, at some cost in quality)",
                reason,
            )
    task = Seq2SeqTask(
        model,
        tokenizer,
        splits,
        source_column=d.source_column,
        target_column=d.target_column,
        metric=metric,
        train_index=pool,
        pack_widths=pack_widths,
    )
    origin = {
        "init": cfg.init,
        "init_decoder": cfg.init_decoder or cfg.init,
        "from_scratch": cfg.from_scratch,
        "init_embeddings": cfg.init_embeddings,
    }
    logger.info(
        "%s fine-tuning, encoder %s, decoder %s%s: %.2fM parameters, %d train / %d validation pairs",
        cfg.task,
        encoder,
        decoder,
        {True: " (fresh weights)", "decoder": " (fresh decoder)"}.get(cfg.from_scratch, ""),
        task.describe()["parameters"] / 1e6,
        task.n_train,
        len(task.index["eval"]),
    )
    return task, origin


METRICS = {"translation": "sacrebleu_chrf", "summarization": "rouge"}
"""The ``evaluate`` module scoring each task's generations."""


def evaluation_task(ft, data: DatasetSpec, options) -> Seq2SeqTask:
    """A saved encoder-decoder over one ``test`` split (``nlp-ssl evaluate``): ``options``
    carries ``max_length`` and may override the columns it was fine-tuned on."""
    source = options.source_column or ft.saved.get("source_column")
    target = options.target_column or ft.saved.get("target_column")
    if not source or not target:
        raise ConfigError("this encoder-decoder does not record its columns: pass --source-column and --target-column")
    ds = tokenize_pairs(
        data, ft.tokenizer, source, target, options.max_length, ft.model.generation_config.max_new_tokens + 1
    )
    return Seq2SeqTask(
        ft.model,
        ft.tokenizer,
        {"test": ds},
        source_column=source,
        target_column=target,
        metric=METRICS.get(ft.saved.get("task", "translation"), "rouge"),
    )


def predict(ft, texts: list[str], max_length: int) -> list[dict]:
    """The generated output per text, with the model's saved generation settings."""
    enc = ft.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    generated = ft.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    outputs = ft.tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [{"text": t, "output": o.strip()} for t, o in zip(texts, outputs)]


def _usage(text: str):
    def usage(where: str) -> str:
        return (
            f"from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
            f'model = AutoModelForSeq2SeqLM.from_pretrained("{where}")  # beam search etc. in generation_config.json\n'
            f'inputs = tokenizer(["{text}"], return_tensors="pt", truncation=True)\n'
            "print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))"
        )

    return usage


_SHARED = dict(
    setup=setup_seq2seq,
    model_noun="encoder-decoder",
    auto_model="AutoModelForSeq2SeqLM",
    recognises=lambda config: (
        bool(config.get("is_encoder_decoder"))
        or any(
            a.endswith(("EncoderDecoderModel", "ForConditionalGeneration")) for a in config.get("architectures") or []
        )
    ),
    evaluation_task=evaluation_task,
    predict=predict,
    starts_from={"init": "the encoder", "init_decoder": "the decoder"},
    examples="source/target pairs",
    warm_start_note=" (warm-started, cross-attention added)",
)

TRANSLATION = FinetuneTask(
    name="translation",
    config=TranslationConfig,
    pipeline_tag="translation",
    title="Translation",
    headline=("test_bleu", "test_chrf"),
    purpose=lambda recipe, model_config: (
        f"{recipe.get('data', {}).get('source_lang')} -> {recipe.get('data', {}).get('target_lang')} translation"
    ),
    usage=_usage("A man is riding a bicycle down the street."),
    languages=lambda recipe: [recipe["data"]["source_lang"], recipe["data"]["target_lang"]],
    **_SHARED,
)

SUMMARIZATION = FinetuneTask(
    name="summarization",
    config=SummarizationConfig,
    pipeline_tag="summarization",
    title="Summarization",
    headline=("test_rougeL", "test_rouge1"),
    purpose=lambda recipe, model_config: "summarization",
    usage=_usage("#Person1#: Hi! ..."),
    **_SHARED,
)
