"""ROUGE-1/2/L/Lsum F-measures from the rouge_score package, averaged over examples.

Shipped with nlp-ssl for offline `evaluate.load`. With several references per example the
best-matching one counts (rouge_score's `score_multi`). ROUGE-Lsum splits summaries on
newlines: put one sentence per line for it to differ from ROUGE-L.
"""

import datasets
import evaluate
import numpy as np
from rouge_score import rouge_scorer

_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
_KWARGS = """
Args:
    predictions (list of str): generated summaries.
    references (list of list of str): one or more references per prediction.
    use_stemmer (bool): Porter-stem words before matching (default True).
Returns:
    rouge1, rouge2, rougeL, rougeLsum: mean F-measure x 100.
"""


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L/Lsum F-measures (Lin 2004), as computed by the rouge_score package.",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(_TYPES, use_stemmer=use_stemmer)
        totals = {t: [] for t in _TYPES}
        for prediction, refs in zip(predictions, references):
            scores = scorer.score_multi(list(refs), prediction)
            for t in _TYPES:
                totals[t].append(scores[t].fmeasure)
        return {t: float(np.mean(v) * 100) if v else 0.0 for t, v in totals.items()}
