"""Scoring and predicting with a fine-tuned classifier: ``nlp-ssl evaluate`` / ``predict`` vs.
``transformers.pipeline("text-classification")`` on the same model and texts, in one script run.

The pipeline is timed as a user calls it (``truncation=True``) with its default batch size (1)
and with the batch size ours uses; every side loads the model inside its timing. Accuracies must
agree: the same model sees the same truncated texts.

    python benchmarks/bench_inference.py                     # the quick start's fine-tuned model
    python benchmarks/bench_inference.py --model runs/finetune-rt-mlm --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import REPO, interleaved  # first: the repository on the import path, offline defaults

from nlp_ssl.data import DatasetSpec, load_split
from nlp_ssl.models import resolve_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=str(REPO / "runs/quickstart/finetune-rt"),
        help="a fine-tuned classifier (default: the quick start's)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timings per side; the median is reported")
    parser.add_argument(
        "--output", default=None, help="also write the result JSON here (the Trainer prints its logs to stdout)"
    )
    args = parser.parse_args()
    model_dir = resolve_model_dir(args.model)
    if not Path(model_dir).is_dir():
        sys.exit(f"--model {args.model}: no model folder (run `make quickstart` first, or pass a classifier)")

    from transformers import AutoTokenizer, pipeline

    from nlp_ssl.inference import EvaluateConfig, evaluate_checkpoint, predict_texts

    spec = DatasetSpec(name="rotten_tomatoes", split="test")
    test = load_split(spec)
    texts, labels = list(test["text"]), np.asarray(test["label"])
    names = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]
    to_id = {name: int(i) for i, name in names.items()}
    max_length = AutoTokenizer.from_pretrained(model_dir).model_max_length

    def ours_evaluate():
        with tempfile.TemporaryDirectory() as tmp:
            metrics = evaluate_checkpoint(
                EvaluateConfig(checkpoint=args.model, data=spec, output_dir=f"{tmp}/out", batch_size=args.batch_size)
            )
        return {"accuracy": metrics["accuracy"]}

    def ours_predict():
        results = predict_texts(args.model, texts, batch_size=args.batch_size)
        return {"accuracy": float(np.mean([to_id[r["label"]] == y for r, y in zip(results, labels)]))}

    def hf_pipeline(batch_size):
        def call():
            classify = pipeline("text-classification", model=model_dir, device=-1)
            out = classify(texts, truncation=True, max_length=max_length, batch_size=batch_size)
            return {"accuracy": float(np.mean([to_id[r["label"]] == y for r, y in zip(out, labels)]))}

        return call

    runs = {
        "nlp_ssl_evaluate": ours_evaluate,
        "nlp_ssl_predict": ours_predict,
        "pipeline_batch_1": hf_pipeline(1),
        f"pipeline_batch_{args.batch_size}": hf_pipeline(args.batch_size),
    }
    sides = interleaved(runs, args.repeats)
    result = {
        "model": str(model_dir),
        "examples": len(texts),
        "max_length": max_length,
        "threads": torch.get_num_threads(),
        "sides": {},
    }
    for name, s in sides.items():
        result["sides"][name] = {
            "accuracy": round(s["accuracy"], 4),
            "median_seconds": round(s["median_seconds"], 3),
            "examples_per_s": round(len(texts) / s["median_seconds"], 1),
        }
    best_pipeline = max((v["examples_per_s"] for k, v in result["sides"].items() if k.startswith("pipeline")))
    for name in ("nlp_ssl_evaluate", "nlp_ssl_predict"):
        result["sides"][name]["speedup_vs_best_pipeline"] = round(
            result["sides"][name]["examples_per_s"] / best_pipeline, 3
        )
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
