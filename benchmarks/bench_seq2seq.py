"""Translation fine-tuning with beam-search evaluation: nlp-ssl's engine vs. the Hugging Face
``Seq2SeqTrainer`` with ``predict_with_generate``, in one script run.

Both sides train the same encoder-decoder (BERT-mini encoder, GPT-2-mini decoder with
cross-attention, fresh weights from one seed) on the same tokenized Multi30k en->de pairs
(``tokenize_pairs``, so the inputs are identical), with the same batch, epochs, learning rate,
schedule, dropout and clipping, and generate with the same ``generation_config`` (beams,
``max_new_tokens``). Each evaluates the validation sample every epoch (loss and generations)
and the test sample once at the end. Recorded: training tokens/s (source + target tokens, no
padding), generated sentences/s in evaluation, wall time, test BLEU, chrF and loss.

    python benchmarks/bench_seq2seq.py --train-rows 8000 --seeds 0
    python benchmarks/bench_seq2seq.py --seeds 0 1 2 3 4 --epochs 3
    python benchmarks/bench_seq2seq.py --sides nlp_ssl --pack-pairs false --group-by-length true --seeds 0 1 2
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
from harness import flag  # first: the repository on the import path, offline defaults

from benchmarks.trainer_timing import with_timings
from nlp_ssl.data import DatasetSpec

DATASET = "bentrevett/multi30k"
SOURCE, TARGET = "translation.en", "translation.de"


def spec(split: str, rows: int | None) -> DatasetSpec:
    return DatasetSpec(name=DATASET, split=split, max_rows=rows)


def make_start(tmp: Path, preset: str) -> tuple[Path, Path]:
    """A bilingual BPE tokenizer and fresh encoder / decoder folders (the shapes of
    recipes/finetune/translation_multi30k_scratch.yaml)."""
    from nlp_ssl.models import ModelConfig
    from nlp_ssl.objectives.causal_lm import build_causal_lm
    from nlp_ssl.objectives.masked_lm import build_masked_lm
    from nlp_ssl.tokenizer import TokenizerConfig, load_tokenizer, save_tokenizer
    from nlp_ssl.tokenizer import run as train_tokenizer

    train_tokenizer(
        TokenizerConfig(
            output_dir=str(tmp / "tok"),
            vocab_size=8000,
            datasets=[DatasetSpec(name=DATASET, split="train", text_column=[SOURCE, TARGET])],
        )
    )
    tokenizer = load_tokenizer(tmp / "tok")
    shape = ModelConfig(preset=preset, max_positions=128)
    folders = []
    for name, build in (("encoder", build_masked_lm), ("decoder", build_causal_lm)):
        build(shape, tokenizer).save_pretrained(tmp / name)
        save_tokenizer(tokenizer, tmp / name)
        folders.append(tmp / name)
    return folders[0], folders[1]


def recipe(args, seed: int, encoder: Path, decoder: Path, out: Path) -> dict:
    return {
        "output_dir": str(out),
        "task": "translation",
        "init": str(encoder),
        "init_decoder": str(decoder),
        "from_scratch": True,
        "dropout": 0.1,
        "seed": seed,
        "data": {
            "train": {"name": DATASET, "split": "train", "max_rows": args.train_rows},
            "validation": {"name": DATASET, "split": "validation", "max_rows": args.eval_rows},
            "test": {"name": DATASET, "split": "test", "max_rows": args.test_rows},
            "source_lang": "en",
            "target_lang": "de",
            "max_source_length": 64,
            "max_target_length": 64,
        },
        "generation": {"max_new_tokens": 48, "num_beams": args.beams},
        "train": {
            "epochs": args.epochs,
            "micro_batch_size": args.batch_size,
            "lr": args.lr,
            "scheduler": "linear",
            "warmup_ratio": 0.05,
            "eval_every": "epoch",
            "save_every": "epoch",
            "metric_for_best": "loss",
            "tracker": "none",
            "eval_batch_size": args.eval_batch_size,
            **({"group_by_length": args.group_by_length} if args.group_by_length is not None else {}),
            **({"length_group_batches": args.length_group_batches} if args.length_group_batches is not None else {}),
            **({"pack_pairs": args.pack_pairs} if args.pack_pairs is not None else {}),
        },
    }


def run_ours(args, seed, encoder, decoder, out: Path) -> dict:
    from nlp_ssl import finetune
    from nlp_ssl.config import from_dict
    from nlp_ssl.tasks import get_task

    start = time.perf_counter()
    metrics = finetune.run(from_dict(get_task("translation").config, recipe(args, seed, encoder, decoder, out)))
    return {
        "wall_seconds": time.perf_counter() - start,
        "train_seconds": metrics["train_seconds"],
        "evaluation_seconds": metrics["evaluation_seconds"],
        "tokens": metrics["tokens"],
        "test_bleu": metrics["test_bleu"],
        "test_chrf": metrics["test_chrf"],
        "test_loss": metrics["test_loss"],
    }


def run_trainer(args, seed, encoder, decoder, out: Path) -> dict:
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from nlp_ssl import metrics as our_metrics
    from nlp_ssl.config import from_dict
    from nlp_ssl.tasks import get_task
    from nlp_ssl.tasks.seq2seq import build_seq2seq, tokenize_pairs
    from nlp_ssl.tokenizer import load_tokenizer_for

    timings = {"eval": 0.0, "save": 0.0}

    TimedTrainer = with_timings(Seq2SeqTrainer, timings)

    start = time.perf_counter()
    cfg = from_dict(get_task("translation").config, recipe(args, seed, encoder, decoder, out))
    tokenizer = load_tokenizer_for(str(encoder))
    tokenizer.model_max_length = 64
    data = {
        name: tokenize_pairs(s, tokenizer, SOURCE, TARGET, 64, 64)
        for name, s in (
            ("train", spec("train", args.train_rows)),
            ("validation", spec("validation", args.eval_rows)),
            ("test", spec("test", args.test_rows)),
        )
    }
    data = {k: v.select_columns(["input_ids", "attention_mask", "labels"]) for k, v in data.items()}
    torch.manual_seed(seed)
    model = build_seq2seq(
        str(encoder), str(decoder), tokenizer, from_scratch=True, dropout=0.1, generation=cfg.generation
    )
    bleu = our_metrics.load("sacrebleu_chrf")

    from nlp_ssl.data import dig, load_split

    # references are the raw target texts, as ours are (not labels decoded back); found by each
    # example's label ids, since the Trainer's length grouping reorders evaluation too
    raw_target = {}
    for name, s in (("validation", spec("validation", args.eval_rows)), ("test", spec("test", args.test_rows))):
        for row, labels in zip(load_split(s), data[name]["labels"]):
            raw_target[tuple(labels)] = dig(row, TARGET)

    def label_key(row) -> tuple:
        # Seq2SeqTrainer pads labels to the generation length with the pad id, batches with -100
        ids = [int(t) for t in row if t != -100]
        while ids and ids[-1] == tokenizer.pad_token_id:
            ids.pop()
        return tuple(ids)

    def compute_metrics(p):
        preds = np.where(p.predictions < 0, tokenizer.pad_token_id, p.predictions)
        hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [[raw_target[label_key(row)]] for row in p.label_ids]
        scores = bleu.compute(predictions=hyps, references=refs)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}

    training_args = Seq2SeqTrainingArguments(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=0.05,  # a float < 1 is a ratio
        weight_decay=0.01,
        adam_beta2=0.98,
        max_grad_norm=1.0,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        predict_with_generate=True,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        dataloader_num_workers=0,
        logging_steps=50,
        # the Trainer's own length grouping (training batches; evaluation then reads sorted too)
        train_sampling_strategy="group_by_length" if args.trainer_group_by_length else "random",
    )
    trainer = TimedTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        compute_metrics=compute_metrics,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
    )
    result = trainer.train()
    in_training = dict(timings)
    test = trainer.evaluate(data["test"], metric_key_prefix="test")
    wall = time.perf_counter() - start
    train = data["train"]
    per_epoch = sum(len(a) + len(b) for a, b in zip(train["input_ids"], train["labels"]))
    return {
        "wall_seconds": wall,
        "train_seconds": result.metrics["train_runtime"] - in_training["eval"] - in_training["save"],
        "evaluation_seconds": in_training["eval"],
        "tokens": int(per_epoch * args.epochs),
        "test_bleu": test["test_bleu"],
        "test_chrf": test["test_chrf"],
        # a mean of per-batch mean losses, not comparable with ours (over every target token)
        "test_loss_batch_mean": test["test_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=None)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--preset", default="mini")
    parser.add_argument(
        "--group-by-length", type=flag, default=None, help="nlp-ssl's train.group_by_length (default: the task's)"
    )
    parser.add_argument(
        "--length-group-batches",
        type=int,
        default=None,
        help="nlp-ssl's train.length_group_batches (default: the task's)",
    )
    parser.add_argument(
        "--pack-pairs", type=flag, default=None, help="nlp-ssl's train.pack_pairs (default: the task's)"
    )
    parser.add_argument(
        "--trainer-group-by-length",
        type=flag,
        default=False,
        help="the Trainer's train_sampling_strategy=group_by_length (its run_classification / "
        "run_translation recipes default to random batches)",
    )
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=["trainer", "nlp_ssl"],
        default=["trainer", "nlp_ssl"],
        help="run only these sides (one side alone records quality, e.g. of a grouping setting; ratios need both)",
    )
    parser.add_argument(
        "--output", default=None, help="also write the result JSON here (the Trainer prints its logs to stdout)"
    )
    args = parser.parse_args()

    runs: dict[str, list[dict]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        encoder, decoder = make_start(tmp, args.preset)
        sides = [(side, run) for side, run in (("trainer", run_trainer), ("nlp_ssl", run_ours)) if side in args.sides]
        for k, seed in enumerate(args.seeds):
            # the first side of a seed alternates, so that warm caches and drift in machine load hit both
            for side, run in sides[k % 2 :] + sides[: k % 2]:
                runs[side].append({"seed": seed, **run(args, seed, encoder, decoder, tmp / f"{side}-{seed}")})
                print(json.dumps({"side": side, **runs[side][-1]}), file=sys.stderr, flush=True)
    evaluated = args.epochs * args.eval_rows  # sentences generated inside training (one evaluation an epoch)
    result = {"settings": vars(args), "threads": torch.get_num_threads(), "runs": runs}
    for side, rs in runs.items():
        result[side] = {
            "train_tokens_per_s": round(float(np.mean([r["tokens"] / r["train_seconds"] for r in rs])), 1),
            "eval_sentences_per_s": round(float(np.mean([evaluated / r["evaluation_seconds"] for r in rs])), 2),
            "wall_seconds": round(float(np.mean([r["wall_seconds"] for r in rs])), 1),
            "test_bleu": round(float(np.mean([r["test_bleu"] for r in rs])), 2),
            "test_chrf": round(float(np.mean([r["test_chrf"] for r in rs])), 2),
            # the seed spread that "equal quality" is judged against
            **(
                {
                    "test_bleu_sd": round(float(np.std([r["test_bleu"] for r in rs], ddof=1)), 2),
                    "test_chrf_sd": round(float(np.std([r["test_chrf"] for r in rs], ddof=1)), 2),
                }
                if len(rs) > 1
                else {}
            ),
            **{
                key: round(float(np.mean([r[key] for r in rs])), 4)
                for key in ("test_loss", "test_loss_batch_mean")
                if key in rs[0]
            },
        }
    if len(runs) == 2:
        t, o = result["trainer"], result["nlp_ssl"]
        result["speedup"] = {
            "train_tokens_per_s": round(o["train_tokens_per_s"] / t["train_tokens_per_s"], 3),
            "eval_sentences_per_s": round(o["eval_sentences_per_s"] / t["eval_sentences_per_s"], 3),
            "wall": round(t["wall_seconds"] / o["wall_seconds"], 3),
        }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
