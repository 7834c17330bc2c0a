"""Screen for issue 20, item 3: does a masked-LM's own output layer know sentiment, so that
prompt-style classification (label words scored at the mask of a template) could beat a fresh
head? Read from one forward pass per sentence, no training of the transformer:

- ``zero-shot``: TEMPLATE with the sentence in it; the larger log-probability at the mask of
  the positive or the negative label word wins (no labels at all);
- ``calibrated``: the same after subtracting each word's mean over the training sentences
  (contextual calibration), which removes the model's prior for one word;
- ``words``: logistic regression on the log-probabilities of a bank of sentiment words at the
  mask (the template as a feature extractor), at each label count;
- ``pooled``: logistic regression on the mean-pooled last hidden states of the plain sentence
  (what ``nlp-ssl baseline`` with ``method: frozen_logreg`` reads), the reference;
- ``both``: the two feature sets side by side.

``C`` is picked on the validation split from the stage's grid; samples are the stage's seeded,
class-balanced ones. Prints one JSON document.

    python benchmarks/ablations/prompt_screen.py runs/study-embeddings-32k/pretrain-mlm_sg
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from rt_screen import DATA  # first: it puts the repository on the import path

from nlp_ssl.baselines import C_GRID, unit_norm_scaler
from nlp_ssl.data import DatasetSpec, load_split
from nlp_ssl.tasks.classification import balanced_subsample

POSITIVE = [
    "great",
    "good",
    "wonderful",
    "excellent",
    "brilliant",
    "fun",
    "funny",
    "beautiful",
    "perfect",
    "enjoyable",
    "moving",
    "charming",
    "masterpiece",
    "best",
]
NEGATIVE = [
    "terrible",
    "bad",
    "awful",
    "boring",
    "dull",
    "stupid",
    "poor",
    "weak",
    "mediocre",
    "horrible",
    "disappointing",
    "tedious",
    "flat",
    "mess",
    "worst",
    "fails",
]


def mask_scores(model, padded, mask_id: int, words: list[int]):
    """Log-probabilities of ``words`` at each row's mask."""
    import torch

    at = padded["input_ids"] == mask_id
    if getattr(model.config, "sparse_prediction", None) is not None:
        # ModernBERT projects only the labelled positions onto the vocabulary (the masks'),
        # instead of 64 x 32k logits per sentence
        model.config.sparse_prediction = model.sparse_prediction = True
        logits = model(**padded, labels=torch.where(at, padded["input_ids"], -100)).logits
    else:
        logits = model(**padded).logits[at]
    return logits.float().log_softmax(-1)[:, words].numpy()


def mean_pooled(model, padded):
    """The encoder's last hidden states averaged over each row's tokens (no vocabulary
    projection: the base model alone)."""
    mask = padded["attention_mask"].unsqueeze(-1).float()
    hidden = model.base_model(**padded).last_hidden_state.float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def encode(texts: list[str], model, tokenizer, template: str, words: list[int], max_length: int, batch: int):
    """Log-probabilities of ``words`` at the template's mask, and the mean-pooled last hidden
    state of the plain sentence, per text."""
    import torch

    prefix, _, suffix = template.partition("{text}")
    before = tokenizer(prefix, add_special_tokens=False).input_ids if prefix else []
    after = tokenizer(suffix.replace("<mask>", tokenizer.mask_token), add_special_tokens=False).input_ids
    room = max_length - len(before) - len(after) - 2

    def padded(rows: list[list[int]]):
        return tokenizer.pad(
            {"input_ids": [[tokenizer.cls_token_id, *r, tokenizer.sep_token_id] for r in rows]}, return_tensors="pt"
        )

    scores, pooled = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts[start : start + batch]]
            prompted = padded([before + x[:room] + after for x in ids])
            scores.append(mask_scores(model, prompted, tokenizer.mask_token_id, words))
            pooled.append(mean_pooled(model, padded([x[: max_length - 2] for x in ids])))
    return np.concatenate(scores), np.concatenate(pooled)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from nlp_ssl.models import resolve_model_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a masked-LM run (or its model/ folder)")
    parser.add_argument("--template", default="{text} It was <mask>.")
    parser.add_argument("--pair", nargs=2, default=["great", "terrible"], metavar=("POSITIVE", "NEGATIVE"))
    parser.add_argument("--counts", nargs="+", default=["50", "200", "1000", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    model_dir = resolve_model_dir(args.run)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    bank = [w for w in POSITIVE + NEGATIVE if len(tokenizer(" " + w, add_special_tokens=False).input_ids) == 1]
    word_ids = [tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in bank]
    pair = [bank.index(w) for w in args.pair]

    splits = {
        k: load_split(DatasetSpec(**DATA[name]))
        for k, name in (("train", "train"), ("eval", "validation"), ("test", "test"))
    }
    y = {k: np.asarray(s["label"]) for k, s in splits.items()}
    feats = {
        k: encode(list(s["text"]), model, tokenizer, args.template, word_ids, DATA["max_length"], args.batch)
        for k, s in splits.items()
    }

    def zero_shot(shift: np.ndarray) -> float:
        s = feats["test"][0][:, pair] - shift
        return float(np.mean((s[:, 0] > s[:, 1]).astype(int) == y["test"]))

    result = {
        "run": str(args.run),
        "template": args.template,
        "pair": args.pair,
        "words": bank,
        "zero_shot": zero_shot(np.zeros(2)),
        "calibrated": zero_shot(feats["train"][0][:, pair].mean(0)),
        "by_count": {},
    }
    for n in args.counts:
        rows: dict = {"words": [], "pooled": [], "both": []}
        for seed in args.seeds if n != "all" else args.seeds[:1]:
            index = np.arange(len(y["train"])) if n == "all" else balanced_subsample(y["train"], int(n), seed)
            scaled = []  # each block scaled on this training sample, once
            for p in (0, 1):
                scaler = unit_norm_scaler(feats["train"][p][index])
                scaled.append({k: scaler.transform(feats[k][p][index] if k == "train" else feats[k][p]) for k in feats})
            for kind, parts in (("words", [0]), ("pooled", [1]), ("both", [0, 1])):
                x = {k: np.hstack([scaled[p][k] for p in parts]) for k in feats}
                best = max(
                    (
                        LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x["train"], y["train"][index])
                        for c in C_GRID
                    ),
                    key=lambda m: m.score(x["eval"], y["eval"]),
                )
                rows[kind].append(best.score(x["test"], y["test"]))
        result["by_count"][n] = {
            k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None, "values": v}
            for k, v in rows.items()
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
