"""Using a fine-tuned model (classifier or encoder-decoder) without retraining it.

``nlp-ssl evaluate CHECKPOINT DATASET [--split NAME]``: score it on any dataset the data
layer reads (Hub id, mirror name, local folder or file), through the engine's evaluation
(so ``accelerate launch`` splits the work), writing ``metrics.json`` and
``predictions.jsonl``. ``nlp-ssl predict CHECKPOINT "text" ... [--file F]``: print label and
probability per text (a classifier) or the generated text (an encoder-decoder).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    """What ``nlp-ssl evaluate`` ran (saved as its ``resolved_config.yaml``)."""

    checkpoint: str
    data: DatasetSpec
    output_dir: str
    label_column: str = "label"
    max_length: int | None = None
    """Default: the length the model was fine-tuned with (its tokenizer's ``model_max_length``)."""
    long_texts: str | None = None
    """Classifiers: ``windows`` or ``truncate`` (default: as fine-tuning evaluated)."""
    window_overlap: int | None = None
    """Classifiers: tokens each window repeats (default: as fine-tuning evaluated)."""
    batch_size: int = 64
    source_column: str | None = None
    """Encoder-decoders: default the columns the model was fine-tuned on."""
    target_column: str | None = None


@dataclass
class Finetuned:
    """A fine-tuned model ready to score or use."""

    task: object
    """The ``FinetuneTask`` it was trained for."""
    model: object
    tokenizer: object
    saved: dict = field(default_factory=dict)
    """What fine-tuning saved in the model's config (``config.nlp_ssl``: task, columns)."""

    @property
    def positions(self) -> int:
        """Tokens the model's (encoder's) position table holds."""
        cfg = getattr(self.model, "encoder", self.model).config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 512

    @property
    def max_length(self) -> int:
        """What fine-tuning truncated inputs to (saved as the tokenizer's ``model_max_length``),
        within the model's position table."""
        return min(self.positions, self.tokenizer.model_max_length or self.positions)

    def input_length(self, requested: int | None) -> int:
        """``--max-length`` if given (checked against the positions), else ``max_length``."""
        if requested is None:
            return self.max_length
        if requested > self.positions:
            raise ConfigError(
                f"--max-length {requested} exceeds the {self.positions} positions of the model; "
                f"use {self.positions} or less (default: {self.max_length}, what it was fine-tuned with)"
            )
        return requested


def load_finetuned(checkpoint: str) -> Finetuned:
    """A fine-tuned model from a checkpoint folder (a finetune run, its ``model/``, a
    checkpoint, or any Hugging Face folder a registered task recognises: a sequence
    classifier, an encoder-decoder)."""
    import transformers
    from transformers.utils import logging as hf_logging

    from nlp_ssl.models import check_vocab, read_config_json, resolve_model_dir
    from nlp_ssl.tasks import TASKS, get_task
    from nlp_ssl.tokenizer import load_tokenizer_for

    hf_logging.disable_progress_bar()  # "Loading weights" bars would mix with predict's output
    model_dir = resolve_model_dir(checkpoint, key="checkpoint")
    config = read_config_json(model_dir, "checkpoint")
    saved = dict(config.get("nlp_ssl") or {})
    specs = [get_task(name) for name in TASKS]
    spec = next((s for s in specs if s.name == saved.get("task") and s.recognises(config)), None)
    spec = spec or next((s for s in specs if s.recognises(config)), None)
    if spec is None:
        architectures = ", ".join(config.get("architectures") or []) or "none"
        nouns = " or ".join(
            ("an " if n[0] in "aeiou" else "a ") + n for n in dict.fromkeys(s.model_noun for s in specs)
        )
        raise DataError(
            f"checkpoint {model_dir}: not {nouns} (architectures: {architectures}); fine-tune it "
            "first (nlp-ssl finetune)"
        )
    tokenizer = load_tokenizer_for(model_dir)
    try:
        model = getattr(transformers, spec.auto_model).from_pretrained(model_dir)
    except Exception as exc:
        raise DataError(
            f"checkpoint {model_dir}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    check_vocab(model, tokenizer, model_dir)
    return Finetuned(spec, model.eval(), tokenizer, saved=saved)


def load_head(checkpoint: str):
    """The ``HeadModel`` of a baseline run (``nlp_ssl.head_model``), or None for any other
    checkpoint."""
    from nlp_ssl.head_model import HeadModel, head_folder

    folder = head_folder(checkpoint) if checkpoint and checkpoint.strip() else None
    return HeadModel(folder) if folder is not None else None


def evaluate_checkpoint(cfg: EvaluateConfig, overwrite: bool = False) -> dict:
    from nlp_ssl.outputs import (
        PREDICTIONS_FILE,
        check_output_dir,
        config_inputs,
        now,
        output_path,
        staged_output,
        write_jsonl,
        write_run_files,
    )
    from nlp_ssl.training import TrainConfig, evaluate, make_accelerator

    started = now()
    out = output_path(cfg.output_dir)
    inputs = config_inputs(cfg)
    check_output_dir(out, overwrite, inputs, kind="evaluate")  # before minutes of scoring
    head = load_head(cfg.checkpoint)
    if head is not None:
        scores, records = head.evaluate(cfg.data, cfg.label_column, cfg.batch_size)
        with staged_output(out, overwrite, inputs, kind="evaluate") as staging:
            write_jsonl(staging / PREDICTIONS_FILE, records)
            metrics = {"checkpoint": cfg.checkpoint, "dataset": cfg.data.describe(), "examples": len(records), **scores}
            write_run_files(staging, stage="evaluate", config=cfg, seed=0, started_at=started, metrics=metrics)
        return metrics
    ft = load_finetuned(cfg.checkpoint)
    options = replace(cfg, max_length=ft.input_length(cfg.max_length))
    task = ft.task.evaluation_task(ft, cfg.data, options)
    tcfg = TrainConfig(micro_batch_size=cfg.batch_size, tracker="none")
    accelerator = make_accelerator(tcfg, out)
    ft.model.to(accelerator.device)
    scores, outputs = evaluate(task, task.module, accelerator, tcfg, split="test", outputs=True)
    if not accelerator.is_main_process:
        return {}
    with staged_output(out, overwrite, inputs, kind="evaluate") as staging:
        write_jsonl(staging / PREDICTIONS_FILE, task.records("test", outputs))
        metrics = {
            "checkpoint": cfg.checkpoint,
            "dataset": cfg.data.describe(),
            "examples": len(task.index["test"]),
            **scores,
        }
        write_run_files(staging, stage="evaluate", config=cfg, seed=0, started_at=started, metrics=metrics)
    return metrics


@dataclass
class ReadingOptions:
    """How ``predict`` reads a text longer than one input (classifiers; None: as fine-tuned)."""

    long_texts: str | None = None
    window_overlap: int | None = None


def predict_texts(
    checkpoint: str,
    texts: list[str],
    batch_size: int = 64,
    max_length: int | None = None,
    reading: ReadingOptions | None = None,
) -> list[dict]:
    """For a classifier: label and probability (and every label's) per text, a long text's
    from all its windows; for an encoder-decoder: the generated output (the model's saved
    generation settings)."""
    import torch

    head = load_head(checkpoint)
    if head is not None:  # it reads whole texts: there is no length to cut to
        return head.predict(texts, batch_size)
    ft = load_finetuned(checkpoint)
    max_length = ft.input_length(max_length)
    # longest first (characters stand in for tokens): batches of similar lengths pad little
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    results: list = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            for i, result in zip(
                chunk, ft.task.predict(ft, [texts[i] for i in chunk], max_length, reading or ReadingOptions())
            ):
                results[i] = result
    return results


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="fine-tuned model: a finetune output_dir, its model/ folder, or any HF classifier or seq2seq folder",
    )
    p.add_argument(
        "dataset", help="Hub id or mirror name (rotten_tomatoes), a local folder of <split>.jsonl/csv files, or a file"
    )
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--config", default=None, help="Hub configuration (subset) name, e.g. sst2 for glue")
    p.add_argument("--text-column", default="text", help="text column (dotted for nested; comma for sentence pairs)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--source-column", default=None, help="encoder-decoders: source column (default: as fine-tuned)")
    p.add_argument("--target-column", default=None, help="encoder-decoders: reference column (default: as fine-tuned)")
    p.add_argument("--output-dir", default=None, help="default: runs/evaluate/<checkpoint>-<dataset>-<split>")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=None, help="default: the length the model was fine-tuned with")
    add_reading_arguments(p)
    p.add_argument("--max-rows", type=int, default=None, help="score only the first N rows")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")


