"""Shipped evaluate modules load offline and agree with scikit-learn, sacrebleu, rouge_score."""

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from nlp_ssl import metrics
from nlp_ssl.errors import ConfigError


@pytest.mark.parametrize("num_labels", [2, 3, 5])
def test_classification_matches_sklearn(num_labels):
    rng = np.random.default_rng(num_labels)
    refs = rng.integers(0, num_labels, 300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, num_labels, 300))
    if num_labels == 5:
        preds[preds == 4] = 0  # a class never predicted: precision 0, as sklearn with zero_division=0
    got = metrics.load("classification").compute(predictions=preds, references=refs, num_labels=num_labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert got["f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))
    p, r, f, _ = precision_recall_fscore_support(refs, preds, labels=range(num_labels), zero_division=0)
    for c in range(num_labels):
        assert (got[f"precision_{c}"], got[f"recall_{c}"], got[f"f1_{c}"]) == pytest.approx((p[c], r[c], f[c]))
    pm, rm, _, _ = precision_recall_fscore_support(refs, preds, average="macro", zero_division=0)
    assert (got["precision_macro"], got["recall_macro"]) == pytest.approx((pm, rm))


def test_classification_batches_add_up():
    metric = metrics.load("classification")
    metric.add_batch(predictions=[0, 1], references=[0, 0])
    metric.add_batch(predictions=[1], references=[1])
    assert metric.compute()["accuracy"] == pytest.approx(2 / 3)


HYPS = ["the cat sat on the mat", "a dog runs in the park today", "hello there world"]
REFS = [
    ["the cat is on the mat", "there is a cat on the mat"],
    ["a dog is running in the park", "the dog runs in a park"],
    ["hello world", "hi there world"],
]


def test_sacrebleu_and_chrf_match_sacrebleu():
    got = metrics.load("sacrebleu_chrf").compute(predictions=HYPS, references=REFS)
    streams = [list(s) for s in zip(*REFS)]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
    assert 0 < got["bleu"] < 100 and got["bleu_brevity_penalty"] <= 1


def test_rouge_matches_rouge_score():
    got = metrics.load("rouge").compute(predictions=HYPS, references=REFS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = np.mean([scorer.score_multi(r, h)[key].fmeasure for h, r in zip(HYPS, REFS)]) * 100
        assert got[key] == pytest.approx(expected)


def test_unknown_metric_offline_is_a_clear_error():
    with pytest.raises(
        ConfigError,
        match=r"metric 'no_such_metric': not shipped with nlp-ssl \(shipped: classification, rouge, sacrebleu_chrf\)",
    ):
        metrics.load("no_such_metric")
