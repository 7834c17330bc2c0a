"""``objective: mlm``: masked language modeling (BERT-style) over packed blocks.

The encoder is BERT (``BertForMaskedLM``, the default: what ``EncoderDecoderModel``
warm-starts an encoder, or a BERT2BERT decoder, from), RoBERTa with pre-layer-norm, or
ModernBERT (rotary positions, GeGLU; the sentiment recipes' choice, see the README's
ablations); all load with ``AutoModelForMaskedLM``.

The loss runs the output layer only at masked positions (sparse prediction): with 15% masking
the vocabulary projection, the largest matmul of a small model, shrinks about 7x. Masking
itself is ``DataCollatorForLanguageModeling``'s, seeded per block by ``(seed, epoch, block)``
(``BlockTask.example_seed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models import ModelConfig, flops_per_token, load_pretrained, mlm_head_names
from nlp_ssl.objectives import Objective
from nlp_ssl.objectives.base import PretrainConfig
from nlp_ssl.objectives.blocks import BlockTask, word_offsets
from nlp_ssl.objectives.transformer_stage import TransformerPretraining
from nlp_ssl.training.contract import Batch


@dataclass
class MaskingConfig:
    probability: float = 0.15
    """Fraction of tokens selected for prediction."""
    mask_replace_prob: float = 0.8
    """Of the selected: replaced by <mask>."""
    random_replace_prob: float = 0.1
    """Of the selected: replaced by a random token (the rest stay unchanged)."""
    whole_word: bool = False
    """Select whole words (from the tokenizer's word ids, any tokenizer type). The library's
    whole-word masking replaces every selected token by <mask> (no random/unchanged share)."""

    def __post_init__(self):
        if not 0 < self.probability < 1:
            raise ConfigError(f"'probability' must be in (0, 1), got {self.probability}")
        if (
            self.mask_replace_prob < 0
            or self.random_replace_prob < 0
            or self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise ConfigError("'mask_replace_prob' and 'random_replace_prob' must be >= 0 and sum to at most 1")


@dataclass
class MaskedLMPretrainConfig(PretrainConfig):
    """Recipe of ``pretrain`` with ``objective: mlm``."""

    objective: Literal["mlm"]
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Which tokens are masked and predicted."""


def require_mask_token(tokenizer, where) -> None:
    if tokenizer.mask_token_id is None:
        raise DataError(f"tokenizer {where}: has no mask token, which masked-LM pretraining needs")


def build_masked_lm(cfg: ModelConfig, tokenizer):
    """A freshly initialised masked-LM encoder of ``cfg.architecture`` sized by ``cfg``, vocab
    from ``tokenizer``."""
    from transformers import BertConfig, BertForMaskedLM

    layers, hidden, heads, inter = cfg.resolved()
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    require_mask_token(tokenizer, tokenizer.name_or_path)
    shape = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, **ids
    )
    encoder = dict(
        intermediate_size=inter, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, **shape
    )
    if cfg.architecture == "modernbert":
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        # GeGLU has three matrices where BERT's MLP has two: 2/3 of the width keeps the size
        glu = max(64, round(inter * 2 / 3 / 64) * 64)
        config = ModernBertConfig(
            intermediate_size=glu,
            max_position_embeddings=cfg.max_positions,
            # blocks are short: every layer attends globally (ModernBERT's local layers
            # only pay off at thousands of tokens)
            layer_types=["full_attention"] * layers,
            attention_dropout=cfg.dropout,
            mlp_dropout=cfg.dropout,
            embedding_dropout=cfg.dropout,
            classifier_pooling="mean",
            cls_token_id=tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
            **shape,
        )
        return ModernBertForMaskedLM(config)
    if cfg.architecture == "roberta-prelayernorm":
        from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM

        # RoBERTa numbers positions from pad_token_id + 1
        config = RobertaPreLayerNormConfig(
            max_position_embeddings=cfg.max_positions + tokenizer.pad_token_id + 1, type_vocab_size=1, **encoder
        )
        return RobertaPreLayerNormForMaskedLM(config)
    config = BertConfig(max_position_embeddings=cfg.max_positions, type_vocab_size=2, **encoder)
    return BertForMaskedLM(config)