def add_reading_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--long-texts",
        choices=("windows", "truncate"),
        default=None,
        help="classifiers, a text longer than --max-length: read whole in windows whose logits are "
        "averaged, or cut (default: as the model was evaluated in fine-tuning; windows for others' models)",
    )
    p.add_argument(
        "--window-overlap",
        type=int,
        default=None,
        help="tokens each window repeats from the one before (default: as fine-tuned, else max-length / 4)",
    )


def check_options(args: argparse.Namespace) -> None:
    """Command-line numbers in range, named by their option, before anything loads."""
    for option in ("dataset", "file", "output_dir"):  # an empty checkpoint: models.resolve_model_dir
        value = getattr(args, option, None)
        if isinstance(value, str) and not value.strip():
            name = option if option == "dataset" else f"--{option.replace('_', '-')}"
            raise ConfigError(
                f"{name} is empty; it names a folder or file (an empty path would be the working "
                "directory): give the path"
            )
    for option, least in (("batch_size", 1), ("max_length", 2), ("max_rows", 1), ("window_overlap", 0)):
        value = getattr(args, option, None)
        if value is not None and value < least:
            raise ConfigError(f"--{option.replace('_', '-')} must be >= {least}, got {value}")


def run_evaluate(args: argparse.Namespace) -> dict:
    check_options(args)
    columns = args.text_column.split(",")
    text_column = columns[0] if len(columns) == 1 else columns
    path = Path(args.dataset).expanduser()
    if path.is_file():
        spec = DatasetSpec(files=str(path), split=args.split, text_column=text_column, max_rows=args.max_rows)
    else:
        spec = DatasetSpec(
            name=args.dataset, config=args.config, split=args.split, text_column=text_column, max_rows=args.max_rows
        )
    output_dir = (
        args.output_dir
        if args.output_dir is not None
        else str(Path("runs/evaluate") / f"{_slug(args.checkpoint)}-{_slug(args.dataset)}-{args.split}")
    )
    cfg = EvaluateConfig(
        checkpoint=args.checkpoint,
        data=spec,
        output_dir=output_dir,
        label_column=args.label_column,
        max_length=args.max_length,
        long_texts=args.long_texts,
        window_overlap=args.window_overlap,
        batch_size=args.batch_size,
        source_column=args.source_column,
        target_column=args.target_column,
    )
    metrics = evaluate_checkpoint(cfg, overwrite=args.overwrite)
    if metrics:
        logger.info("wrote %s", output_dir)
    return metrics


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="fine-tuned model: a finetune output_dir, its model/ folder, or any HF classifier or seq2seq folder",
    )
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", default=None, help="also classify each non-empty line of this file ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per text (with every label's probability)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=None)
    add_reading_arguments(p)


def run_predict(args: argparse.Namespace) -> None:
    check_options(args)
    texts = list(args.texts)
    if args.file is not None:
        texts += _read_lines(args.file)
    if not texts:
        raise DataError("predict: no texts (give them as arguments or with --file)")
    reading = ReadingOptions(args.long_texts, args.window_overlap)
    for r in predict_texts(args.checkpoint, texts, args.batch_size, args.max_length, reading):
        if args.json:
            print(json.dumps(r, ensure_ascii=False).translate(_LINE_BREAKS))
        elif "output" in r:  # encoder-decoder: one output line per input
            print(r["output"].translate(_LINE_BREAKS))
        else:
            print(f"{r['label']}\t{r['probability']:.4f}\t{r['text'].translate(_LINE_BREAKS)}")
    return None


# What str.splitlines() (and so many a reader of our output) breaks lines at, besides "\n":
# escaped, so that output line k is the record of the k-th non-blank input line.
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def _read_lines(name: str) -> list[str]:
    if name == "-":
        lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not lines:
            raise DataError("--file -: no text on standard input; give one text per line")
        return lines
    path = Path(name)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text") from None
    # str.splitlines() also breaks at U+2028, vertical tabs and form feeds: one record per line
    # as stdin and every editor count them
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataError(
            f"{path}: no text in the file ({'it is empty' if not text else 'only blank lines'}); give one text per line"
        )
    return lines


def _slug(value: str) -> str:
    parts = [p for p in Path(value).parts if p not in ("/", ".", "..", "model")]
    return (parts[-1] if parts else "data").replace(":", "_")
