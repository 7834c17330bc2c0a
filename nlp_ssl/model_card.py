"""Model cards: what a run (or any model folder) records about itself, turned into a
``huggingface_hub.ModelCard`` with the run's evaluation results as ``model-index``. The
task- and objective-specific wording comes from their descriptors (``nlp_ssl.tasks``,
``nlp_ssl.objectives``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nlp_ssl.errors import DataError
from nlp_ssl.metrics import REPORTED
from nlp_ssl.run_format import upgrade_run_info

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"

PUSH_RECORD = "pushed.json"


@dataclass
class RunRecord:
    """A model folder and what its run left beside it (all empty for a bare folder)."""

    model_dir: Path
    run_dir: Path | None = None
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def stage(self) -> str | None:
        return self.info.get("stage")

    @property
    def kind(self) -> str | None:
        """``mlm``, ``clm`` or the fine-tuning task."""
        return self.config.get("objective") or self.config.get("task")


def find_run(checkpoint: str) -> RunRecord:
    """The model folder behind ``checkpoint`` (a run, its ``model/``, a checkpoint, any
    model folder) and, when it came from an nlp-ssl run, that run's recipe and metrics."""
    from nlp_ssl.head_model import head_folder
    from nlp_ssl.models import read_config_json, resolve_model_dir
    from nlp_ssl.outputs import CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE
    from nlp_ssl.vectors import vector_folder

    head = head_folder(checkpoint)
    if head is not None:  # a baseline run's head: the run is the folder above it
        record = RunRecord(head)
        run = head.parent
        if (run / CONFIG_FILE).is_file() and (run / RUN_INFO_FILE).is_file():
            record.run_dir = run
            record.config = yaml.safe_load((run / CONFIG_FILE).read_text(encoding="utf-8")) or {}
            record.info = json.loads((run / RUN_INFO_FILE).read_text(encoding="utf-8"))
            if (run / METRICS_FILE).is_file():
                record.metrics = json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))
        return record
    if vector_folder(checkpoint) is not None:
        raise DataError(
            f"checkpoint {checkpoint}: a skipgram/cbow run; export and push take transformer runs. Its "
            "model/ folder is already a sentence-transformers folder: upload it with "
            "huggingface_hub's upload_folder"
        )
    model_dir = Path(resolve_model_dir(checkpoint, key="checkpoint"))
    if not model_dir.exists():
        raise DataError(f"checkpoint {checkpoint}: not a local folder (export works on local runs and model folders)")
    read_config_json(model_dir, "checkpoint")
    record = RunRecord(model_dir)
    for candidate in (model_dir.parent, model_dir.parent.parent.parent):  # run/model, run/checkpoints/step-N/model
        if (candidate / CONFIG_FILE).is_file():
            record.run_dir = candidate
            record.config = yaml.safe_load((candidate / CONFIG_FILE).read_text(encoding="utf-8")) or {}
            info = candidate / RUN_INFO_FILE
            record.info = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
            metrics = candidate / METRICS_FILE
            if metrics.is_file() and model_dir.parent == candidate:  # a checkpoint's are not the final ones
                record.metrics = json.loads(metrics.read_text(encoding="utf-8"))
            record.info = upgrade_run_info(record.info, record.config)
            trained_for = descriptor(record)
            if trained_for is not None:
                from nlp_ssl.config import upgrade
                from nlp_ssl.run_files import saved_format

                record.config = upgrade(trained_for.config, record.config, saved_format(candidate))
            break
    return record


