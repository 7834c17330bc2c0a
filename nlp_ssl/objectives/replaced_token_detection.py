"""``objective: rtd``: ELECTRA-style replaced-token detection over packed blocks.

A small generator (a masked LM) fills the masked positions, and the encoder being pretrained
learns to tell replaced tokens from originals at every position. The run saves the encoder
body, which loads with ``AutoModel`` / ``AutoModelForSequenceClassification``: it is for
fine-tuning, not for filling masks. Masking is the masked-LM objective's (``masking``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, count_parameters, flops_per_token, mlm_head_names
from nlp_ssl.objectives import Objective
from nlp_ssl.objectives.base import PretrainConfig
from nlp_ssl.objectives.masked_lm import MaskedLMTask, MaskingConfig, build_masked_lm
from nlp_ssl.objectives.transformer_stage import TransformerPretraining
from nlp_ssl.training.contract import Batch


@dataclass
class ReplacedTokenDetectionConfig:
    """``objective: rtd`` (ELECTRA): a small generator fills the masked positions, the encoder
    learns to tell replaced tokens from originals at every position."""

    generator_layers: int = 1
    """Layers of the generator (same width as the encoder, word embeddings shared). ELECTRA
    found generators 1/4 to 1/2 the discriminator's size best: too strong a generator makes
    the task too hard for a small discriminator."""
    disc_weight: float = 50.0
    """Weight of the discriminator's per-token loss against the generator's masked-LM loss
    (ELECTRA's lambda)."""

    def __post_init__(self):
        if self.generator_layers < 1:
            raise ConfigError(f"'generator_layers' must be >= 1, got {self.generator_layers}")
        if self.disc_weight <= 0:
            raise ConfigError(f"'disc_weight' must be positive, got {self.disc_weight}")


@dataclass
class ReplacedTokenDetectionPretrainConfig(PretrainConfig):
    """Recipe of ``pretrain`` with ``objective: rtd``."""

    objective: Literal["rtd"]
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Which tokens the generator fills."""
    rtd: ReplacedTokenDetectionConfig = field(default_factory=ReplacedTokenDetectionConfig)

    def check_objective(self) -> None:
        if self.init is not None:
            raise ConfigError(
                "'init' continues mlm or clm pretraining; 'rtd' trains its encoder and generator from scratch"
            )
        if self.rtd.generator_layers > self.model.resolved()[0]:
            raise ConfigError(
                f"'rtd.generator_layers' ({self.rtd.generator_layers}) exceeds the encoder's "
                f"{self.model.resolved()[0]} layers"
            )


def build_discriminator(cfg: ModelConfig, tokenizer):
    """The encoder being pretrained: a fresh masked-LM encoder's body (its per-token head lives
    in the loss module, and is not saved)."""
    full = build_masked_lm(cfg, tokenizer)
    return getattr(full, full.base_model_prefix)


def build_generator(cfg: ModelConfig, layers: int, discriminator, tokenizer):
    """ELECTRA's generator: the discriminator's architecture with ``layers`` layers, a masked-LM
    head, and the discriminator's word embeddings (shared, and tied to the head's decoder)."""
    generator = build_masked_lm(replace(cfg, layers=layers), tokenizer)
    shared = discriminator.get_input_embeddings()
    generator.set_input_embeddings(shared)
    generator.get_output_embeddings().weight = shared.weight
    return generator


class ReplacedTokenDetectionLoss(torch.nn.Module):
    """ELECTRA's objective (Clark et al., 2020): a small generator fills the masked positions
    with plausible tokens, and the encoder being pretrained (the *discriminator*) tells, at
    every position, whether a token is the original or a replacement.

    Every position carries a training signal, not only the 15% that masked-LM predicts, which
    is what made ELECTRA-Small beat BERT-Small at equal compute. The generator is the same
    architecture with fewer layers, sharing the discriminator's word embeddings (so the
    embeddings learn from the generator's masked-LM loss too); its sampled tokens are not
    differentiated through. ``model`` is the discriminator's encoder body, what the run saves:
    it loads with ``AutoModel`` / ``AutoModelForSequenceClassification``.

    The loss is a sum over masked positions, as the engine normalises by their count:
    generator cross-entropy + ``disc_weight`` x the discriminator's per-token BCE, the latter
    rescaled by the masking rate so that it weighs as a mean over all tokens would.
    """

    def __init__(self, model, generator, disc_weight: float, mask_probability: float):
        super().__init__()
        self.model = model
        self.generator = generator
        self.generator_head_names = mlm_head_names(generator)
        hidden = model.config.hidden_size
        # ELECTRA's discriminator head: dense + GELU, then one logit per token
        self.rtd_head = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
        )
        self.disc_scale = disc_weight * mask_probability

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, sample_seeds: torch.Tensor, parts: bool = False):
        selected = labels != -100
        gen_base = getattr(self.generator, self.generator.base_model_prefix)
        out = gen_base(input_ids=input_ids).last_hidden_state[selected]
        for name in self.generator_head_names:
            out = getattr(self.generator, name)(out)
        gen_logits = out.float()
        targets = labels[selected]
        gen_ce = F.cross_entropy(gen_logits, targets, reduction="none")

        sampled = sample_rows(gen_logits.detach(), selected.sum(dim=1), sample_seeds)
        corrupted = input_ids.clone()
        corrupted[selected] = sampled
        original = torch.where(selected, labels, input_ids)
        replaced = (corrupted != original).float()

        hidden = self.model(input_ids=corrupted).last_hidden_state
        disc_logits = self.rtd_head(hidden).squeeze(-1).float()
        disc_bce = F.binary_cross_entropy_with_logits(disc_logits, replaced, reduction="none")
        loss = gen_ce.sum() + self.disc_scale * disc_bce.sum()
        if not parts:
            return loss
        # per block, for evaluation: the generator's masked-LM loss (comparable with an mlm run's)
        # and how well the discriminator separates replaced tokens from originals
        rows = selected.nonzero()[:, 0]
        predicted, truth = disc_logits.detach() > 0, replaced.bool()
        return loss, {
            "generator_loss_sum": torch.zeros(len(input_ids), device=loss.device).index_add_(0, rows, gen_ce.detach()),
            "masked": selected.sum(dim=1),
            "discriminator_loss_sum": disc_bce.detach().sum(dim=1),
            "correct": (predicted == truth).sum(dim=1),
            "replaced": truth.sum(dim=1),
            "replaced_found": (predicted & truth).sum(dim=1),
            "tokens": torch.full((len(input_ids),), input_ids.size(1), device=loss.device),
        }


def sample_rows(logits: torch.Tensor, per_row: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """One token per masked position, drawn from the generator's softmax with a generator
    seeded per block: the draw does not depend on how blocks are batched or split over
    processes, nor on the global RNG (so a resumed run draws the same tokens)."""
    probs = torch.softmax(logits, dim=-1)
    draws = []
    for rows, seed in zip(torch.split(probs, per_row.tolist()), seeds.tolist()):
        if rows.size(0) == 0:
            continue
        rng = torch.Generator(device=rows.device).manual_seed(int(seed))
        draws.append(torch.multinomial(rows, 1, generator=rng).squeeze(1))
    return torch.cat(draws) if draws else logits.new_empty(0, dtype=torch.long)


class ReplacedTokenDetectionTask(MaskedLMTask):
    """Masked blocks as for masked-LM, plus a sampling seed per block; evaluation also reports
    the generator's masked-LM loss (comparable with an ``mlm`` run's eval loss) and the
    discriminator's accuracy and recall of replaced tokens."""

    def __init__(self, model, tokenizer, *args, generator, disc_weight: float = 50.0, **kwargs):
        super().__init__(model, tokenizer, *args, **kwargs)
        # the masking is the masked-LM task's; the loss module is ELECTRA's
        self.module = ReplacedTokenDetectionLoss(model, generator, disc_weight, self.mask_probability)

    def _batch(self, blocks, example_ids, epoch: int, split: str, words=None) -> Batch:
        batch = super()._batch(blocks, example_ids, epoch, split, words)
        batch.inputs["sample_seeds"] = torch.tensor([self.example_seed(i, epoch, split, 1) for i in example_ids])
        return batch

    def eval_step(self, module, inputs: dict):
        loss, parts = module(**inputs, parts=True)
        if self.rows > 1:  # a block read as short rows: its rows' sums are the block's
            parts = {k: v.reshape(-1, self.rows).sum(1) for k, v in parts.items()}
        return loss, parts

    def flops_per_token(self) -> float:
        # the discriminator body (no vocabulary projection) and its per-token head, plus the
        # generator with its sparse head
        hidden = self.model.config.hidden_size
        return (
            flops_per_token(self.model, self.block_size)
            - self.head_flops()
            + 6 * (hidden * hidden + hidden)
            + flops_per_token(self.module.generator, self.block_size)
            - self.head_flops() * (1 - self.mask_probability)
        )

    def describe(self) -> dict:
        # the generator shares the word embeddings: count them once
        return {
            "generator_parameters": count_parameters(self.module) - count_parameters(self.model),
            **super().describe(),
        }

    def compute_metrics(self, out: dict, split: str) -> dict:
        if not out:
            return {}
        total = {k: float(np.sum(v)) for k, v in out.items() if k != "index"}
        return {
            "generator_loss": total["generator_loss_sum"] / max(total["masked"], 1),
            "discriminator_loss": total["discriminator_loss_sum"] / max(total["tokens"], 1),
            "discriminator_accuracy": total["correct"] / max(total["tokens"], 1),
            "replaced_fraction": total["replaced"] / max(total["tokens"], 1),
            "replaced_recall": total["replaced_found"] / max(total["replaced"], 1),
        }


