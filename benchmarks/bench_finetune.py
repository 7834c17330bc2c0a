"""Sentiment fine-tuning: nlp-ssl's engine vs. the Hugging Face ``Trainer`` (the
``run_classification`` recipe), in one script run.

Same checkpoint (default: the quick start's masked-LM run), tokenizer, rotten_tomatoes splits,
``max_length``, batch, epochs, learning rate and schedule, warm-up, weight decay, dropout,
gradient clipping, an evaluation on the validation split every epoch with the best model kept,
and one test-set evaluation at the end. Per seed and side it records the wall time of the whole
call, the time in training steps alone, in evaluations and in checkpoints, training tokens/s
(real tokens, padding not counted: the same count for both sides) and test accuracy.

    python benchmarks/bench_finetune.py --seeds 0 1 2
    python benchmarks/bench_finetune.py --seeds 0 --group-by-length false   # the ablation
    python benchmarks/bench_finetune.py --seeds 0 1 --bf16 [--compile]       # both sides in bf16 / compiled
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import REPO, flag  # first: the repository on the import path, offline defaults

from benchmarks.trainer_timing import with_timings
from nlp_ssl.data import DatasetSpec, load_split
from nlp_ssl.models import resolve_model_dir, set_dropout

LABELS = ["negative", "positive"]


def split(name: str):
    return load_split(DatasetSpec(name="rotten_tomatoes", split=name))


def run_ours(args, seed: int, out: Path) -> dict:
    from nlp_ssl import finetune
    from nlp_ssl.config import from_dict
    from nlp_ssl.tasks import get_task

    raw = {
        "output_dir": str(out),
        "task": "sentiment",
        "init": args.init,
        "dropout": args.dropout,
        "seed": seed,
        "data": {
            "train": {"name": "rotten_tomatoes", "split": "train"},
            "validation": {"name": "rotten_tomatoes", "split": "validation"},
            "test": {"name": "rotten_tomatoes", "split": "test"},
            "labels": LABELS,
            "max_length": args.max_length,
        },
        "train": {
            "epochs": args.epochs,
            "micro_batch_size": args.batch_size,
            "lr": args.lr,
            "scheduler": "linear",
            "warmup_ratio": args.warmup_ratio,
            "weight_decay": args.weight_decay,
            "tracker": "none",
            "metric_for_best": "accuracy",
            "group_by_length": args.group_by_length,
            "eval_batch_size": args.eval_batch_size,
            "compile": args.compile,
            "mixed_precision": "bf16" if args.bf16 else "no",
        },
    }
    start = time.perf_counter()
    metrics = finetune.run(from_dict(get_task("sentiment").config, raw))
    wall = time.perf_counter() - start
    return {
        "wall_seconds": wall,
        "train_seconds": metrics["train_seconds"],
        "evaluation_seconds": metrics["evaluation_seconds"],
        "checkpoint_seconds": metrics["checkpoint_seconds"],
        "tokens": metrics["tokens"],
        "test_accuracy": metrics["test_accuracy"],
    }


def run_trainer(args, seed: int, out: Path) -> dict:
    """The ``run_classification`` recipe: ``datasets.map`` tokenization with truncation,
    ``DataCollatorWithPadding``, ``Trainer`` evaluating and saving every epoch and loading the
    best model at the end."""
    import evaluate
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    timings = {"eval": 0.0, "save": 0.0}

    TimedTrainer = with_timings(Trainer, timings)

    start = time.perf_counter()
    model_dir = resolve_model_dir(args.init)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(
        model_dir, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}
    )
    set_dropout(config, args.dropout)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=args.max_length)

    data = {
        name: split(name).map(tokenize, batched=True, remove_columns=["text"])
        for name in ("train", "validation", "test")
    }
    accuracy = evaluate.load(str(REPO / "nlp_ssl/metrics/classification"))

    def compute_metrics(p):
        return {
            "accuracy": accuracy.compute(
                predictions=np.argmax(p.predictions, -1), references=p.label_ids, num_labels=2
            )["accuracy"]
        }

    training_args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # a float < 1 is a ratio
        weight_decay=args.weight_decay,
        adam_beta2=0.98,
        max_grad_norm=1.0,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        dataloader_num_workers=0,
        logging_steps=50,
        # the Trainer's own length grouping (training batches; evaluation then reads sorted too)
        train_sampling_strategy="group_by_length" if args.trainer_group_by_length else "random",
        bf16=args.bf16,
        torch_compile=args.compile,
    )
    trainer = TimedTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    result = trainer.train()
    in_training = dict(timings)
    test = trainer.evaluate(data["test"], metric_key_prefix="test")
    wall = time.perf_counter() - start
    lengths = np.fromiter((len(x) for x in data["train"]["input_ids"]), dtype=np.int64)
    return {
        "wall_seconds": wall,
        "train_seconds": result.metrics["train_runtime"] - in_training["eval"] - in_training["save"],
        "evaluation_seconds": in_training["eval"],
        "checkpoint_seconds": in_training["save"],
        "tokens": int(lengths.sum() * args.epochs),
        "test_accuracy": test["test_accuracy"],
    }


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in ("wall_seconds", "train_seconds", "evaluation_seconds", "checkpoint_seconds", "test_accuracy"):
        values = [r[key] for r in runs]
        out[key] = {
            "mean": round(float(np.mean(values)), 4),
            "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0,
        }
    tps = [r["tokens"] / r["train_seconds"] for r in runs]
    out["train_tokens_per_s"] = round(float(np.mean(tps)), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--init",
        default=str(REPO / "runs/quickstart/pretrain-mlm"),
        help="checkpoint both sides start from (default: the quick start's masked-LM run)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--group-by-length", type=flag, default=True, help="nlp-ssl's train.group_by_length")
    parser.add_argument(
        "--trainer-group-by-length",
        type=flag,
        default=True,
        help="the Trainer's train_sampling_strategy=group_by_length (its run_classification / "
        "run_translation recipes default to random batches)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast on both sides (Trainer bf16=True, train.mixed_precision=bf16); CPUs "
        "with AVX512-BF16 or AMX gain",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile on both sides (Trainer torch_compile=True, train.compile=true); the "
        "compilation is inside the timed training",
    )
    parser.add_argument("--sides", nargs="+", choices=["trainer", "nlp_ssl"], default=["trainer", "nlp_ssl"])
    parser.add_argument(
        "--output", default=None, help="also write the result JSON here (the Trainer prints its logs to stdout)"
    )
    args = parser.parse_args()
    if not Path(resolve_model_dir(args.init)).is_dir():
        sys.exit(f"--init {args.init}: no model folder (run `make quickstart` first, or pass a checkpoint)")

    runs: dict[str, list[dict]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory() as tmp:
        for k, seed in enumerate(args.seeds):
            # the first side of a seed alternates, so that warm caches and drift in machine load hit both
            for side in args.sides[k % 2 :] + args.sides[: k % 2]:
                run = run_trainer if side == "trainer" else run_ours
                runs[side].append({"seed": seed, **run(args, seed, Path(tmp) / f"{side}-{seed}")})
                print(json.dumps({"side": side, **runs[side][-1]}), file=sys.stderr, flush=True)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "sides"},
        "threads": torch.get_num_threads(),
        "runs": runs,
        **{side: summarise(r) for side, r in runs.items()},
    }
    if len(runs) == 2:
        t, o = result["trainer"], result["nlp_ssl"]
        result["speedup"] = {
            "wall": round(t["wall_seconds"]["mean"] / o["wall_seconds"]["mean"], 3),
            "train_tokens_per_s": round(o["train_tokens_per_s"] / t["train_tokens_per_s"], 3),
            "eval": round(t["evaluation_seconds"]["mean"] / max(o["evaluation_seconds"]["mean"], 1e-9), 3),
        }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
