"""``nlp-ssl pipeline RECIPE.yaml``: tokenizer -> pretraining -> fine-tuning, one run folder.

A pipeline recipe holds the recipes of its stages (without ``output_dir``: each stage writes
to ``<run_dir>/<stage>``). Pretraining stages use the pipeline's tokenizer unless they name
one; a fine-tuning stage's ``init`` / ``init_decoder`` may name a pretraining stage.

Each stage is validated up front (a typo in the last stage fails before the first starts).
A stage whose output is finished for the same resolved recipe, and whose inputs did not
change in this invocation, is skipped; a stage interrupted for the same recipe is resumed
from its last checkpoint; anything else runs afresh, and so does everything downstream of it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlp_ssl.config import check_name, from_dict
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub_options import hub_offline
from nlp_ssl.outputs import (
    CONFIG_FILE,
    METRICS_FILE,
    check_run_dir,
    is_finished,
    locks_output,
    mark_run_dir,
    read_metrics,
    write_json,
)
from nlp_ssl.tasks import TASKS, get_task

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


@dataclass
class PipelineData:
    """Data written once for the stages of a pipeline; a stage's own keys win over these."""

    unlabelled: list[dict[str, Any]] = field(default_factory=list)
    """Datasets of unlabelled text (``name`` or ``files``, ``text_column``...): the tokenizer's
    ``datasets`` and every pretraining stage's ``data.datasets``, unless the stage gives them."""
    labelled: dict[str, Any] | None = None
    """A classification ``data`` section (``train``, ``validation``, ``test``, ``label_column``,
    ``labels``...): the ``data`` of every sentiment fine-tuning and baseline stage, under the
    keys the stage sets itself (``max_length``, ``train_samples``...)."""


@dataclass
class PipelineConfig:
    """Recipe of the ``pipeline`` stage: a run folder and the recipes of its stages."""

    run_dir: str
    data: PipelineData = field(default_factory=PipelineData)
    tokenizer: dict[str, Any] | None = None
    """A ``tokenizer`` recipe without ``output_dir`` (written to ``<run_dir>/tokenizer``)."""
    pretrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Name -> ``pretrain`` recipe without ``output_dir`` (``<run_dir>/pretrain-<name>``);
    ``tokenizer`` defaults to the pipeline's."""
    finetune: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Name -> ``finetune`` recipe without ``output_dir`` (``<run_dir>/finetune-<name>``);
    ``init`` / ``init_decoder`` may be the name of a pretraining stage."""
    baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Name -> ``baseline`` recipe without ``output_dir`` (``<run_dir>/baseline-<name>``):
    labels-only classical models (TF-IDF + logistic regression)."""
    push_to_hub: bool = False
    """Push every pretraining and fine-tuning stage when it finishes, to
    ``<hub_namespace>/<run folder name>-<stage>`` unless the stage names its own
    ``hub_model_id``; a fine-tuned model's card links the pushed checkpoint it started from
    (``base_model``)."""
    hub_namespace: str | None = None
    """User or organisation the stages are pushed under."""
    hub_private: bool = False

    def __post_init__(self):
        if self.push_to_hub and (not self.hub_namespace or "/" in self.hub_namespace):
            raise ConfigError(
                f"'push_to_hub' needs 'hub_namespace' (a user or organisation name), got {self.hub_namespace!r}"
            )
        if self.tokenizer is None and not self.pretrain and not self.finetune and not self.baseline:
            raise ConfigError("a pipeline needs at least one stage (tokenizer, pretrain, finetune or baseline)")
        for kind in ("pretrain", "finetune", "baseline"):
            for name in getattr(self, kind):
                check_name(name, f"{kind}.{name}")
        for section in (
            self.tokenizer or {},
            *self.pretrain.values(),
            *self.finetune.values(),
            *self.baseline.values(),
        ):
            if "output_dir" in section:
                raise ConfigError("stages of a pipeline write under 'run_dir': remove their 'output_dir'")
        plan(self, source="pipeline")  # every stage's recipe is checked now, before anything runs


