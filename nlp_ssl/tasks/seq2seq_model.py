"""The encoder-decoder of translation and summarization: an ``EncoderDecoderModel``
warm-started from our checkpoints (Rothe et al. 2020: BERT encoder + GPT-2 or BERT decoder with
cross-attention added) or built with the same shapes from scratch, the special-token ids that
generation and the label shift need, and its loss over padded or packed (``pair_packing``) rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nlp_ssl.errors import DataError
from nlp_ssl.tasks import pair_packing
from nlp_ssl.tasks.seq2seq_recipe import GenerationOptions


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
