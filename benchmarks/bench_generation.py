"""Beam-search scoring of a fine-tuned encoder-decoder: ``nlp-ssl evaluate`` vs. the Hugging
Face ``Seq2SeqTrainer.predict`` with ``predict_with_generate`` (what ``run_translation.py
--do_predict`` runs), on the same model, test sentences and generation settings, in one script run.

The Trainer is timed at its default evaluation batch (``per_device_eval_batch_size`` 8, as the
example scripts run it) and at ours. Every side loads the model inside its timing, computes the
loss beside the generations (both do), and is scored with the same BLEU / chrF against the raw
target texts. ``transformers`` 5 has no translation pipeline, so the Trainer is the baseline.
What differs is the batching: the engine generates for the longest sources first (beams of
similar length finish together, fewer steps are spent on finished hypotheses), the Trainer in
file order.

    python benchmarks/bench_generation.py     # the translation study's skip-gram model
    python benchmarks/bench_generation.py --model runs/finetune-multi30k --repeats 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import REPO, interleaved, timed  # first: the repository on the import path, offline defaults

from nlp_ssl.data import DatasetSpec, dig, load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=str(REPO / "runs/study-translation-embeddings/finetune-sg-all-s0"),
        help="a fine-tuned encoder-decoder (default: the translation study's skip-gram arm)",
    )
    parser.add_argument("--dataset", default="bentrevett/multi30k")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32, help="ours, and the Trainer's second setting")
    parser.add_argument("--trainer-batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=2, help="timings per side; the median is reported")
    parser.add_argument("--output", default=None, help="also write the result JSON here")
    args = parser.parse_args()

    from nlp_ssl import metrics as our_metrics
    from nlp_ssl.inference import EvaluateConfig, evaluate_checkpoint, load_finetuned
    from nlp_ssl.tasks.seq2seq import tokenize_pairs

    probe = load_finetuned(args.model)
    source, target = probe.saved["source_column"], probe.saved["target_column"]
    max_source, max_new = probe.max_length, probe.model.generation_config.max_new_tokens
    beams = probe.model.generation_config.num_beams
    spec = DatasetSpec(name=args.dataset, split=args.split, max_rows=args.max_rows)
    references = [[dig(row, target)] for row in load_split(spec)]
    bleu = our_metrics.load("sacrebleu_chrf")
    del probe

    def ours():
        with tempfile.TemporaryDirectory() as tmp:
            m = evaluate_checkpoint(
                EvaluateConfig(checkpoint=args.model, data=spec, output_dir=f"{tmp}/out", batch_size=args.batch_size)
            )
        return {"bleu": m["bleu"], "chrf": m["chrf"]}

    def trainer(batch_size: int):
        def call():
            from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

            ft = load_finetuned(args.model)
            data = tokenize_pairs(spec, ft.tokenizer, source, target, max_source, max_new + 1)
            data = data.select_columns(["input_ids", "attention_mask", "labels"])
            with tempfile.TemporaryDirectory() as tmp:
                t = Seq2SeqTrainer(
                    model=ft.model,
                    args=Seq2SeqTrainingArguments(
                        output_dir=tmp,
                        per_device_eval_batch_size=batch_size,
                        predict_with_generate=True,
                        report_to="none",
                        disable_tqdm=True,
                        use_cpu=not torch.cuda.is_available(),
                        dataloader_num_workers=0,
                    ),
                    data_collator=DataCollatorForSeq2Seq(ft.tokenizer, model=ft.model, label_pad_token_id=-100),
                )
                out = t.predict(data)
            preds = np.where(out.predictions < 0, ft.tokenizer.pad_token_id, out.predictions)
            hyps = [h.strip() for h in ft.tokenizer.batch_decode(preds, skip_special_tokens=True)]
            scores = bleu.compute(predictions=hyps, references=references)
            return {"bleu": scores["bleu"], "chrf": scores["chrf"]}

        return call

    runs = {"nlp_ssl_evaluate": ours, **{f"trainer_batch_{b}": trainer(b) for b in args.trainer_batch_sizes}}
    for warm_up in (ours, trainer(args.batch_size)):  # untimed: first-call costs (imports, kernels) hit no side
        timed(warm_up)
    sides = interleaved(runs, args.repeats)
    n = len(references)
    result = {
        "model": args.model,
        "sentences": n,
        "batch_size": args.batch_size,
        "generation": {"num_beams": beams, "max_new_tokens": max_new},
        "threads": torch.get_num_threads(),
        "sides": {},
    }
    for name, s in sides.items():
        result["sides"][name] = {
            "bleu": round(s["bleu"], 2),
            "chrf": round(s["chrf"], 2),
            "seconds": [round(x, 2) for x in s["seconds"]],
            "median_seconds": round(s["median_seconds"], 2),
            "sentences_per_s": round(n / s["median_seconds"], 1),
        }
    ours_rate = result["sides"]["nlp_ssl_evaluate"]["sentences_per_s"]
    for name, side in result["sides"].items():
        if name != "nlp_ssl_evaluate":
            side["ours_vs_this"] = round(ours_rate / side["sentences_per_s"], 3)
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