def eval_results(record: RunRecord) -> list:
    """``model-index`` entries: every evaluation the run recorded, per split and metric."""
    from huggingface_hub import EvalResult

    from nlp_ssl.data import hub_id

    results = []
    m, cfg = record.metrics, record.config
    trained_for = descriptor(record)
    if record.stage in ("finetune", "baseline"):
        data = cfg.get("data", {})
        splits = [("validation", data.get("validation") or data.get("train")), ("test", data.get("test"))]
        for split, spec in splits:
            if not spec:
                continue
            spec = _spec(spec)
            dataset = hub_id(spec) or "local data"
            held = None if split == "test" or data.get("validation") else data.get("validation_fraction", 0.1)
            split_name = _split_name(spec, held, "examples")
            for key, shown in REPORTED.items():
                value = m.get(f"{split}_{key}")
                if value is None or key == "perplexity":
                    continue
                results.append(
                    EvalResult(
                        task_type=trained_for.pipeline_tag if trained_for else "text-classification",
                        task_name=trained_for.title if trained_for else "Text classification",
                        dataset_type=dataset,
                        dataset_name=dataset,
                        dataset_config=spec.config,
                        dataset_split=split_name,
                        metric_type=shown.type,
                        metric_name=shown.name,
                        metric_value=round(float(value), 6),
                        metric_args=shown.args,
                    )
                )
    elif record.stage == "pretrain":
        data = cfg.get("data", {})
        validation = (data.get("validation") or data.get("datasets") or [{}])[0]
        spec = _spec(validation) if validation else None
        # without validation sets, a seeded share of the training blocks was held out
        held = None if data.get("validation") else data.get("validation_fraction", 0.01)
        dataset = (hub_id(spec) if spec else None) or "local data"
        for key in ("loss", "perplexity"):
            value = m.get(f"eval_{key}")
            if value is None:
                continue
            shown = REPORTED[key]
            results.append(
                EvalResult(
                    task_type=trained_for.pipeline_tag if trained_for else "fill-mask",
                    task_name=trained_for.title if trained_for else "Language modeling",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=_split_name(spec, held, "blocks") if spec else None,
                    metric_type=shown.type,
                    metric_name=shown.name,
                    metric_value=round(float(value), 6),
                )
            )
    return results


def _split_name(spec, held_out: float | None, unit: str) -> str:
    """The split as it was really scored: a held-out share of it, or only its first rows."""
    name = spec.split
    if spec.max_rows:
        name += f" (first {spec.max_rows} rows)"
    if held_out is not None:
        name += f" (held out: a seeded {held_out:.0%} of its {unit})"
    return name


def build_card(
    record: RunRecord,
    *,
    license: str = "other",
    language: str | list[str] | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
):
    """The model card of an exported folder (``huggingface_hub.ModelCard``)."""
    from huggingface_hub import ModelCard, ModelCardData

    from nlp_ssl import __version__
    from nlp_ssl.data import hub_id

    cfg = record.config
    kind = record.kind
    trained_for = descriptor(record)
    if language is None:
        language = (getattr(trained_for, "languages", None) or (lambda recipe: "en"))(cfg)
    name = repo_id.split("/")[-1] if repo_id else (record.run_dir or record.model_dir).name
    datasets = sorted({d for d in (hub_id(s) for s in _dataset_specs(cfg)) if d})
    results = eval_results(record)
    card_data = ModelCardData(
        model_name=name,
        license=license,
        language=language,
        library_name="transformers",
        pipeline_tag=trained_for.pipeline_tag if trained_for else None,
        tags=["nlp-ssl", *([kind] if kind else [])],
        datasets=datasets or None,
        base_model=base_model,
        eval_results=results or None,
    )
    train = cfg.get("train", {})
    sized_by = "epochs" if train.get("epochs") is not None else "max_steps"
    hyper = [
        (k, train[k])
        for k in (
            sized_by,
            "micro_batch_size",
            "grad_accum_steps",
            "lr",
            "scheduler",
            "warmup_ratio",
            "weight_decay",
            "max_grad_norm",
            "mixed_precision",
            "metric_for_best",
        )
        if train.get(k) is not None
    ]
    for section in getattr(trained_for, "card_sections", ()):
        hyper += [(f"{section}.{k}", v) for k, v in cfg.get(section, {}).items()]
    hyper += [("seed", cfg.get("seed"))] if "seed" in cfg else []
    m = record.metrics
    cost = "not recorded"
    if m.get("train_seconds") is not None:
        cost = (
            f"{m.get('steps')} optimizer steps, {m.get('tokens', 0):,} tokens, "
            f"{m['train_seconds'] / 60:.1f} minutes of training on {record.info.get('hardware', 'unknown hardware')}"
            f" ({m.get('processes', 1)} process{'es' if m.get('processes', 1) > 1 else ''})"
        )
    versions = ", ".join(f"{k} {v}" for k, v in record.info.get("versions", {}).items()) or "not recorded"
    where = repo_id or "PATH_OR_REPO_ID"
    if record.stage != "baseline":
        parts = {
            "summary": _summary(record, trained_for, base_model),
            "usage": _usage(trained_for, where),
            "training": _training(record, trained_for),
            "hyperparameters": hyper,
            "cost": cost,
            "limitations": _limitations(trained_for),
        }
    else:
        from nlp_ssl import head_card

        card_data.library_name = "sklearn"
        card_data.tags += ["skops", "sentence-transformers", "text-classification"]
        parts = {
            "summary": head_card.summary(record),
            "usage": head_card.usage(record, where),
            "training": head_card.training(record),
            "hyperparameters": head_card.hyperparameters(record),
            "cost": head_card.cost(record),
            "limitations": f"{head_card.LIMITATIONS} {_limitations(None)}",
        }
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=name,
        summary=parts["summary"],
        usage=parts["usage"],
        results=[
            {
                "split": r.dataset_split,
                "dataset": r.dataset_name,
                "metric": r.metric_name,
                "value": f"{r.metric_value:.4f}",
            }
            for r in results
        ],
        training=parts["training"],
        hyperparameters=parts["hyperparameters"],
        cost=parts["cost"],
        versions=versions,
        limitations=parts["limitations"],
        nlp_ssl_version=record.info.get("versions", {}).get("nlp-ssl", __version__),
        command=_portable_command(record.info.get("command", [])),
        recipe=yaml.safe_dump(_portable(cfg), sort_keys=False).strip() if cfg else "# not an nlp-ssl run",
    )
    return card


