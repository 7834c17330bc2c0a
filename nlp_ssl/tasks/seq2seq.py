"""Sequence to sequence (``task: translation`` and ``task: summarization``).

Setup, and what these tasks add to the engine: source/target pairs tokenized once
(``datasets.map``, cached; targets end with EOS, no BOS, since the decoder starts from
``decoder_start_token_id``), training rows of several packed pairs (``pair_packing``) or
one padded pair each (``DataCollatorForSeq2Seq``: labels padded with -100, so padding carries
no loss; decoder inputs shifted from the labels), and evaluation by generation (beam
search, the one ``GenerationConfig`` saved with the model) scored by the shipped sacreBLEU/chrF
or ROUGE ``evaluate`` modules. The recipe schemas (``TranslationConfig``,
``SummarizationConfig``) are in ``seq2seq_recipe``; the encoder-decoder and its loss in
``seq2seq_model``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from nlp_ssl.data import DatasetSpec, column_texts, dig, load_split, missing_column, resolve
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models import count_parameters
from nlp_ssl.tasks import pair_packing
from nlp_ssl.tasks.base import FinetuneTask, TokenizedSplits, pad_multiple, validation_split
from nlp_ssl.tasks.seq2seq_model import Seq2SeqLoss, build_seq2seq, end_token_id, start_token_id
from nlp_ssl.tasks.seq2seq_recipe import (
    GenerationOptions,
    Seq2SeqConfig,
    Seq2SeqData,
    Seq2SeqTrainConfig,
    SummarizationConfig,
    SummarizationData,
    TranslationConfig,
    TranslationData,
)
from nlp_ssl.training.contract import Batch

__all__ = [
    "METRICS",
    "SUMMARIZATION",
    "TRANSLATION",
    "GenerationOptions",
    "Seq2SeqConfig",
    "Seq2SeqData",
    "Seq2SeqLoss",
    "Seq2SeqTask",
    "Seq2SeqTrainConfig",
    "SummarizationConfig",
    "SummarizationData",
    "TranslationConfig",
    "TranslationData",
    "build_seq2seq",
    "end_token_id",
    "evaluation_task",
    "predict",
    "setup_seq2seq",
    "start_token_id",
    "tokenize_pairs",
]

logger = logging.getLogger(__name__)


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
        # labels padded with -100 so that padding carries no loss; decoder inputs made by the
        # model's own shift of the labels, so they start from decoder_start_token_id as generation does
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
        # 6 x the matmul weights: a lookup in an embedding table costs no FLOPs, the projection
        # onto the vocabulary does
        embeddings = sum(
            p.numel() for m in self.model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
        )
        dec = self.model.config.decoder
        hidden = getattr(dec, "hidden_size", None) or dec.n_embd
        return 6.0 * (count_parameters(self.model) - embeddings + dec.vocab_size * hidden)


def setup_seq2seq(cfg: Seq2SeqConfig, accelerator):
    """Tokenizer, source/target splits and encoder-decoder for translation and summarization."""
    from accelerate.utils import set_seed

    from nlp_ssl.models import check_length_fits, check_same_tokenizer, copy_init_embeddings, resolve_model_dir
    from nlp_ssl.tokenizer import load_tokenizer_for

    d = cfg.data
    encoder = resolve_model_dir(cfg.init, key="init")
    decoder = resolve_model_dir(cfg.init_decoder, key="init_decoder") if cfg.init_decoder else encoder
    for folder, length, key in (
        (encoder, d.max_source_length, "max_source_length"),
        (decoder, d.max_target_length, "max_target_length"),
    ):
        check_length_fits(folder, f"data.{key}", length, key="init" if folder == encoder else "init_decoder")
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
        splits["eval"], pool = validation_split(
            train, d.validation, pairs, fraction=d.validation_fraction, seed=cfg.seed, noun="pairs"
        )
        if d.test is not None:
            splits["test"] = pairs(d.test)
    if d.train_samples is not None and d.train_samples < len(pool):
        pool = np.sort(np.random.default_rng([cfg.seed, 0x5A3]).permutation(pool)[: d.train_samples])
    set_seed(cfg.seed)
    model = build_seq2seq(
        encoder, decoder, tokenizer, from_scratch=cfg.from_scratch, dropout=cfg.dropout, generation=cfg.generation
    )
    copy_init_embeddings(
        [model.encoder, model.decoder],
        cfg.init_embeddings,
        tokenizer,
        cfg.tokenizer or encoder,
        log=logger,
        what="encoder and decoder token embeddings",
    )
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


def predict(ft, texts: list[str], max_length: int, options=None) -> list[dict]:
    """The generated output per text, with the model's saved generation settings (``options``,
    how a classifier reads long texts, does not apply)."""
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
