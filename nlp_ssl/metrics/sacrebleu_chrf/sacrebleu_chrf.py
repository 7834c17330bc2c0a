"""Corpus sacreBLEU and chrF (sacrebleu's defaults), shipped for offline `evaluate.load`."""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "Corpus-level sacreBLEU (13a tokenisation) and chrF, as computed by the sacrebleu package."
_KWARGS = """
Args:
    predictions (list of str): hypotheses.
    references (list of list of str): one or more references per hypothesis (all the same count).
    lowercase (bool): case-insensitive BLEU.
Returns:
    bleu, chrf, bleu_brevity_penalty, bleu_precision_<n> (n = 1..4), sys_len, ref_len.
"""


class SacrebleuChrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, lowercase=False):
        counts = {len(r) for r in references}
        if len(counts) != 1:
            raise ValueError("every prediction needs the same number of references")
        streams = [list(refs) for refs in zip(*references)]  # sacrebleu wants one list per reference set
        bleu = sacrebleu.corpus_bleu(predictions, streams, lowercase=lowercase)
        chrf = sacrebleu.corpus_chrf(predictions, streams)
        out = {
            "bleu": float(bleu.score),
            "chrf": float(chrf.score),
            "bleu_brevity_penalty": float(bleu.bp),
            "sys_len": int(bleu.sys_len),
            "ref_len": int(bleu.ref_len),
        }
        for n, p in enumerate(bleu.precisions, start=1):
            out[f"bleu_precision_{n}"] = float(p)
        return out
