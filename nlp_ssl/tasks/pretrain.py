"""Self-supervised objectives on packed blocks: masked-LM (``mlm``) and next-token LM (``clm``).

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
        if objective == "mlm":
            from transformers import DataCollatorForLanguageModeling

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

    def mask(self, ids: torch.Tensor, indices, epoch: int, split: str, words: np.ndarray | None = None):
        special = torch.isin(ids, self.special_ids)
        inputs, labels = torch.empty_like(ids), torch.empty_like(ids)
        offsets = None if words is None else word_offsets(words)
        stream = 0 if split == "train" else 1
        for row, index in enumerate(indices):
            self.collator.generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, stream, epoch, int(index)]).generate_state(1)[0])
            )
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
        head = 6 * self.model.config.vocab_size * self.model.config.hidden_size
        return dense - head * (1 - self.mask_probability)

    def describe(self) -> dict:
        return {
            "parameters": count_parameters(self.model),
            "train_blocks": self.n_train if self.n_train is not None else "streaming",
            "eval_blocks": int(len(self._eval)),
            "block_size": self.block_size,
        }
