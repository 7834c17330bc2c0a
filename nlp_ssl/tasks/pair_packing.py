"""Several source/target pairs per row for encoder-decoder training, each pair seeing only itself.

Short pairs padded to the longest of a random batch compute mostly padding (measured in
docs/benchmarks.md). Packed, the same pairs fill a few rows; each keeps its own position ids
(counted from its first token) and its own attention: block-diagonal in the encoder, causal
blocks in the decoder, and cross-attention from each target to its own source only. The loss
and its gradients are the padded batch's to rounding (without dropout; with it, equal in
distribution), so packing changes the cost of a batch, not what it teaches, and not which
pairs it holds.

A packed row is padded too (to the fullest row of the batch): padding is segment 0 and is never
attended by a pair; a padding query attends other padding (or, in cross-attention, any source)
so that no softmax row is empty.
"""

from __future__ import annotations

import numpy as np
import torch

ROBERTA_POSITIONS = ("roberta", "roberta-prelayernorm", "xlm-roberta", "camembert")
"""Embeddings that number positions from ``pad_token_id + 1``."""
PACKABLE_ENCODERS = ("bert", "modernbert", *ROBERTA_POSITIONS)
PACKABLE_DECODERS = ("gpt2", "bert", *ROBERTA_POSITIONS)
MASK_FORMATS = ("sdpa", "eager")
"""Attention implementations that take a ready 4D mask (boolean for SDPA, additive for eager)."""


def _attention(config) -> str:
    return getattr(config, "_attn_implementation", None) or "eager"


def unsupported(model) -> str | None:
    """Why an ``EncoderDecoderModel`` cannot train on packed rows, or None when it can: an
    architecture whose positions or masks are not the ones verified here would silently learn
    across pairs."""
    for half, allowed in (("encoder", PACKABLE_ENCODERS), ("decoder", PACKABLE_DECODERS)):
        config = getattr(model.config, half)
        if config.model_type not in allowed:
            return f"the {half} is a {config.model_type!r} model (packing supports {', '.join(allowed)})"
        if (implementation := _attention(config)) not in MASK_FORMATS:
            return f"the {half} uses {implementation!r} attention (packing supports {', '.join(MASK_FORMATS)})"
    return None


def assign_rows(source_lengths, target_lengths, source_width: int, target_width: int) -> list[list[int]]:
    """Pairs (by index) per row, first fit in decreasing length: no row holds more than
    ``source_width`` source or ``target_width`` target tokens, except a pair longer than that
    alone in its row."""
    rows: list[list[int]] = []
    fill: list[list[int]] = []
    for i in np.argsort(-(np.asarray(source_lengths) + np.asarray(target_lengths)), kind="stable"):
        s, t = int(source_lengths[i]), int(target_lengths[i])
        for r, (fs, ft) in enumerate(fill):
            if fs + s <= source_width and ft + t <= target_width:
                rows[r].append(int(i))
                fill[r] = [fs + s, ft + t]
                break
        else:
            rows.append([int(i)])
            fill.append([s, t])
    return rows


def _segments(rows: list[list[int]], lengths: list[int], multiple: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids (1 + the pair's place in its row; 0 for padding) and positions within each
    pair, one row per packed row, as wide as the fullest (rounded up to ``multiple``)."""
    width = max(sum(lengths[i] for i in row) for row in rows)
    if multiple:
        width = -(-width // multiple) * multiple
    segment = np.zeros((len(rows), width), dtype=np.int64)
    position = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            segment[r, at : at + lengths[i]] = k + 1
            position[r, at : at + lengths[i]] = np.arange(lengths[i])
            at += lengths[i]
    return segment, position


def _fill(rows: list[list[int]], sequences: list[list[int]], width: int, pad: int) -> torch.Tensor:
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for r, row in enumerate(rows):
        ids = [token for i in row for token in sequences[i]]
        out[r, : len(ids)] = ids
    return torch.from_numpy(out)


def for_attention(mask, half) -> torch.Tensor | dict:
    """A packed boolean mask (or dict of them) as ``half`` (the encoder or decoder module)
    takes it: boolean for SDPA; additive for eager attention, in the dtype its weights run in
    (bf16 under DeepSpeed), which is only known on the device."""
    if isinstance(mask, dict):
        return {kind: for_attention(m, half) for kind, m in mask.items()}
    if _attention(half.config) == "sdpa":
        return mask
    dtype = half.get_input_embeddings().weight.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def pack_pairs(
    examples: list[dict],
    model_config,
    *,
    source_width: int,
    target_width: int,
    pad_id: int,
    start_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict:
    """Forward arguments of ``Seq2SeqLoss`` for tokenized pairs (``input_ids``, ``labels``)
    packed into rows of at most ``source_width`` / ``target_width`` tokens; the masks are
    boolean ``[rows, 1, queries, keys]`` (``for_attention`` adapts them to each half)."""
    sources = [list(e["input_ids"]) for e in examples]
    labels = [list(e["labels"]) for e in examples]
    # an empty source or target would leave a pair's queries nothing of its own to attend
    if not examples or min(map(len, sources)) == 0 or min(map(len, labels)) == 0:
        raise ValueError("pack_pairs: needs at least one pair, each with a non-empty source and target")
    # the decoder reads the start token, then every target token but the last
    decoder_inputs = [[start_id, *ids[:-1]] for ids in labels]
    source_lengths, target_lengths = [len(s) for s in sources], [len(t) for t in labels]
    rows = assign_rows(source_lengths, target_lengths, source_width, target_width)
    enc_segment, enc_position = _segments(rows, source_lengths, pad_to_multiple_of)
    dec_segment, dec_position = _segments(rows, target_lengths, pad_to_multiple_of)
    encoder, decoder = model_config.encoder, model_config.decoder
    for position, config in ((enc_position, encoder), (dec_position, decoder)):
        if config.model_type in ROBERTA_POSITIONS:
            position += config.pad_token_id + 1

    enc_seg, dec_seg = torch.from_numpy(enc_segment), torch.from_numpy(dec_segment)
    encoder_self = enc_seg[:, :, None] == enc_seg[:, None, :]
    width = dec_seg.size(1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    decoder_self = (dec_seg[:, :, None] == dec_seg[:, None, :]) & causal
    # a padding query may look anywhere (its output is never used): no empty softmax row
    cross = (dec_seg[:, :, None] == enc_seg[:, None, :]) | (dec_seg == 0)[:, :, None]

    encoder_mask = encoder_self[:, None]
    if encoder.model_type == "modernbert":  # its local layers see only a window around each token
        offset = torch.arange(enc_seg.size(1))
        local = (offset[:, None] - offset[None, :]).abs() <= encoder.sliding_window
        encoder_mask = {"full_attention": encoder_mask, "sliding_attention": (encoder_self & local)[:, None]}
    return {
        "input_ids": _fill(rows, sources, enc_seg.size(1), pad_id),
        "attention_mask": encoder_mask,
        "position_ids": torch.from_numpy(enc_position),
        "decoder_input_ids": _fill(rows, decoder_inputs, width, pad_id),
        "decoder_attention_mask": decoder_self[:, None],
        "decoder_position_ids": torch.from_numpy(dec_position),
        "cross_attention_mask": cross[:, None],
        "labels": _fill(rows, labels, width, -100),
    }
