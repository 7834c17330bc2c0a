"""``nlp-ssl STAGE RECIPE.yaml [key.sub=value ...]``: stage name + recipe + overrides -> the
stage's run function. Nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass

from nlp_ssl import __version__
from nlp_ssl.config import dump_yaml, load_recipe
from nlp_ssl.errors import NlpSslError
from nlp_ssl.progress import close_bars, setup_logging
from nlp_ssl.recipe_keys import describe_keys

logger = logging.getLogger("nlp_ssl.cli")


@dataclass(frozen=True)
class Stage:
    module: str
    config: str
    help: str


# Stages are imported lazily so `nlp-ssl --help` does not pay for torch/transformers.
STAGES = {
    "tokenizer": Stage("nlp_ssl.tokenizer", "TokenizerConfig", "train a BPE / WordPiece / Unigram tokenizer"),
    "pretrain": Stage(
        "nlp_ssl.pretrain",
        "recipe_class",
        "masked-LM, next-token LM, replaced-token detection (accelerate launch for many processes), "
        "or skip-gram / CBOW token embeddings",
    ),
    "finetune": Stage("nlp_ssl.finetune", "recipe_class", "fine-tune a pretrained (or fresh) model on a labelled task"),
    "baseline": Stage(
        "nlp_ssl.baselines",
        "BaselineConfig",
        "logistic regression on TF-IDF (labels only) or frozen pretrained features, on a sentiment recipe's data",
    ),
    "pipeline": Stage(
        "nlp_ssl.pipeline",
        "PipelineConfig",
        "tokenizer -> pretraining -> fine-tuning in one run folder, finished stages skipped",
    ),
    "study": Stage(
        "nlp_ssl.study",
        "StudyConfig",
        "what pretraining buys: fine-tune from each initialisation over label counts and seeds; report.md, plots",
    ),
}


@dataclass(frozen=True)
class Command:
    """A command that is not a recipe stage: its own arguments, a ``run(args)`` function."""

    module: str
    arguments: str
    run: str
    help: str


# Importing these modules is cheap (torch/transformers load inside its functions).
COMMANDS = {
    "evaluate": Command(
        "nlp_ssl.inference",
        "add_evaluate_arguments",
        "run_evaluate",
        "score a fine-tuned checkpoint on a dataset (metrics.json, predictions.jsonl)",
    ),
    "predict": Command(
        "nlp_ssl.inference",
        "add_predict_arguments",
        "run_predict",
        "print the predicted label and probability (or the generated text) for texts",
    ),
    "export": Command(
        "nlp_ssl.export",
        "add_export_arguments",
        "run_export",
        "write a Hub-ready folder (safetensors, config, tokenizer, model card) for a run",
    ),
    "push": Command(
        "nlp_ssl.hub",
        "add_push_arguments",
        "run_push",
        "export a run and upload it to the Hugging Face Hub as one commit",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlp-ssl",
        description="Raw text to a published, fine-tuned language model: tokenizer, pretraining, fine-tuning, "
        "publishing.",
    )
    parser.add_argument("--version", action="version", version=f"nlp-ssl {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, stage in STAGES.items():
        p = sub.add_parser(
            name,
            help=stage.help,
            description=stage.help,
            epilog=f"Every recipe key with its default and help: nlp-ssl {name} --keys"
            + {"pretrain": " [objective=mlm]", "finetune": " [task=sentiment]"}.get(name, ""),
        )
        p.add_argument("recipe", nargs="?", help="YAML recipe file")
        p.add_argument("--keys", action="store_true", help="list every recipe key (default, help) and exit")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override recipe values")
        p.add_argument("--overwrite", action="store_true", help="replace a finished output_dir")
        p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        getattr(importlib.import_module(command.module), command.arguments)(p)
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may also come after flags (`nlp-ssl pretrain r.yaml --overwrite train.lr=1e-3`)
    args, rest = parser.parse_known_args(argv)
    if args.stage in COMMANDS:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        setup_logging(args.verbose)
        command = COMMANDS[args.stage]
        return _guarded(lambda: getattr(importlib.import_module(command.module), command.run)(args))
    stray = [a for a in rest if a.startswith("-") or "=" not in a]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + rest
    setup_logging(args.verbose)
    stage = STAGES[args.stage]

    if args.keys:
        return _guarded(lambda: print_keys(stage, args.overrides + ([args.recipe] if args.recipe else [])))
    if args.recipe is None:
        parser.error(f"{args.stage}: the recipe file is required")

    def run_stage():
        module = importlib.import_module(stage.module)
        cfg = load_recipe(getattr(module, stage.config), args.recipe, args.overrides)
        if args.print_config:
            print(dump_yaml(cfg), end="")
            return None
        from nlp_ssl.hub import publishing  # publishing is the CLI's to hand to a stage, not the stage's

        return module.run(cfg, overwrite=args.overwrite, **publishing(cfg))

    return _guarded(run_stage)


def print_keys(stage: Stage, choices: list[str]) -> None:
    """``--keys``: the recipe keys of a stage; for a stage whose recipe depends on its
    ``objective`` / ``task``, of the one named (``objective=mlm``) or of each in turn."""
    module = importlib.import_module(stage.module)
    config = getattr(module, stage.config)
    classes = {"": config}
    if stage.config == "recipe_class":
        from nlp_ssl.objectives import OBJECTIVES
        from nlp_ssl.tasks import TASKS

        key, names = ("objective", OBJECTIVES) if stage.module == "nlp_ssl.pretrain" else ("task", TASKS)
        wanted = [c.partition("=")[2] for c in choices if c.startswith(f"{key}=")] or list(names)
        classes = {f"{key}: {n}": config({key: n}, f"--keys {key}={n}") for n in wanted}
    for title, cls in classes.items():
        if title:
            print(f"# {title}")
        print("\n".join(describe_keys(cls)) + "\n")


def _guarded(action) -> int:
    """Run a stage: user errors become one ``error:`` line and a non-zero exit."""
    try:
        metrics = action()
    except NlpSslError as exc:
        close_bars()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        close_bars()
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if metrics:  # only the main process of a multi-process run returns them
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