def load_masked_lm(model_dir: str, dropout: float | None = None, key: str = "init"):
    """A saved encoder with its MLM head (a fresh one when the folder has none), to continue
    masked-LM pretraining."""
    from transformers import AutoModelForMaskedLM

    model = load_pretrained(
        model_dir, AutoModelForMaskedLM, "masked-LM (an encoder such as BERT/RoBERTa)", dropout, key
    )
    if mlm_head_names(model) is None:
        raise DataError(
            f"{key}: {model_dir}: {type(model).__name__} has no BERT/RoBERTa/ModernBERT-style MLM head "
            "(cls, lm_head, or head + decoder), which the sparse masked-LM loss uses"
        )
    return model


class MaskedLMLoss(torch.nn.Module):
    """Sum of cross-entropies at masked positions; the head sees only those positions."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        # the whole MLM head (transform + decoder), by name, not a second reference, so the
        # head's weights are registered once
        self.head_names = mlm_head_names(model)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(input_ids=input_ids).last_hidden_state
        selected = labels != -100
        out = hidden[selected]
        for name in self.head_names:
            out = getattr(self.model, name)(out)
        logits = out
        return F.cross_entropy(logits.float(), labels[selected], reduction="sum")


class MaskedLMTask(BlockTask):
    """Blocks masked per ``masking``; the loss is ``MaskedLMLoss``'s."""

    def __init__(self, model, tokenizer, *args, masking: MaskingConfig, **kwargs):
        from transformers import DataCollatorForLanguageModeling

        super().__init__(model, tokenizer, *args, **kwargs)
        self.module = MaskedLMLoss(model)
        self.collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=masking.probability,
            mask_replace_prob=masking.mask_replace_prob,
            random_replace_prob=masking.random_replace_prob,
            whole_word_mask=masking.whole_word,
        )
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.mask_probability = masking.probability

    def _batch(
        self, blocks: np.ndarray, example_ids: np.ndarray, epoch: int, split: str, words: np.ndarray | None = None
    ) -> Batch:
        ids = torch.from_numpy(blocks)
        inputs, labels = self.mask(ids, example_ids, epoch, split, words)
        return Batch({"input_ids": inputs, "labels": labels}, int((labels != -100).sum()), ids.numel())

    def mask(self, ids: torch.Tensor, indices, epoch: int, split: str, words: np.ndarray | None = None):
        special = torch.isin(ids, self.special_ids)
        inputs, labels = torch.empty_like(ids), torch.empty_like(ids)
        offsets = None if words is None else word_offsets(words)
        for row, index in enumerate(indices):
            self.collator.generator = torch.Generator().manual_seed(self.example_seed(index, epoch, split))
            inputs[row : row + 1], labels[row : row + 1] = self.collator.torch_mask_tokens(
                ids[row : row + 1].clone(),
                special[row : row + 1],
                offset_mapping=None if offsets is None else offsets[row : row + 1],
            )
        return inputs, labels

    def flops_per_token(self) -> float:
        # the vocabulary projection runs on masked positions only
        return flops_per_token(self.model, self.block_size) - self.head_flops() * (1 - self.mask_probability)

    def head_flops(self) -> float:
        """Training FLOPs of the vocabulary projection for one position."""
        return 6 * self.model.config.vocab_size * self.model.config.hidden_size


def _usage(where: str) -> str:
    return (
        f"from transformers import AutoModelForMaskedLM, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
        f'model = AutoModelForMaskedLM.from_pretrained("{where}")'
        "  # or fine-tune it: AutoModelForSequenceClassification"
    )


OBJECTIVE = Objective(
    name="mlm",
    config=MaskedLMPretrainConfig,
    title="Masked language modeling",
    pipeline_tag="fill-mask",
    what="masked-language-model (BERT-style)",
    usage=_usage,
    stage=TransformerPretraining,
    card_sections=("masking",),
    training="masked-LM",
    build=lambda recipe, tokenizer: build_masked_lm(recipe.model, tokenizer),
    load=lambda model_dir, recipe: load_masked_lm(model_dir, recipe.model.dropout),
    check_tokenizer=require_mask_token,
    make_task=lambda model, tokenizer, recipe, **blocks: MaskedLMTask(
        model, tokenizer, masking=recipe.masking, **blocks
    ),
    word_starts=lambda recipe: recipe.masking.whole_word,
)
