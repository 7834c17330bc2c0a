"""``objective: clm``: next-token language modeling (GPT-style) over packed blocks.

The model is a GPT-2 decoder (``GPT2LMHeadModel``, pre-layer-norm), which loads with
``AutoModelForCausalLM`` and which an encoder-decoder takes as its decoder with
cross-attention added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.models import ModelConfig, flops_per_token, load_pretrained
from nlp_ssl.objectives import Objective
from nlp_ssl.objectives.base import PretrainConfig
from nlp_ssl.objectives.blocks import BlockTask
from nlp_ssl.objectives.transformer_stage import TransformerPretraining
from nlp_ssl.training.contract import Batch


@dataclass
class CausalLMPretrainConfig(PretrainConfig):
    """Recipe of ``pretrain`` with ``objective: clm``."""

    objective: Literal["clm"]


def build_causal_lm(cfg: ModelConfig, tokenizer):
    """A freshly initialised GPT-2 sized by ``cfg`` (``cfg.architecture`` names encoders only),
    vocab from ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    layers, hidden, heads, inter = cfg.resolved()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_inner=inter,
        n_positions=cfg.max_positions,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config)


def load_causal_lm(model_dir: str, dropout: float | None = None, key: str = "init"):
    """A saved decoder with its LM head, to continue next-token pretraining."""
    from transformers import AutoModelForCausalLM

    return load_pretrained(model_dir, AutoModelForCausalLM, "next-token LM (a decoder such as GPT-2)", dropout, key)


class CausalLMLoss(torch.nn.Module):
    """Sum of next-token cross-entropies over every position but the last of each block."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # drop the last position before the vocabulary projection rather than slicing the
        # (much larger) logits afterwards, which would copy them
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(input_ids=input_ids).last_hidden_state[:, :-1]
        logits = self.model.get_output_embeddings()(hidden.reshape(-1, hidden.size(-1)))
        return F.cross_entropy(logits.float(), input_ids[:, 1:].reshape(-1), reduction="sum")


class CausalLMTask(BlockTask):
    """Blocks as they are: every position but the last predicts the next."""

    def __init__(self, model, tokenizer, *args, **kwargs):
        super().__init__(model, tokenizer, *args, **kwargs)
        self.module = CausalLMLoss(model)

    def _batch(
        self, blocks: np.ndarray, example_ids: np.ndarray, epoch: int, split: str, words: np.ndarray | None = None
    ) -> Batch:
        ids = torch.from_numpy(blocks)
        return Batch({"input_ids": ids}, n_targets=ids.size(0) * (ids.size(1) - 1), n_tokens=ids.numel())

    def flops_per_token(self) -> float:
        return flops_per_token(self.model, self.block_size)


def _usage(where: str) -> str:
    return (
        f'from transformers import pipeline\n\ngenerate = pipeline("text-generation", model="{where}")\n'
        'generate("The movie was", max_new_tokens=20)'
    )


OBJECTIVE = Objective(
    name="clm",
    config=CausalLMPretrainConfig,
    title="Causal language modeling",
    pipeline_tag="text-generation",
    what="next-token language model (GPT-style)",
    usage=_usage,
    stage=TransformerPretraining,
    training="next-token LM",
    build=lambda recipe, tokenizer: build_causal_lm(recipe.model, tokenizer),
    load=lambda model_dir, recipe: load_causal_lm(model_dir, recipe.model.dropout),
    make_task=lambda model, tokenizer, recipe, **blocks: CausalLMTask(model, tokenizer, **blocks),
)
