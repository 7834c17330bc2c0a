"""Self-supervised objectives on packed blocks: masked-LM (``mlm``), next-token LM (``clm``) and
ELECTRA-style replaced-token detection (``rtd``).

What this task adds to the engine: the loss modules and the batch builder. The masked-LM
loss runs the output layer only at masked positions (sparse prediction): with 15% masking
the vocabulary projection, the largest matmul of a small model, shrinks about 7x. Masking
itself is ``DataCollatorForLanguageModeling``'s, seeded per example by
``(seed, epoch, block)`` so that a batch is the same whether it is built on one process or
split over several, and after a resume.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.engine import Batch
from nlp_ssl.models import count_parameters, flops_per_token, mlm_head_names


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
        self.rtd_head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
        self.disc_scale = disc_weight * mask_probability

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, sample_seeds: torch.Tensor,
                parts: bool = False):
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


def word_offsets(word_starts: np.ndarray) -> np.ndarray:
    """Character offsets that encode word boundaries the way ``DataCollatorForLanguageModeling``
    reads them (a gap before a token starts a new word).

    Packed blocks keep no text, so the offsets are synthetic: consecutive positions within a
    word, one position skipped before each word start. The word starts themselves come from
    the tokenizer's ``word_ids()``, so this works for byte-level BPE and Unigram as well as
    WordPiece, whose real offsets would glue a BPE word to the space before it.
    """
    starts = np.asarray(word_starts, dtype=np.int64)
    pos = np.arange(starts.shape[1])[None, :] + np.cumsum(starts, axis=1)
    return np.stack([pos, pos + 1], axis=-1)


class PretrainTask:
    """Engine task over memory-mapped packed blocks."""

    def __init__(self, objective: str, model, tokenizer, train_blocks: np.ndarray | None,
                 train_index: np.ndarray | None, eval_blocks: np.ndarray, eval_index: np.ndarray, *, seed: int,
                 masking=None, stream=None, train_words: np.ndarray | None = None,
                 eval_words: np.ndarray | None = None):
        self.objective = objective
        self.model = model
        self.tokenizer = tokenizer
        # index arrays select rows of the (memory-mapped) block arrays without copying them
        self.blocks = {"eval": (eval_blocks, np.asarray(eval_index))}
        self.words = {"train": train_words, "eval": eval_words}
        """Word-start flags per block, for whole-word masking (None otherwise)."""
        self.stream = stream
        """A ``PackedStream`` when the training data streams; then ``n_train`` is None."""
        if stream is None:
            self.blocks["train"] = (train_blocks, np.asarray(train_index))
        self.seed = seed
        self.n_train = None if stream is not None else len(train_index)
        self.block_size = eval_blocks.shape[1]
        self._eval = np.arange(len(eval_index))
        if objective in ("mlm", "rtd"):
            from transformers import DataCollatorForLanguageModeling

            self.module = MaskedLMLoss(model)  # rtd replaces it (ReplacedTokenDetectionTask)
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
        else:
            self.module = CausalLMLoss(model)

    def eval_indices(self, split: str = "eval") -> np.ndarray:
        return self._eval

    def make_batch(self, indices: np.ndarray, epoch: int, split: str) -> Batch:
        blocks, index = self.blocks[split]
        rows = index[np.asarray(indices)]
        words = self.words[split]
        words = None if words is None else np.asarray(words[rows])
        return self._batch(np.asarray(blocks[rows], dtype=np.int64), rows, epoch, split, words)

    def next_batch(self, size: int) -> Batch:
        """Streaming: the next ``size`` blocks of this process's share of the stream."""
        blocks, numbers, words = self.stream.next_blocks(size)
        return self._batch(blocks, numbers, self.stream.epoch, "train", words)

    def _batch(self, blocks: np.ndarray, example_ids: np.ndarray, epoch: int, split: str,
               words: np.ndarray | None = None) -> Batch:
        ids = torch.from_numpy(blocks)
        n_tokens = ids.numel()
        if self.objective == "clm":
            return Batch({"input_ids": ids}, n_targets=ids.size(0) * (ids.size(1) - 1), n_tokens=n_tokens)
        inputs, labels = self.mask(ids, example_ids, epoch, split, words)
        return Batch({"input_ids": inputs, "labels": labels}, int((labels != -100).sum()), n_tokens)

    def example_seed(self, index: int, epoch: int, split: str, *purpose: int) -> int:
        """A seed of its own for each (run seed, split, epoch, block[, purpose]): what a block
        gets does not depend on the batch or process it lands in."""
        stream = 0 if split == "train" else 1
        return int(np.random.SeedSequence([self.seed, stream, epoch, int(index), *purpose]).generate_state(1)[0])

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
        dense = flops_per_token(self.model, self.block_size)
        if self.objective == "clm":
            return dense
        # the vocabulary projection runs on masked positions only
        return dense - self.head_flops() * (1 - self.mask_probability)

    def head_flops(self) -> float:
        """Training FLOPs of the vocabulary projection for one position."""
        return 6 * self.model.config.vocab_size * self.model.config.hidden_size

    def describe(self) -> dict:
        return {
            "parameters": count_parameters(self.model),
            "train_blocks": self.n_train if self.n_train is not None else "streaming",
            "eval_blocks": int(len(self._eval)),
            "block_size": self.block_size,
        }


class ReplacedTokenDetectionTask(PretrainTask):
    """``rtd``: evaluation also reports the generator's masked-LM loss (comparable with an
    ``mlm`` run's eval loss) and the discriminator's accuracy and recall of replaced tokens."""

    def __init__(self, model, tokenizer, *args, generator, disc_weight: float = 50.0, **kwargs):
        super().__init__("rtd", model, tokenizer, *args, **kwargs)
        self.module = ReplacedTokenDetectionLoss(model, generator, disc_weight, self.mask_probability)

    def _batch(self, blocks, example_ids, epoch: int, split: str, words=None) -> Batch:
        batch = super()._batch(blocks, example_ids, epoch, split, words)
        batch.inputs["sample_seeds"] = torch.tensor([self.example_seed(i, epoch, split, 1) for i in example_ids])
        return batch

    def eval_step(self, module, inputs: dict):
        return module(**inputs, parts=True)

    def flops_per_token(self) -> float:
        # the discriminator body (no vocabulary projection) and its per-token head, plus the
        # generator with its sparse head
        hidden = self.model.config.hidden_size
        return (flops_per_token(self.model, self.block_size) - self.head_flops() + 6 * (hidden * hidden + hidden)
                + flops_per_token(self.module.generator, self.block_size)
                - self.head_flops() * (1 - self.mask_probability))

    def describe(self) -> dict:
        # the generator shares the word embeddings: count them once
        return {"generator_parameters": count_parameters(self.module) - count_parameters(self.model),
                **super().describe()}

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