def _spec(raw: dict):
    from nlp_ssl.data import DatasetSpec

    return DatasetSpec(**{k: v for k, v in raw.items() if k in DatasetSpec.__dataclass_fields__})


def _dataset_specs(cfg: dict) -> list:
    """Every dataset a recipe names: pretraining lists, fine-tuning train/validation/test."""
    data = cfg.get("data", {})
    raw = []
    for key in ("datasets", "validation", "train", "test"):
        value = data.get(key)
        raw += value if isinstance(value, list) else [value]
    return [_spec(r) for r in raw if isinstance(r, dict)]


def _portable(value):
    """The recipe without this machine's absolute paths (kept: their last part)."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return f"<local>/{Path(value).name}"
    return value


def _portable_command(argv: list[str]) -> str:
    if not argv:
        return "nlp-ssl"
    return " ".join(["nlp-ssl", *(_portable_arg(a) for a in argv[1:])])


def _portable_arg(arg: str) -> str:
    """A command-line word without this machine's paths: ``/abs/run`` and ``key=/abs/run``
    keep only the last part, as the recipe does."""
    key, eq, value = arg.partition("=")
    if eq and not key.startswith("-") and os.path.isabs(value):
        return f"{key}=<local>/{Path(value).name}"
    return f"<local>/{Path(arg).name}" if os.path.isabs(arg) else arg


def descriptor(record: RunRecord):
    """The ``FinetuneTask`` or ``Objective`` a run was trained for (None for a bare folder)."""
    from nlp_ssl.objectives import OBJECTIVES, get_objective
    from nlp_ssl.tasks import TASKS, get_task

    if record.stage in ("finetune", "baseline") and record.kind in TASKS:
        return get_task(record.kind)
    if record.stage == "pretrain" and record.kind in OBJECTIVES:
        return get_objective(record.kind)
    return None


def _summary(record: RunRecord, trained_for, base_model: str | None) -> str:
    m, cfg = record.metrics, record.config
    params = f"{m['parameters'] / 1e6:.1f}M-parameter " if m.get("parameters") else ""
    model_config = json.loads((record.model_dir / "config.json").read_text(encoding="utf-8"))
    arch = model_config.get("architectures", ["?"])[0]
    if record.stage == "pretrain":
        what = trained_for.what if trained_for else "model"
        start = f" continued from `{_portable(cfg['init'])}`" if cfg.get("init") else " trained from scratch"
        return f"A {params}{what} `{arch}`{start} with nlp-ssl's self-supervised pretraining."
    if record.stage == "finetune" and trained_for is not None:
        first, *more = trained_for.starts_from
        if cfg.get("from_scratch") is True or not cfg.get(first):
            start = "fresh weights" if cfg.get("init_embeddings") else "fresh weights (no pretraining)"
        elif cfg.get("from_scratch") == "decoder":
            shown = pushed_repo(cfg[first]) or _portable(cfg[first])
            start = f"{trained_for.starts_from[first]} `{shown}` and a fresh decoder"
        elif not more:
            start = f"`{base_model or _portable(cfg[first])}`"
        else:  # a later start defaults to the first (an encoder-decoder's decoder to its encoder)
            starts = {k: cfg.get(k) or cfg[first] for k in trained_for.starts_from}
            start = (
                " and ".join(
                    f"{trained_for.starts_from[k]} `{pushed_repo(v) or _portable(v)}`" for k, v in starts.items()
                )
                + trained_for.warm_start_note
            )
        if cfg.get("init_embeddings"):
            start += f", token embeddings from the word2vec run `{_portable(cfg['init_embeddings'])}`"
        return f"A {params}`{arch}` fine-tuned for {trained_for.purpose(cfg, model_config)} from {start}."
    return f"A `{arch}` model exported with nlp-ssl."


def _usage(trained_for, where: str) -> str:
    if trained_for is None:
        return (
            f"from transformers import AutoModel, AutoTokenizer\n\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
            f'model = AutoModel.from_pretrained("{where}")'
        )
    return trained_for.usage(where)


def _training(record: RunRecord, trained_for) -> str:
    cfg, m = record.config, record.metrics
    if record.stage == "pretrain":
        data = cfg.get("data", {})
        long = data.get("long_blocks")
        blocks = f"{data.get('block_size')} tokens"
        if long:
            short, full = data.get("block_size"), long["block_size"]
            nan = float("nan")
            blocks += (
                f", then blocks of {full} tokens for the last {long['fraction']:.0%} of the steps (validation "
                f"loss {m.get(f'eval_loss_at_{short}', nan):.4f} at {short} tokens, "
                f"{m.get(f'eval_loss_at_{full}', nan):.4f} at {full})"
            )
        return (
            f"Objective: {trained_for.training if trained_for else record.kind} on packed blocks of "
            f"{blocks}; final validation loss {m.get('eval_loss', float('nan')):.4f}."
        )
    if record.stage == "finetune":
        best = (
            f"; the best validation {cfg.get('train', {}).get('metric_for_best')} was reached at step "
            f"{m.get('best_step')} and that model is the one published"
            if m.get("best_step")
            else ""
        )
        what = trained_for.examples if trained_for else "examples"
        return f"Fine-tuned on {m.get('train_examples')} {what} for {m.get('steps')} steps{best}."
    return "Not an nlp-ssl run: no training record."


def _limitations(trained_for) -> str:
    base = (
        "A small model trained on a small budget: it reflects the biases and the domain of its training text "
        "(see the datasets above) and is meant for experiments and as a starting point, not for decisions about "
        "people."
    )
    extra = getattr(trained_for, "limitations", "")
    return f"{base} {extra}" if extra else base


def push_record(run_dir: Path) -> dict | None:
    """What the last push of ``run_dir`` recorded (repo_id, revision, commit...), or None."""
    path = Path(run_dir) / PUSH_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def pushed_base_model(record: RunRecord) -> str | list[str] | None:
    """The Hub repo(s) of the checkpoint(s) this run started from, if those runs were pushed
    (an encoder-decoder has two: the encoder's and the decoder's)."""
    cfg = record.config
    trained_for = descriptor(record)
    keys = trained_for.pretrained_starts(cfg) if record.stage == "finetune" and trained_for else ["init"]
    if not keys:
        return None
    found = [pushed_repo(cfg[k]) for k in keys if cfg.get(k)]
    found = list(dict.fromkeys(r for r in found if r))
    if len(keys) > 1:
        return found or None
    return found[0] if found else None


def pushed_repo(start: str) -> str | None:
    from nlp_ssl.models import resolve_model_dir

    try:
        folder = Path(resolve_model_dir(start))
    except Exception:
        return None
    if not folder.exists():
        return start  # a Hub id
    for run in (folder, folder.parent, folder.parent.parent.parent):
        if (record := push_record(run)) is not None:
            return record["repo_id"]
    return None