@dataclass
class PlannedStage:
    name: str
    """``tokenizer``, ``pretrain-<name>`` or ``finetune-<name>``."""
    module: str
    config: object
    needs: list[str]
    """Names of the stages whose output this one reads."""


def plan(cfg: PipelineConfig, source: str = "<pipeline>") -> list[PlannedStage]:
    """Every stage's typed config, in run order, with output folders and references filled in."""
    from nlp_ssl.baselines import BaselineConfig
    from nlp_ssl.finetune import recipe_class
    from nlp_ssl.hub_options import HubOptions
    from nlp_ssl.pretrain import recipe_class as pretrain_class
    from nlp_ssl.tokenizer import TokenizerConfig

    run_dir = Path(cfg.run_dir)
    stages: list[PlannedStage] = []
    shared = cfg.data
    if cfg.tokenizer is not None:
        unlabelled = {"datasets": shared.unlabelled} if shared.unlabelled else {}
        raw = {**unlabelled, **cfg.tokenizer, "output_dir": str(run_dir / "tokenizer")}
        stages.append(
            PlannedStage(
                "tokenizer", "nlp_ssl.tokenizer", from_dict(TokenizerConfig, raw, source, prefix="tokenizer"), []
            )
        )
    pretrained = {}
    for name, section in cfg.pretrain.items():
        cls = pretrain_class(section, f"{source}: pretrain.{name}")
        # skipgram / cbow runs are not published by export/push (see nlp_ssl.vectors)
        hub = _hub_keys(cfg, f"pretrain-{name}") if issubclass(cls, HubOptions) else {}
        raw = {**hub, **section, "output_dir": str(run_dir / f"pretrain-{name}")}
        own = raw.get("data")
        if shared.unlabelled and (own is None or (isinstance(own, dict) and "datasets" not in own)):
            raw["data"] = {"datasets": shared.unlabelled, **(own or {})}
        needs = _link(raw, ("init", "init_embeddings"), pretrained, source, f"pretrain.{name}")
        if "tokenizer" not in raw and "init" not in raw:
            if cfg.tokenizer is None:
                raise ConfigError(f"{source}: pretrain.{name}: no 'tokenizer' and the pipeline has no tokenizer stage")
            raw["tokenizer"] = str(run_dir / "tokenizer")
            needs.append("tokenizer")
        stage = PlannedStage(
            f"pretrain-{name}", "nlp_ssl.pretrain", from_dict(cls, raw, source, prefix=f"pretrain.{name}"), needs
        )
        stages.append(stage)
        pretrained[name] = stage
    for name, section in cfg.finetune.items():
        raw = {**_hub_keys(cfg, f"finetune-{name}"), **section, "output_dir": str(run_dir / f"finetune-{name}")}
        cls = recipe_class(raw, f"{source}: finetune.{name}")
        _inherit_labelled(raw, cls, shared)
        starts = (*get_task(raw["task"]).starts_from, "init_embeddings")
        needs = _link(raw, starts, pretrained, source, f"finetune.{name}")
        stages.append(
            PlannedStage(
                f"finetune-{name}", "nlp_ssl.finetune", from_dict(cls, raw, source, prefix=f"finetune.{name}"), needs
            )
        )
    for name, section in cfg.baseline.items():
        raw = {**section, "output_dir": str(run_dir / f"baseline-{name}")}
        _inherit_labelled(raw, BaselineConfig, shared)
        needs = _link(raw, ("init",), pretrained, source, f"baseline.{name}", any_kind=True)
        stages.append(
            PlannedStage(
                f"baseline-{name}",
                "nlp_ssl.baselines",
                from_dict(BaselineConfig, raw, source, prefix=f"baseline.{name}"),
                needs,
            )
        )
    return stages


