"""Publishing: ``nlp-ssl export RUN OUT_DIR`` writes a folder any ``transformers`` user can
load (weights as safetensors, config, tokenizer, generation config) with a model card
(``README.md``, built with ``huggingface_hub.ModelCard``) carrying the run's evaluation
results as ``model-index``. Nothing else leaves the run: no optimizer state, no pickles, no
machine paths, no tokens.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nlp_ssl.errors import DataError, OutputError

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"

# What a loadable model folder needs, and nothing more.
EXPORTED = (
    "*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "*.model", "chat_template.jinja",
)
# Keys that record where files were on the machine that wrote them.
PATH_KEYS = ("_name_or_path", "name_or_path")
METRIC_NAMES = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1_macro": ("f1", "F1 (macro)"),
    "precision_macro": ("precision", "Precision (macro)"),
    "recall_macro": ("recall", "Recall (macro)"),
    "loss": ("loss", "Cross-entropy loss"),
    "perplexity": ("perplexity", "Perplexity"),
    "bleu": ("bleu", "sacreBLEU"),
    "chrf": ("chrf", "chrF"),
    "rouge1": ("rouge1", "ROUGE-1"),
    "rouge2": ("rouge2", "ROUGE-2"),
    "rougeL": ("rougeL", "ROUGE-L"),
    "rougeLsum": ("rougeLsum", "ROUGE-Lsum"),
}
PIPELINE_TAGS = {"mlm": "fill-mask", "clm": "text-generation", "rtd": "feature-extraction",
                 "sentiment": "text-classification", "translation": "translation", "summarization": "summarization"}
OBJECTIVES = {"mlm": "Masked language modeling", "clm": "Causal language modeling",
              "rtd": "Replaced token detection"}
TASK_NAMES = {"sentiment": "Sentiment analysis", "translation": "Translation", "summarization": "Summarization"}
SEQ2SEQ = ("translation", "summarization")


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
    from nlp_ssl.embeddings import embedding_folder
    from nlp_ssl.models import resolve_model_dir
    from nlp_ssl.outputs import CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE

    if embedding_folder(checkpoint) is not None:
        raise DataError(f"checkpoint {checkpoint}: a skipgram/cbow run; export and push take transformer runs. Its "
                        "model/ folder is already a sentence-transformers folder: upload it with "
                        "huggingface_hub's upload_folder")
    model_dir = Path(resolve_model_dir(checkpoint, key="checkpoint"))
    if not model_dir.exists():
        raise DataError(f"checkpoint {checkpoint}: not a local folder (export works on local runs and model folders)")
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
            if "stage" not in record.info:
                record.info["stage"] = "pretrain" if "objective" in record.config else "finetune"
            break
    return record


def eval_results(record: RunRecord) -> list:
    """``model-index`` entries: every evaluation the run recorded, per split and metric."""
    from huggingface_hub import EvalResult

    from nlp_ssl.data import hub_id

    results = []
    m, cfg = record.metrics, record.config
    if record.stage == "finetune":
        data = cfg.get("data", {})
        splits = [("validation", data.get("validation") or data.get("train")), ("test", data.get("test"))]
        for split, spec in splits:
            if not spec:
                continue
            spec = _spec(spec)
            dataset = hub_id(spec) or "local data"
            split_name = spec.split if split == "test" or data.get("validation") else f"{spec.split} (held out)"
            for key, (metric_type, metric_name) in METRIC_NAMES.items():
                value = m.get(f"{split}_{key}")
                if value is None or key == "perplexity":
                    continue
                results.append(EvalResult(
                    task_type=PIPELINE_TAGS.get(record.kind, "text-classification"),
                    task_name=TASK_NAMES.get(record.kind, "Text classification"),
                    dataset_type=dataset, dataset_name=dataset, dataset_config=spec.config, dataset_split=split_name,
                    metric_type=metric_type, metric_name=metric_name, metric_value=round(float(value), 6),
                ))
    elif record.stage == "pretrain":
        validation = (cfg.get("data", {}).get("validation") or cfg.get("data", {}).get("datasets") or [{}])[0]
        spec = _spec(validation) if validation else None
        dataset = (hub_id(spec) if spec else None) or "local data"
        for key in ("loss", "perplexity"):
            value = m.get(f"eval_{key}")
            if value is None:
                continue
            metric_type, metric_name = METRIC_NAMES[key]
            results.append(EvalResult(
                task_type=PIPELINE_TAGS.get(record.kind, "fill-mask"),
                task_name=OBJECTIVES.get(record.kind, "Language modeling"),
                dataset_type=dataset, dataset_name=dataset, dataset_split=spec.split if spec else None,
                metric_type=metric_type, metric_name=metric_name, metric_value=round(float(value), 6),
            ))
    return results


def build_card(record: RunRecord, *, license: str = "other", language: str | list[str] | None = None,
               base_model: str | None = None, repo_id: str | None = None):
    """The model card of an exported folder (``huggingface_hub.ModelCard``)."""
    from huggingface_hub import ModelCard, ModelCardData

    from nlp_ssl import __version__
    from nlp_ssl.data import hub_id

    cfg = record.config
    kind = record.kind
    if language is None:
        data = cfg.get("data", {})
        language = [data["source_lang"], data["target_lang"]] if kind == "translation" else "en"
    name = repo_id.split("/")[-1] if repo_id else (record.run_dir or record.model_dir).name
    datasets = sorted({d for d in (hub_id(s) for s in _dataset_specs(cfg)) if d})
    results = eval_results(record)
    card_data = ModelCardData(
        model_name=name, license=license, language=language, library_name="transformers",
        pipeline_tag=PIPELINE_TAGS.get(kind), tags=["nlp-ssl", *([kind] if kind else [])],
        datasets=datasets or None, base_model=base_model, eval_results=results or None,
    )
    train = cfg.get("train", {})
    sized_by = "epochs" if train.get("epochs") is not None else "max_steps"
    hyper = [(k, train[k]) for k in (sized_by, "micro_batch_size", "grad_accum_steps", "lr",
                                     "scheduler", "warmup_ratio", "weight_decay", "max_grad_norm", "mixed_precision",
                                     "metric_for_best") if train.get(k) is not None]
    hyper += [(f"masking.{k}", v) for k, v in cfg.get("masking", {}).items()] if kind in ("mlm", "rtd") else []
    hyper += [(f"rtd.{k}", v) for k, v in cfg.get("rtd", {}).items()] if kind == "rtd" else []
    hyper += [("seed", cfg.get("seed"))] if "seed" in cfg else []
    m = record.metrics
    cost = "not recorded"
    if m.get("train_seconds") is not None:
        cost = (f"{m.get('steps')} optimizer steps, {m.get('tokens', 0):,} tokens, "
                f"{m['train_seconds'] / 60:.1f} minutes of training on {record.info.get('hardware', 'unknown hardware')}"
                f" ({m.get('processes', 1)} process{'es' if m.get('processes', 1) > 1 else ''})")
    versions = ", ".join(f"{k} {v}" for k, v in record.info.get("versions", {}).items()) or "not recorded"
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=name,
        summary=_summary(record, base_model),
        usage=_usage(kind, repo_id or "PATH_OR_REPO_ID"),
        results=[{"split": r.dataset_split, "dataset": r.dataset_name, "metric": r.metric_name,
                  "value": f"{r.metric_value:.4f}"} for r in results],
        training=_training(record),
        hyperparameters=hyper,
        cost=cost,
        versions=versions,
        limitations=_limitations(kind),
        nlp_ssl_version=record.info.get("versions", {}).get("nlp-ssl", __version__),
        command=_portable_command(record.info.get("command", [])),
        recipe=yaml.safe_dump(_portable(cfg), sort_keys=False).strip() if cfg else "# not an nlp-ssl run",
    )
    return card


def export(checkpoint: str, out_dir: str, *, overwrite: bool = False, license: str = "other",
           language: str | list[str] | None = None, base_model: str | None = None, repo_id: str | None = None) -> Path:
    """Write the Hub-ready folder for ``checkpoint`` at ``out_dir`` (atomically)."""
    from nlp_ssl.outputs import staged_output

    record = find_run(checkpoint)
    files = export_files(record.model_dir)
    if not any(f.endswith(".safetensors") for f in files):
        raise DataError(f"checkpoint {record.model_dir}: no *.safetensors weights (pickled weights are not exported; "
                        "load the model and save_pretrained(..., safe_serialization=True) first)")
    card = build_card(record, license=license, language=language, base_model=base_model, repo_id=repo_id)
    out = Path(out_dir).absolute()
    if record.run_dir is not None and out.is_relative_to(record.run_dir):
        raise OutputError(f"export folder {out} lies inside the run {record.run_dir}; choose a folder outside it")
    with staged_output(out, overwrite) as staging:
        for name in files:
            shutil.copy2(record.model_dir / name, staging / name)
            if name.endswith(".json"):
                _drop_path_keys(staging / name)
        card.save(str(staging / "README.md"))
        leaks = scan_for_leaks(staging)
        if leaks:
            raise OutputError(f"export would publish {leaks[0]}; nothing was written")
    return out


def export_files(model_dir: Path) -> list[str]:
    """The files of ``model_dir`` an export copies (and so would upload)."""
    return sorted(p.name for p in model_dir.iterdir()
                  if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in EXPORTED))


def scan_for_leaks(folder: Path) -> list[str]:
    """Text files that hold a Hub token or an absolute path of this machine."""
    secrets = [v for v in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")) if v]
    home = str(Path.home())
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix in (".safetensors", ".model"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(s in text for s in secrets) or re.search(r"\bhf_[A-Za-z0-9]{30,}\b", text):
            found.append(f"a Hub token in {path.name}")
        elif (home != "/" and home in text) or re.search(r"(?<![\w.])/(?:tmp|work|home|root|Users)/\S", text):
            found.append(f"a local path in {path.name}")
    return found


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


def _drop_path_keys(path: Path) -> None:
    """Remove ``PATH_KEYS`` at any depth (an encoder-decoder's sub-configs carry their own)."""

    def strip(value) -> bool:
        if isinstance(value, dict):
            hit = any([value.pop(k, None) is not None for k in PATH_KEYS])
            return any([strip(v) for v in value.values()]) or hit
        return isinstance(value, list) and any([strip(v) for v in value])

    data = json.loads(path.read_text(encoding="utf-8"))
    if strip(data):
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
    args = [a if not os.path.isabs(a) else f"<local>/{Path(a).name}" for a in argv[1:]]
    return " ".join(["nlp-ssl", *args])


def _summary(record: RunRecord, base_model: str | None) -> str:
    m, cfg, kind = record.metrics, record.config, record.kind
    params = f"{m['parameters'] / 1e6:.1f}M-parameter " if m.get("parameters") else ""
    arch = json.loads((record.model_dir / "config.json").read_text(encoding="utf-8")).get("architectures", ["?"])[0]
    if record.stage == "pretrain":
        what = {"mlm": "masked-language-model (BERT-style)", "clm": "next-token language model (GPT-style)",
                "rtd": "encoder pretrained by replaced-token detection (ELECTRA-style discriminator)"}.get(kind, "model")
        start = f" continued from `{_portable(cfg['init_from'])}`" if cfg.get("init_from") else " trained from scratch"
        return f"A {params}{what} `{arch}`{start} with nlp-ssl's self-supervised pretraining."
    if record.stage == "finetune" and kind in SEQ2SEQ:
        if cfg.get("from_scratch"):
            start = "fresh weights (no pretraining)"
        else:
            enc, dec = (_pushed_repo(cfg[k]) or _portable(cfg[k]) for k in ("encoder", "decoder"))
            start = f"the encoder `{enc}` and the decoder `{dec}` (warm-started, cross-attention added)"
        data = cfg.get("data", {})
        what = (f"{data.get('source_lang')} -> {data.get('target_lang')} translation" if kind == "translation"
                else "summarization")
        return f"A {params}`{arch}` fine-tuned for {what} from {start}."
    if record.stage == "finetune":
        start = "fresh weights (no pretraining)" if cfg.get("from_scratch") else f"`{base_model or _portable(cfg.get('init'))}`"
        labels = ", ".join(json.loads((record.model_dir / "config.json").read_text())
                           .get("id2label", {}).values())
        return f"A {params}`{arch}` fine-tuned for {kind} classification (labels: {labels}) from {start}."
    return f"A `{arch}` model exported with nlp-ssl."


def _usage(kind: str | None, where: str) -> str:
    if kind in SEQ2SEQ:
        text = "A man is riding a bicycle down the street." if kind == "translation" else "#Person1#: Hi! ..."
        return (f'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
                f'model = AutoModelForSeq2SeqLM.from_pretrained("{where}")  # beam search etc. in generation_config.json\n'
                f'inputs = tokenizer(["{text}"], return_tensors="pt")\n'
                'print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))')
    if kind == "sentiment":
        return (f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{where}")\n'
                'classify("a gripping, beautifully shot film")')
    if kind == "clm":
        return (f'from transformers import pipeline\n\ngenerate = pipeline("text-generation", model="{where}")\n'
                'generate("The movie was", max_new_tokens=20)')
    if kind == "rtd":
        return (f'from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
                f'# the encoder body: fine-tune it with a new head (or AutoModel for its hidden states)\n'
                f'model = AutoModelForSequenceClassification.from_pretrained("{where}", num_labels=2)')
    return (f'from transformers import AutoModelForMaskedLM, AutoTokenizer\n\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
            f'model = AutoModelForMaskedLM.from_pretrained("{where}")  # or fine-tune it: AutoModelForSequenceClassification')


def _training(record: RunRecord) -> str:
    cfg, m = record.config, record.metrics
    if record.stage == "pretrain":
        objective = {"mlm": "masked-LM", "clm": "next-token LM",
                     "rtd": "replaced-token detection (generator masked-LM + per-token discriminator)"}.get(record.kind)
        return (f"Objective: {objective} on packed blocks of "
                f"{cfg.get('data', {}).get('block_size')} tokens; final validation loss "
                f"{m.get('eval_loss', float('nan')):.4f}.")
    if record.stage == "finetune":
        best = f"; the best validation {cfg.get('train', {}).get('metric_for_best')} was reached at step " \
               f"{m.get('best_step')} and that model is the one published" if m.get("best_step") else ""
        what = "source/target pairs" if record.kind in SEQ2SEQ else "labelled examples"
        return f"Fine-tuned on {m.get('train_examples')} {what} for {m.get('steps')} steps{best}."
    return "Not an nlp-ssl run: no training record."


def _limitations(kind: str | None) -> str:
    base = ("A small model trained on a small budget: it reflects the biases and the domain of its training text "
            "(see the datasets above) and is meant for experiments and as a starting point, not for decisions about "
            "people.")
    if kind == "sentiment":
        return base + " Sentiment labels are binary polarity of short English movie-review text; other domains, " \
                      "sarcasm and mixed opinions are out of scope."
    return base


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run folder (pretrain or finetune), its model/ folder, or a checkpoint")
    p.add_argument("out_dir", help="the folder to write (model files + README.md model card)")
    p.add_argument("--license", default="other", help="license identifier for the card (default: other)")
    p.add_argument("--language", default=None,
                   help="language code(s) for the card (default: the translation pair, else en)")
    p.add_argument("--base-model", default=None, help="Hub id of the model this one was trained from")
    p.add_argument("--repo-id", default=None, help="the Hub repo it is meant for (names the card and its snippets)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")


def run_export(args: argparse.Namespace) -> dict:
    out = export(args.checkpoint, args.out_dir, overwrite=args.overwrite, license=args.license,
                 language=args.language, base_model=args.base_model, repo_id=args.repo_id)
    return {"exported": str(out), "files": sorted(p.name for p in out.iterdir())}


@dataclass(kw_only=True)
class HubOptions:
    """Recipe keys shared by every training stage: push the result to the Hub at the end."""

    push_to_hub: bool = False
    """After the run: export it (model card included) and push it as one commit."""
    hub_model_id: str | None = None
    """NAMESPACE/NAME of the Hub repo (created if missing)."""
    hub_private: bool = False
    hub_checkpoint_branch: str | None = None
    """Also push every checkpoint, to this branch, tagged ``step-N`` (e.g. ``checkpoints``)."""

    def check_hub_options(self) -> None:
        from nlp_ssl.errors import ConfigError

        if (self.push_to_hub or self.hub_checkpoint_branch) and not self.hub_model_id:
            raise ConfigError("'push_to_hub' and 'hub_checkpoint_branch' need 'hub_model_id' (NAMESPACE/NAME)")
        if self.hub_model_id is not None and (self.hub_model_id.count("/") != 1 or not all(self.hub_model_id.split("/"))):
            raise ConfigError(f"'hub_model_id' must be NAMESPACE/NAME, got {self.hub_model_id!r}")

    @property
    def pushes(self) -> bool:
        return self.push_to_hub or self.hub_checkpoint_branch is not None


def refuse_offline_push(options: HubOptions) -> None:
    """A recipe that will push must not find out after hours of training that it cannot."""
    if options.pushes and _offline():
        raise PublishError("push_to_hub is set but HF_HUB_OFFLINE is too: unset one of them "
                           "(checked before training; nothing was done)")


def push_run(options: HubOptions, run_dir: Path) -> dict:
    """The end-of-run push; a failure keeps the finished run and says how to push it later."""
    try:
        return push(str(run_dir), options.hub_model_id, private=options.hub_private)
    except PublishError as exc:
        raise PublishError(f"the run finished and is saved in {run_dir}, but {exc}; push it later with "
                           f"nlp-ssl push {run_dir} --repo-id {options.hub_model_id}") from None


def after_run(options: HubOptions, run_dir: Path, is_main_process: bool) -> dict:
    """What every training stage does once its files are written: push the run if the recipe
    says so, and return its metrics (the main process's; the others return nothing)."""
    if not is_main_process:
        return {}
    if options.push_to_hub:
        push_run(options, run_dir)
    from nlp_ssl.outputs import read_metrics

    return read_metrics(run_dir)


def checkpoint_pusher(options: HubOptions):
    """``fit``'s ``on_checkpoint`` hook pushing each checkpoint's model to the checkpoint branch."""
    if not options.hub_checkpoint_branch:
        return None

    def on_checkpoint(path: Path, step: int) -> None:
        push(str(path / "model"), options.hub_model_id, private=options.hub_private,
             revision=options.hub_checkpoint_branch, tag=f"step-{step}",
             message=f"Checkpoint at step {step}")

    return on_checkpoint


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


class PublishError(OutputError):
    """A push did not complete; local files are untouched."""


PUSH_RECORD = "pushed.json"


def push_record(run_dir: Path) -> dict | None:
    """What the last push of ``run_dir`` recorded (repo_id, revision, commit...), or None."""
    path = Path(run_dir) / PUSH_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
RETRIES = 3


def push(checkpoint: str, repo_id: str, *, private: bool = False, revision: str | None = None,
         create_pr: bool = False, tag: str | None = None, message: str | None = None, license: str = "other",
         language: str | list[str] | None = None, base_model: str | None = None) -> dict:
    """Export ``checkpoint`` and upload it as one commit to ``repo_id`` on the Hub.

    The token comes from ``HF_TOKEN`` or ``hf auth login`` (never from a file of ours, never
    logged); the endpoint from ``HF_ENDPOINT``. Transient failures (connection, 429, 5xx) are
    retried; any failure leaves the local run as it was and says what to do next.
    """
    import tempfile

    if _offline():
        raise PublishError("push: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it to push "
                           "(nothing was exported or uploaded)")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"push: --repo-id must be NAMESPACE/NAME, got {repo_id!r}")
    from huggingface_hub import HfApi

    record = find_run(checkpoint)
    base_model = base_model or _pushed_base_model(record)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"))
    with tempfile.TemporaryDirectory(prefix="nlp-ssl-push-") as tmp:
        folder = export(checkpoint, str(Path(tmp) / "export"), license=license, language=language,
                        base_model=base_model, repo_id=repo_id)
        summary = message or _commit_message(record)
        _with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"),
                      "creating the repo", repo_id)
        if revision and revision != "main":
            _with_retries(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), "creating the branch",
                          repo_id)
        info = _with_retries(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                                       commit_message=summary, revision=revision,
                                                       create_pr=create_pr), "uploading", repo_id)
        if tag:
            _with_retries(lambda: api.create_tag(repo_id, tag=tag, revision=info.oid, exist_ok=True), "tagging",
                          repo_id)
    result = {"repo_id": repo_id, "endpoint": api.endpoint, "revision": revision or "main", "commit": info.oid,
              "commit_url": info.commit_url, "pr_url": info.pr_url, "tag": tag}
    if record.run_dir is not None:  # lets a model trained from this one name it as base_model
        from nlp_ssl.outputs import write_json

        write_json(record.run_dir / PUSH_RECORD, result)
    return result


