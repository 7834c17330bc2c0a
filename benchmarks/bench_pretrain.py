"""Pretraining throughput: nlp-ssl's engine vs. the Hugging Face ``Trainer`` run_mlm/run_clm recipe.

Same script, same tokenizer, same data, same model config (BERT or GPT-2 built by
``nlp_ssl.models``), same batch x sequence length, same optimizer settings and steps.
The baseline is what a user would otherwise write: ``group_texts`` packing +
``DataCollatorForLanguageModeling`` + ``Trainer``. Both final models are scored by one
evaluator on the same held-out blocks (seeded masks for MLM), so "loss after the same number
of tokens" is compared like for like.

    python benchmarks/bench_pretrain.py --objective mlm --steps 150
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import harness  # noqa: F401  (first: the repository on the import path, offline defaults)
import numpy as np
import torch

from nlp_ssl import pretrain
from nlp_ssl.config import from_dict
from nlp_ssl.data import DatasetSpec, resolve
from nlp_ssl.objectives import get_objective
from nlp_ssl.packing import pack
from nlp_ssl.tokenizer import TokenizerConfig, load_tokenizer
from nlp_ssl.tokenizer import run as train_tokenizer


def corpus_file(tmp: Path, docs: int) -> Path:
    """The first ``docs`` IMDB reviews as a JSONL file both sides read."""
    rows = 0
    out = tmp / "corpus.jsonl"
    import gzip

    src = resolve(DatasetSpec(name="imdb_unsup_lm")).files[0]
    with gzip.open(src, "rt", encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as dst:
        for line in fh:
            row = json.loads(line)
            dst.write(json.dumps({"text": row["text"].replace("<br /><br />", "\n").replace("<br />", "\n")}) + "\n")
            rows += 1
            if rows == docs:
                break
    return out


def config(args, tmp: Path, tokenizer: Path, corpus: Path, valid: Path):
    raw = {
        "output_dir": str(tmp / "ours"),
        "tokenizer": str(tokenizer),
        "objective": args.objective,
        "data": {
            "datasets": [{"files": str(corpus)}],
            "validation": [{"files": str(valid)}],
            "block_size": args.block_size,
            "cache_dir": str(tmp / "cache"),
        },
        "model": {"preset": args.preset, "max_positions": args.block_size},
        "train": {
            "max_steps": args.steps,
            "micro_batch_size": args.batch_size,
            "lr": args.lr,
            "scheduler": "linear",
            "warmup_steps": int(0.05 * args.steps),
            "weight_decay": 0.01,
            "adam_beta2": 0.999,
            "eval_every": args.steps,
            "save_every": args.steps,
            "log_every": 10,
            "tracker": "none",
            "compile": args.compile,
            "mixed_precision": "bf16" if args.bf16 else "no",
        },
        "seed": 0,
    }
    return from_dict(pretrain.recipe_class(raw, "bench_pretrain"), raw)


def run_trainer(args, cfg, tokenizer, corpus: Path, tmp: Path):
    import datasets
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = get_objective(args.objective).build(cfg, tokenizer)
    raw = datasets.load_dataset("json", data_files=str(corpus), split="train")
    tokenized = raw.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=raw.column_names)
    block = args.block_size

    def group_texts(examples):  # verbatim from transformers' run_mlm.py / run_clm.py
        concatenated = {k: sum(examples[k], []) for k in examples}
        total = (len(concatenated["input_ids"]) // block) * block
        return {k: [t[i : i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

    grouped = tokenized.map(group_texts, batched=True)
    training_args = TrainingArguments(
        output_dir=str(tmp / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=int(0.05 * args.steps),
        weight_decay=0.01,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=args.bf16,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=args.objective == "mlm", mlm_probability=0.15)
    trainer = Trainer(model=model, args=training_args, train_dataset=grouped, data_collator=collator)
    result = trainer.train()
    return model, result.metrics["train_runtime"]


@torch.no_grad()
def eval_loss(args, cfg, model, tokenizer, valid_blocks) -> float:
    """One evaluator for both models: the same blocks, the same (seeded) masks."""
    every = np.arange(len(valid_blocks.blocks))
    task = get_objective(args.objective).make_task(
        model,
        tokenizer,
        cfg,
        train_blocks=valid_blocks.blocks,
        train_index=every,
        eval_blocks=valid_blocks.blocks,
        eval_index=every,
        seed=0,
    )
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(valid_blocks.blocks), 32):
        batch = task.make_batch(np.arange(start, min(start + 32, len(valid_blocks.blocks))), 0, "eval")
        total += float(task.module(**batch.inputs))
        n += batch.n_targets
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=["mlm", "clm"], default="mlm")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="train.compile=true for nlp-ssl")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast on both sides (Trainer bf16=True, train.mixed_precision=bf16); a speed-up "
        "only where the CPU has AVX512-BF16 or AMX",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = corpus_file(tmp, args.docs)
        valid = tmp / "valid.jsonl"
        vsrc = resolve(DatasetSpec(name="imdb_unsup_lm", split="validation")).files[0]
        lines = open(vsrc, encoding="utf-8").readlines()[:200]
        valid.write_text("".join(lines), encoding="utf-8")
        tok_dir = tmp / "tokenizer"
        train_tokenizer(
            TokenizerConfig(
                output_dir=str(tok_dir), vocab_size=8192, datasets=[DatasetSpec(name="imdb_unsup_lm", clean_html=True)]
            )
        )
        tokenizer = load_tokenizer(tok_dir)
        cfg = config(args, tmp, tok_dir, corpus, valid)
        valid_blocks = pack([DatasetSpec(files=str(valid))], tokenizer, args.block_size, tmp / "cache")

        model, trainer_seconds = run_trainer(args, cfg, tokenizer, corpus, tmp)
        trainer_loss = eval_loss(args, cfg, model, tokenizer, valid_blocks)

        metrics = pretrain.run(cfg)
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        auto = AutoModelForMaskedLM if args.objective == "mlm" else AutoModelForCausalLM
        ours_loss = eval_loss(args, cfg, auto.from_pretrained(tmp / "ours/model"), tokenizer, valid_blocks)

        from nlp_ssl.train_log import read_log

        # steady state: logging windows after the first 20 steps (past torch.compile's first step)
        windows = [
            r["train/tokens_per_s"] for r in read_log(tmp / "ours") if "train/tokens_per_s" in r and r["step"] > 20
        ]

    tokens = args.steps * args.batch_size * args.block_size
    trainer_tps = tokens / trainer_seconds
    ours_tps = metrics["tokens_per_s"]
    steady = float(np.median(windows)) if windows else float("nan")
    result = {
        "objective": args.objective,
        "parameters": metrics["parameters"],
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "trainer_tokens_per_s": round(trainer_tps, 1),
        "nlp_ssl_tokens_per_s": round(ours_tps, 1),
        "speedup": round(ours_tps / trainer_tps, 3),
        "nlp_ssl_steady_tokens_per_s": round(steady, 1),
        "steady_speedup": round(steady / trainer_tps, 3),
        "compile": args.compile,
        "bf16": args.bf16,
        "trainer_eval_loss": round(trainer_loss, 4),
        "nlp_ssl_eval_loss": round(ours_loss, 4),
        "trainer_eval_ppl": round(math.exp(trainer_loss), 2),
        "nlp_ssl_eval_ppl": round(math.exp(ours_loss), 2),
        "nlp_ssl_mfu": metrics["mfu"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