def make_task(model, tokenizer, recipe: ReplacedTokenDetectionPretrainConfig, **blocks) -> ReplacedTokenDetectionTask:
    """The task with its generator, built after the encoder (and so from the RNG state the
    encoder's initialisation left)."""
    generator = build_generator(recipe.model, recipe.rtd.generator_layers, model, tokenizer)
    return ReplacedTokenDetectionTask(
        model, tokenizer, masking=recipe.masking, generator=generator, disc_weight=recipe.rtd.disc_weight, **blocks
    )


def _usage(where: str) -> str:
    return (
        f"from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
        f"# the encoder body: fine-tune it with a new head (or AutoModel for its hidden states)\n"
        f'model = AutoModelForSequenceClassification.from_pretrained("{where}", num_labels=2)'
    )


OBJECTIVE = Objective(
    name="rtd",
    config=ReplacedTokenDetectionPretrainConfig,
    title="Replaced token detection",
    pipeline_tag="feature-extraction",
    what="encoder pretrained by replaced-token detection (ELECTRA-style discriminator)",
    usage=_usage,
    stage=TransformerPretraining,
    card_sections=("masking", "rtd"),
    training="replaced-token detection (generator masked-LM + per-token discriminator)",
    build=lambda recipe, tokenizer: build_discriminator(recipe.model, tokenizer),
    load=None,  # the config refuses init: ELECTRA's generator and encoder train together from scratch
    make_task=make_task,
    word_starts=lambda recipe: recipe.masking.whole_word,
    # the generator's masked-LM loss is the one in nats per token
    lm_loss_key="eval_generator_loss",
)
