"""Sequence to sequence (``task: translation`` and ``task: summarization``).

What this task adds to the engine: source/target pairs tokenized once (``datasets.map``,
cached; targets end with EOS, no BOS, since the decoder starts from ``decoder_start_token_id``),
an ``EncoderDecoderModel`` warm-started from our checkpoints (Rothe et al. 2020: BERT encoder +
GPT-2 or BERT decoder with cross-attention added) or built with
the same shapes from scratch, ``DataCollatorForSeq2Seq`` (labels padded with -100, so padding
carries no loss; decoder inputs shifted from the labels), and evaluation by generation (beam
search, the one ``GenerationConfig`` saved with the model) scored by the shipped sacreBLEU/chrF
or ROUGE ``evaluate`` modules.
"""

from __future__ import annotations

import logging
import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.data import DatasetSpec, column_texts, dig, load_split, resolve
from nlp_ssl.engine import Batch
from nlp_ssl.errors import DataError
from nlp_ssl.models import count_parameters
from nlp_ssl.tasks.splits import TokenizedSplits

logger = logging.getLogger(__name__)


class Seq2SeqLoss(torch.nn.Module):
    """Sum of target-token cross-entropies (labels of -100, the padding, carry none)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, decoder_input_ids):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            decoder_input_ids=decoder_input_ids).logits
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


def tokenize_pairs(spec: DatasetSpec, tokenizer, source_column: str, target_column: str, max_source_length: int,
                   max_target_length: int, num_proc: int | None = None):
    """Load a split, check both columns row by row, tokenize sources and targets (cached)."""
    source = resolve(spec)
    ds = load_split(spec, source)
    where = f"dataset {source.label}"
    for column in (source_column, target_column):
        if column.split(".")[0] not in ds.column_names:
            raise DataError(f"{where}: no column {column.split('.')[0]!r} (columns: {', '.join(ds.column_names)})")
    end = end_token_id(tokenizer)

    def encode(batch, indices):
        sources = column_texts(batch, source_column, spec, source.label, rows=indices)
        targets = column_texts(batch, target_column, spec, source.label, rows=indices)
        for row, text in zip(indices, targets):
            if not text.strip():
                raise DataError(f"{where}: row {row}: column {target_column!r} is empty, expected a target text")
        enc = tokenizer(sources, truncation=True, max_length=max_source_length)
        tgt = tokenizer(targets, add_special_tokens=False, truncation=True, max_length=max_target_length - 1)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": [ids + [end] for ids in tgt["input_ids"]]}

    return ds.map(encode, batched=True, with_indices=True, num_proc=num_proc, desc=f"tokenizing {spec.describe()}")


def build_seq2seq(encoder_dir: str, decoder_dir: str, tokenizer, *, from_scratch: bool = False,
                  dropout: float | None = None, generation=None):
    """An ``EncoderDecoderModel`` from an encoder folder and a decoder folder (cross-attention
    added to the decoder), or the same shapes with fresh weights; every id that generation
    and the label shift need is set (a warm start without them repeats one token)."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, EncoderDecoderConfig, EncoderDecoderModel, GenerationConfig

    from nlp_ssl.models import check_vocab, set_dropout

    try:
        enc_cfg, dec_cfg = AutoConfig.from_pretrained(encoder_dir), AutoConfig.from_pretrained(decoder_dir)
    except Exception as exc:
        raise DataError(f"encoder/decoder config cannot be loaded ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]})") from None
    dec_cfg.is_decoder, dec_cfg.add_cross_attention = True, True
    if dropout is not None:
        set_dropout(enc_cfg, dropout)
        set_dropout(dec_cfg, dropout)
    try:
        if from_scratch:
            config = EncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)
            model = EncoderDecoderModel(config=config)
        else:
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(
                encoder_dir, decoder_dir, encoder_config=enc_cfg, decoder_config=dec_cfg)
    except ValueError as exc:
        raise DataError(f"cannot build an encoder-decoder from {encoder_dir} and {decoder_dir}: "
                        f"{str(exc).splitlines()[0][:200]}") from None
    except (OSError, SafetensorError) as exc:  # missing, truncated or corrupted weights
        raise DataError(f"encoder {encoder_dir} / decoder {decoder_dir}: weights cannot be loaded "
                        f"({str(exc).splitlines()[0][:160]}); the checkpoint may be incomplete or damaged") from None
    check_vocab(model.encoder, tokenizer, tokenizer.name_or_path)
    check_vocab(model.decoder, tokenizer, tokenizer.name_or_path)
    ids = {"decoder_start_token_id": start_token_id(tokenizer), "eos_token_id": end_token_id(tokenizer),
           "pad_token_id": tokenizer.pad_token_id, "bos_token_id": start_token_id(tokenizer)}
    for key, value in ids.items():
        setattr(model.config, key, value)
    model.config.vocab_size = model.config.decoder.vocab_size
    from nlp_ssl.finetune import GenerationOptions

    g = generation or GenerationOptions()
    model.generation_config = GenerationConfig(
        max_new_tokens=g.max_new_tokens, num_beams=g.num_beams, length_penalty=g.length_penalty,
        no_repeat_ngram_size=g.no_repeat_ngram_size, early_stopping=g.early_stopping, **ids,
    )
    return model


class Seq2SeqTask(TokenizedSplits):
    """Engine task over tokenized source/target pairs (``train``, ``eval``, optionally ``test``)."""

    def __init__(self, model, tokenizer, splits: dict, *, source_column: str, target_column: str, metric: str,
                 train_index: np.ndarray | None = None):
        from transformers import DataCollatorForSeq2Seq

        self.model = model
        self.tokenizer = tokenizer
        self.module = Seq2SeqLoss(model)
        self.source_column, self.target_column = source_column, target_column
        self.metric = metric
        """``sacrebleu_chrf`` (translation) or ``rouge`` (summarization)."""
        self.init_splits(splits, ["input_ids", "attention_mask", "labels"], train_index)
        # labels padded with -100; decoder inputs made by the model's own shift of the labels
        self.collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        _, examples = self.examples(split, indices)
        inputs = dict(self.collator(examples))
        targets = int((inputs["labels"] != -100).sum())
        return Batch(inputs, n_targets=targets, n_tokens=int(inputs["attention_mask"].sum()) + targets)

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
        scores["gen_len"] = float(np.mean([len(self.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in hyps]))
        return scores

    def records(self, split: str, outputs: dict) -> list[dict]:
        rows = self.source_rows(split, outputs)
        return [{"source": dig(row, self.source_column), "reference": dig(row, self.target_column), "hypothesis": hyp}
                for row, hyp in zip(rows, self.hypotheses(outputs))]

    def flops_per_token(self) -> float:
        # 6 x the matmul weights (embedding tables excluded, the output projection included)
        embeddings = sum(p.numel() for m in self.model.modules() if isinstance(m, torch.nn.Embedding)
                         for p in m.parameters())
        dec = self.model.config.decoder
        hidden = getattr(dec, "hidden_size", None) or dec.n_embd
        return 6.0 * (count_parameters(self.model) - embeddings + dec.vocab_size * hidden)

    def describe(self) -> dict:
        return {
            "parameters": count_parameters(self.model),
            "train_examples": self.n_train,
            **{f"{name}_examples": len(idx) for name, idx in self.index.items() if name != "train"},
        }