def _pushed_base_model(record: RunRecord) -> str | list[str] | None:
    """The Hub repo(s) of the checkpoint(s) this run started from, if those runs were pushed
    (an encoder-decoder has two: the encoder's and the decoder's)."""
    cfg = record.config
    if cfg.get("from_scratch"):
        return None
    if cfg.get("task") in SEQ2SEQ:
        found = [_pushed_repo(cfg[k]) for k in ("encoder", "decoder") if cfg.get(k)]
        return list(dict.fromkeys(r for r in found if r)) or None
    start = cfg.get("init") or cfg.get("init_from")
    return _pushed_repo(start) if start else None


def _pushed_repo(start: str) -> str | None:
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


def _commit_message(record: RunRecord) -> str:
    m = record.metrics
    if record.stage == "finetune" and m.get("test_accuracy") is not None:
        return f"Upload {record.kind} model (test accuracy {m['test_accuracy']:.4f}) trained with nlp-ssl"
    if record.stage == "pretrain" and m.get("eval_loss") is not None:
        return f"Upload {record.kind} pretrained model (eval loss {m['eval_loss']:.4f}) trained with nlp-ssl"
    return "Upload model exported with nlp-ssl"


def _with_retries(action, what: str, repo_id: str):
    """Run a Hub call; retry what may pass on a second try, explain what will not."""
    import time

    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, RETRIES + 1):
        try:
            return action()
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise PublishError(f"push to {repo_id}: {what} was refused ({status}): set HF_TOKEN to a token with "
                                   "write access or run `hf auth login`; local files are intact") from None
            if status is not None and status < 500 and status != 429:
                first = str(exc).splitlines()[0][:200]
                raise PublishError(f"push to {repo_id}: {what} failed ({status}: {first}); local files are intact"
                                   ) from None
            error = f"HTTP {status}"
        except (TypeError, ValueError, AttributeError, KeyError):
            raise  # a bug, not the network
        except Exception as exc:  # connection refused, DNS, timeouts (httpx / OSError classes)
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if attempt < RETRIES:
            logger.warning("push to %s: %s failed (%s); retrying (%d/%d)", repo_id, what, error, attempt, RETRIES - 1)
            time.sleep(float(os.environ.get("NLP_SSL_PUSH_RETRY_WAIT", "2")) * 2 ** (attempt - 1))
    raise PublishError(f"push to {repo_id}: {what} failed {RETRIES} times ({error}); local files are intact, "
                       "rerun the same nlp-ssl push command when the Hub is reachable")


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run folder (pretrain or finetune), its model/ folder, or a checkpoint")
    p.add_argument("--repo-id", required=True, help="NAMESPACE/NAME on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--tag", default=None, help="tag the commit (e.g. step-1000)")
    p.add_argument("--message", default=None, help="commit message (default: what was trained, with its score)")
    p.add_argument("--license", default="other")
    p.add_argument("--language", default=None,
                   help="language code(s) for the card (default: the translation pair, else en)")
    p.add_argument("--base-model", default=None, help="Hub id of the model this one was trained from "
                   "(default: found when that run was pushed with nlp-ssl)")


def run_push(args: argparse.Namespace) -> dict:
    return push(args.checkpoint, args.repo_id, private=args.private, revision=args.revision,
                create_pr=args.create_pr, tag=args.tag, message=args.message, license=args.license,
                language=args.language, base_model=args.base_model)