def _inherit_labelled(raw: dict, cls: type, shared: PipelineData) -> None:
    """Give a stage whose ``data`` is a classification section the pipeline's labelled data,
    under its own keys."""
    import typing

    from nlp_ssl.tasks.classification_recipe import LabelledDataConfig

    own = raw.get("data")
    section = typing.get_type_hints(cls).get("data")
    if shared.labelled is None or not (isinstance(section, type) and issubclass(section, LabelledDataConfig)):
        return
    if own is None or isinstance(own, dict):
        raw["data"] = {**shared.labelled, **(own or {})}


def _link(
    raw: dict, keys: tuple[str, ...], pretrained: dict, source: str, where: str, any_kind: bool = False
) -> list[str]:
    """Replace each of ``keys`` that names a pretraining stage (defined earlier in the recipe)
    with that stage's folder; return the names of the stages linked. A value that is neither a
    stage nor reachable, or a stage of the wrong kind (``init_embeddings`` takes a skipgram /
    cbow stage, the other keys a transformer one, unless ``any_kind``: frozen features come from
    either), is an error now, not after hours of training."""
    from nlp_ssl.objectives import get_objective

    needs = []
    for key in keys:
        value = raw.get(key)
        if not isinstance(value, str):
            continue
        if value in pretrained:
            stage = pretrained[value]
            vectors = get_objective(stage.config.objective).static_vectors
            if not any_kind and vectors != (key == "init_embeddings"):
                kind = "a skipgram/cbow stage" if key == "init_embeddings" else "a transformer pretraining stage"
                raise ConfigError(
                    f"{source}: {where}.{key}: {value!r} is not {kind} (use init_embeddings for "
                    "token vectors, init/init_decoder for transformers)"
                )
            needs.append(stage.name)
            raw[key] = stage.config.output_dir
        elif key == "init_embeddings" and not Path(value).expanduser().exists():
            raise ConfigError(
                f"{source}: {where}.{key}: {value!r} is not a pretraining stage of this pipeline "
                f"({', '.join(pretrained) or 'none'}) nor a local folder"
            )
        elif _unreachable(value):
            raise ConfigError(
                f"{source}: {where}.{key}: {value!r} is not a pretraining stage of this "
                f"pipeline ({', '.join(pretrained) or 'none'}) nor a local folder, and "
                "HF_HUB_OFFLINE is set so it cannot be a Hub id"
            )
    return needs


def _unreachable(start: str) -> bool:
    return not start.startswith("pkg:") and not Path(start).exists() and hub_offline()


def _hub_keys(cfg: PipelineConfig, stage: str) -> dict:
    if not cfg.push_to_hub:
        return {}
    return {
        "push_to_hub": True,
        "hub_model_id": f"{cfg.hub_namespace}/{Path(cfg.run_dir).name}-{stage}",
        "hub_private": cfg.hub_private,
    }


@locks_output("run_dir")
def run(cfg: PipelineConfig, overwrite: bool = False) -> dict:
    return run_stages(cfg, overwrite)


def run_stages(cfg: PipelineConfig, overwrite: bool = False, kind: str = "pipeline") -> dict:
    """``run`` without taking the run folder's lock (for a caller that holds it: a study,
    ``kind``)."""
    import importlib

    from nlp_ssl.hub import publishing, refuse_offline_push

    check_run_dir(Path(cfg.run_dir), kind)
    stages = plan(cfg)
    for stage in stages:  # before the first stage, not after hours of training
        if hasattr(stage.config, "push_to_hub"):
            refuse_offline_push(stage.config)
    mark_run_dir(Path(cfg.run_dir), kind)
    rerun: set[str] = set()
    for stage in stages:
        out = Path(stage.config.output_dir)
        same = _same_recipe(out, stage.config)
        upstream = any(n in rerun for n in stage.needs)
        if same and is_finished(out) and not upstream and not overwrite:
            logger.info("pipeline: %s is done for this recipe; skipped", stage.name)
            _push_if_not_pushed(stage.config, out)
            continue
        resume = same and not upstream and not overwrite and hasattr(stage.config, "train") and out.exists()
        if resume:
            stage.config.train.resume = "latest"
            logger.info("pipeline: %s was interrupted; resuming it", stage.name)
        else:
            logger.info("pipeline: running %s", stage.name)
        importlib.import_module(stage.module).run(
            stage.config, overwrite=not resume and out.exists(), **publishing(stage.config)
        )
        rerun.add(stage.name)
    results = collect_results(cfg, stages)
    write_json(Path(cfg.run_dir) / RESULTS_FILE, results)
    print(results_table(results))
    return {"run_dir": cfg.run_dir, "stages_run": len(rerun), "stages_skipped": len(stages) - len(rerun)}


