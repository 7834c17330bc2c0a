"""Accuracy, macro precision/recall/F1 and per-class precision/recall/F1 in one pass.

Shipped with nlp-ssl so that `evaluate.load(<this folder>)` works offline; the Hub's
`accuracy`/`f1` modules compute the same figures (sklearn's definitions, zero_division=0).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, macro-averaged and per-class precision, recall and F1 for single-label classification."
_KWARGS = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): true label ids.
    num_labels (int, optional): number of classes; default: 1 + the largest id seen.
Returns:
    accuracy, precision_macro, recall_macro, f1_macro, and precision_<k>, recall_<k>, f1_<k> per class k.
"""


class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        pred = np.asarray(predictions, dtype=np.int64)
        ref = np.asarray(references, dtype=np.int64)
        k = int(num_labels or (max(pred.max(initial=0), ref.max(initial=0)) + 1))
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (ref, pred), 1)
        tp = np.diag(confusion).astype(float)
        predicted = confusion.sum(axis=0).astype(float)
        actual = confusion.sum(axis=1).astype(float)
        precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
        recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
        out = {
            "accuracy": float(tp.sum() / max(len(ref), 1)),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "f1_macro": float(f1.mean()),
        }
        for c in range(k):
            out[f"precision_{c}"] = float(precision[c])
            out[f"recall_{c}"] = float(recall[c])
            out[f"f1_{c}"] = float(f1[c])
        return out