def _push_if_not_pushed(config, out: Path) -> None:
    """A finished stage the recipe now wants on the Hub is pushed without training it again."""
    from nlp_ssl.hub import push_run
    from nlp_ssl.model_card import push_record

    if not getattr(config, "push_to_hub", False):
        return
    pushed = push_record(out) or {}
    if pushed.get("repo_id") != config.hub_model_id or pushed.get("revision") != "main":
        logger.info("pipeline: pushing the finished %s to %s", out.name, config.hub_model_id)
        push_run(config, out)


def _same_recipe(out: Path, config) -> bool:
    """Whether ``out`` was written by this recipe (``train.resume``, which a resumed stage
    sets, and where the result is pushed, do not count: they do not change the model)."""
    import yaml

    from nlp_ssl.config import recipe_changes
    from nlp_ssl.run_files import saved_format

    saved = out / CONFIG_FILE
    if not saved.is_file():
        return False
    ignored = ("train.resume", "push_to_hub", "hub_model_id", "hub_private", "hub_checkpoint_branch")
    saved_recipe = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    return not recipe_changes(saved_recipe, config, ignored, saved_format(out))


def collect_results(cfg: PipelineConfig, stages: list[PlannedStage]) -> dict:
    """Every stage's metrics.json, by stage name, and where each pushed stage is on the Hub."""
    from nlp_ssl.model_card import push_record

    outs = {s.name: Path(s.config.output_dir) for s in stages}
    pushed = {name: push_record(out) for name, out in outs.items()}
    return {
        "run_dir": cfg.run_dir,
        "stages": {name: read_metrics(out) for name, out in outs.items() if (out / METRICS_FILE).is_file()},
        "hub": {name: record["repo_id"] for name, record in pushed.items() if record},
    }


def results_table(results: dict) -> str:
    """The headline figures as a Markdown table (printed at the end of a pipeline)."""
    lines = ["| stage | what | result |", "| --- | --- | --- |"]
    for name, m in results["stages"].items():
        if name == "tokenizer":
            what, result = f"{m.get('model')} tokenizer", f"vocab {m.get('vocab_size')}"
        elif name.startswith("pretrain-"):
            minutes = m.get("train_seconds", 0) / 60
            what = f"{m.get('objective')} pretraining, {m.get('tokens', 0):,} tokens, {minutes:.1f} min"
            if m.get("eval_loss") is not None:
                result = f"eval loss {m['eval_loss']:.3f}"
            else:  # skipgram / cbow: no held-out loss
                result = f"{m.get('trained_tokens')} token vectors, train loss {m.get('final_train_loss')}"
        else:
            keys = get_task(m["task"]).headline if m.get("task") in TASKS else ()
            method = {
                "tfidf_logreg": "TF-IDF + logistic regression",
                "frozen_logreg": "frozen features + logistic regression",
            }.get(m.get("method"), "fine-tuning")
            what = f"{m.get('task')} {method}, {m.get('train_examples')} examples"
            result = ", ".join(f"{k} {m[k]:.4f}" for k in keys if isinstance(m.get(k), (int, float))) or "-"
        lines.append(f"| {name} | {what} | {result} |")
    return "\n".join(lines)


def load_results(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
