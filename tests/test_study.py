"""The study: every arm x label count x seed runs through the pipeline; study.json holds every
figure (schema checked), report.md / report.html / plots are written with every section filled;
the TF-IDF baseline sees exactly the fine-tuning runs' examples."""

import json
import os
import re

import numpy as np
import pytest

from nlp_ssl.config import from_dict
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import SCHEMA, StudyConfig, run
from tests.test_pipeline import pipeline_raw


def study_raw(run_dir, corpus, sentiment_dir) -> dict:
    base = pipeline_raw(run_dir, corpus, sentiment_dir)
    finetune = base["finetune"]["rt"]
    del finetune["init"]
    finetune["train"]["eval_every"] = 5  # a few points per fine-tuning curve
    return {
        "run_dir": str(run_dir),
        "title": "Tiny study",
        "tokenizer": base["tokenizer"],
        "pretrain": base["pretrain"],
        "finetune": finetune,
        "arms": {
            "scratch": {"label": "random init", "recipe": {"init": "mlm", "from_scratch": True}},
            "mlm": {"label": "our MLM", "recipe": {"init": "mlm"}},
            "tfidf": {"label": "TF-IDF + LR", "method": "tfidf_logreg"},
        },
        "label_counts": [40, "all"],
        "seeds": [0, 1],
        "seeds_at_all": 1,
        "by_label_count": {"40": {"train": {"epochs": 4}}},
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_corpus, sentiment_dir):
    run_dir = tmp_path_factory.mktemp("study") / "tiny"
    cfg = from_dict(StudyConfig, study_raw(run_dir, tiny_corpus, sentiment_dir))
    summary = run(cfg)
    return cfg, run_dir, summary


def test_every_run_is_a_stage_and_study_json_holds_every_figure(study):
    cfg, run_dir, summary = study
    s = json.loads((run_dir / "study.json").read_text())
    assert s["schema"] == SCHEMA and s["task"] == "sentiment" and s["metric"] == "test_accuracy"
    assert s["label_counts"] == ["40", "all"] and s["seeds"] == [0, 1]
    assert {a: (v["label"], v["role"]) for a, v in s["arms"].items()} == {
        "scratch": ("random init", "scratch"),
        "mlm": ("our MLM", "own"),
        "tfidf": ("TF-IDF + LR", "classical"),
    }
    # 3 arms x (2 seeds at 40 labels + 1 seed with all labels)
    assert summary["runs"] == 9 and len(s["runs"]) == 9
    for stage, r in s["runs"].items():
        metrics = json.loads((run_dir / stage / "metrics.json").read_text())
        assert r["value"] == metrics["test_accuracy"]
        assert r["train_examples"] == (40 if r["label_count"] == 40 else 400)
        assert isinstance(r["seed"], int) and r["arm"] in s["arms"]
    for arm in s["arms"]:
        few, full = s["results"][arm]["40"], s["results"][arm]["all"]
        assert sorted(few["values"]) == ["0", "1"] and list(full["values"]) == ["0"]
        assert few["mean"] == pytest.approx(np.mean(list(few["values"].values())))
        assert few["std"] == pytest.approx(np.std(list(few["values"].values()), ddof=1))
        assert full["n"] == 1 and full["std"] == 0.0
    pre = s["pretraining"]["mlm"]
    assert pre["objective"] == "mlm" and pre["tokens"] > 0 and pre["train_seconds"] > 0 and pre["eval_loss"] > 0
    assert s["conclusions"] and all(isinstance(c, str) and c.strip() for c in s["conclusions"])
    assert any(c.startswith("With 40 labels, ") for c in s["conclusions"])
    assert any("Overall, our MLM beats random init at" in c for c in s["conclusions"])
    assert any(c.startswith("Pretraining cost: mlm: ") for c in s["conclusions"])


def test_report_and_plots_have_every_section(study):
    _, run_dir, _ = study
    md = (run_dir / "report.md").read_text()
    for heading in (
        "# Tiny study",
        "## Results",
        "## Conclusions",
        "## Arms",
        "## Pretraining cost",
        "## Plots",
        "## Every run",
    ):
        assert heading in md
    assert "| start | 40 labels | all labels |" in md
    for label in ("random init", "our MLM", "TF-IDF + LR"):
        assert f"| {label} | " in md
    for name in ("label_efficiency", "pretraining_curves", "finetune_curves"):
        png = run_dir / "plots" / f"{name}.png"
        assert f"![{name}](plots/{name}.png)" in md
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page = (run_dir / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<td>our MLM</td>" in page and "plots/label_efficiency.png" in page
    # one source, two renderings: the page has every section, row and figure the Markdown has
    import re

    assert re.findall(r"<h2>(.*?)</h2>", page) == re.findall(r"^## (.*)$", md, flags=re.M)
    s = json.loads((run_dir / "study.json").read_text())
    for stage in s["runs"]:
        assert f"| {stage} |" in md and f"<td>{stage}</td>" in page
    assert page.count("<li") == len(re.findall(r"^\s*- ", md, flags=re.M)) and page.count("<figure>") == md.count("![")


def test_a_finished_study_is_not_run_again(study):
    cfg, run_dir, _ = study
    stamps = {p.parent.name: os.stat(p).st_mtime_ns for p in run_dir.glob("*/metrics.json")}
    run(cfg)
    assert {p.parent.name: os.stat(p).st_mtime_ns for p in run_dir.glob("*/metrics.json")} == stamps


def test_tfidf_sees_the_examples_fine_tuning_sees(study):
    from sklearn.metrics import accuracy_score

    _, run_dir, _ = study
    ft = json.loads((run_dir / "finetune-mlm-40-s1/metrics.json").read_text())
    base = json.loads((run_dir / "baseline-tfidf-40-s1/metrics.json").read_text())
    assert base["train_examples"] == ft["train_examples"] == 40 and base["method"] == "tfidf_logreg"
    rows = [json.loads(line) for line in (run_dir / "baseline-tfidf-40-s1/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 120 and base["test_accuracy"] == pytest.approx(
        accuracy_score([r["label"] for r in rows], [r["prediction"] for r in rows])
    )


def test_tfidf_subsample_is_the_fine_tuning_subsample(tmp_path, sentiment_dir):
    """Both go through load_sentiment_data: the same seed and count pick the same rows."""
    from nlp_ssl.baselines import BaselineConfig, _Texts
    from nlp_ssl.tasks.classification import load_sentiment_data

    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "labels": ["negative", "positive"],
        "train_samples": 30,
    }
    cfg = from_dict(BaselineConfig, {"output_dir": str(tmp_path / "b"), "data": data, "seed": 3})
    splits, _, index = load_sentiment_data(cfg, _Texts())
    assert len(index) == 30 and "eval" in splits  # no validation split: held out of train, as fine-tuning does
    labels = np.asarray(splits["train"]["label_id"])[index]
    assert (labels == 0).sum() == 15


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["finetune"].update(init="mlm"), "finetune.init: set per arm"),
        (lambda r: r.update(label_counts=[0]), "'label_counts' must be positive"),
        (lambda r: r.update(by_label_count={"50": {}}), "'by_label_count' names ['50']"),
        (
            lambda r: r["arms"]["mlm"]["recipe"].update(init="nowhere-stage"),
            "finetune.mlm-40-s0.init: 'nowhere-stage' is not a pretraining stage",
        ),
        (lambda r: r["arms"]["mlm"]["recipe"].update(dropuot=0.1), "unknown key 'finetune.mlm-40-s0.dropuot'"),
        (lambda r: r.update(seeds_at_all=3), "'seeds_at_all' must be in 1..2"),
    ],
)
def test_bad_study_recipes_fail_before_anything_runs(tmp_path, tiny_corpus, sentiment_dir, change, message):
    raw = study_raw(tmp_path / "s", tiny_corpus, sentiment_dir)
    change(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(StudyConfig, raw)
    assert not (tmp_path / "s").exists()


def test_arm_roles_are_inferred_unless_the_recipe_names_one(tmp_path, tiny_corpus, sentiment_dir):
    """An ablation arm that starts from one of our runs made outside the study is ``own`` only
    when the recipe says so; otherwise an outside folder counts as someone else's checkpoint."""
    raw = study_raw(tmp_path / "s", tiny_corpus, sentiment_dir)
    (tmp_path / "elsewhere").mkdir()
    raw["arms"]["outside"] = {"recipe": {"init": str(tmp_path / "elsewhere")}}
    raw["arms"]["ours_outside"] = {"role": "own", "recipe": {"init": str(tmp_path / "elsewhere")}}
    cfg = from_dict(StudyConfig, raw)
    assert {a: cfg.role(a) for a in cfg.arms} == {
        "scratch": "scratch",
        "mlm": "own",
        "tfidf": "classical",
        "outside": "transfer",
        "ours_outside": "own",
    }
    raw["arms"]["ours_outside"]["role"] = "mine"
    with pytest.raises(ConfigError, match="role"):
        from_dict(StudyConfig, raw)


def test_the_start_column_tells_tfidf_variants_apart(tmp_path, tiny_corpus, sentiment_dir):
    from nlp_ssl.study import _start

    raw = study_raw(tmp_path / "s", tiny_corpus, sentiment_dir)
    raw["arms"]["chars"] = {"method": "tfidf_logreg", "recipe": {"char_ngrams": [2, 5]}}
    raw["arms"]["frozen_chars"] = {
        "method": "frozen_logreg",
        "recipe": {"init": "mlm", "tfidf": True, "char_ngrams": [2, 5]},
    }
    raw["arms"]["frozen"] = {"method": "frozen_logreg", "recipe": {"init": "mlm", "tfidf": True}}
    cfg = from_dict(StudyConfig, raw)
    assert {a: _start(cfg.arms[a], cfg) for a in ("tfidf", "chars", "frozen", "frozen_chars")} == {
        "tfidf": None,
        "chars": "TF-IDF with character 2-5-grams",
        "frozen": "frozen features of pretrain-mlm + TF-IDF",
        "frozen_chars": "frozen features of pretrain-mlm + TF-IDF with character 2-5-grams",
    }


def test_an_arm_may_run_at_a_subset_of_label_counts_and_seeds(tmp_path, tiny_corpus, sentiment_dir):
    raw = study_raw(tmp_path / "s", tiny_corpus, sentiment_dir)
    raw["arms"]["mlm"].update(label_counts=["all"])
    raw["arms"]["scratch"].update(seeds=[1])
    cfg = from_dict(StudyConfig, raw)
    assert [stage for stage, *_ in cfg.runs()] == [
        "finetune-scratch-40-s1",
        "baseline-tfidf-40-s0",
        "baseline-tfidf-40-s1",
        "finetune-mlm-all-s0",
        "baseline-tfidf-all-s0",
    ]  # seeds_at_all=1 leaves scratch no seed with all labels
    for key, value, message in (
        ("label_counts", [7], "arms.mlm.label_counts must be a non-empty subset"),
        ("seeds", [5], "arms.mlm.seeds must be a non-empty subset"),
    ):
        bad = study_raw(tmp_path / "s", tiny_corpus, sentiment_dir)
        bad["arms"]["mlm"][key] = value
        with pytest.raises(ConfigError, match=re.escape(message)):
            from_dict(StudyConfig, bad)


def test_a_gap_is_called_clear_only_when_a_t_test_says_so():
    from nlp_ssl.study import _summary, conclusions

    def arm_results(per_count):
        return {n: {"values": {str(i): v for i, v in enumerate(vs)}, **_summary(vs)} for n, vs in per_count.items()}

    study = {
        "metric": "test_accuracy",
        "label_counts": ["50", "all"],
        "pretraining": {},
        "arms": {"own": {"label": "ours", "role": "own"}, "scratch": {"label": "random init", "role": "scratch"}},
        "results": {
            # at 50 labels the gap (2 points) is within the seeds' scatter; with all labels it is not
            "own": arm_results({"50": [0.60, 0.66, 0.58], "all": [0.800, 0.801, 0.799]}),
            "scratch": arm_results({"50": [0.59, 0.62, 0.57], "all": [0.750, 0.752, 0.751]}),
        },
    }
    lines = conclusions(study)
    at = {n: next(l for l in lines if l.startswith(f"With {n}")) for n in ("50 labels", "all labels")}
    assert "(not clear: Welch's t-test p=" in at["50 labels"]
    assert "(clear: Welch's t-test p<0.001)" in at["all labels"]
    assert any("ours beats random initialisation by 4.9 points with all labels (clear" in l for l in lines)

    study["results"]["own"] = arm_results({"50": [0.60, 0.66, 0.58], "all": [0.800]})  # one seed with all labels
    lines = conclusions(study)
    assert any("with all labels (clear: one-sample t-test against a single run p<0.001)" in l for l in lines)

    # two classical baselines: an arm is held to the stronger one at each label count, named
    study["arms"].update(
        {
            "tfidf": {"label": "TF-IDF words", "role": "classical"},
            "chars": {"label": "TF-IDF words + chars", "role": "classical"},
        }
    )
    study["results"].update(
        {
            "tfidf": arm_results({"50": [0.59, 0.60, 0.61], "all": [0.79]}),
            "chars": arm_results({"50": [0.56, 0.57, 0.58], "all": [0.81]}),
        }
    )
    lines = conclusions(study)
    assert any(
        "ours trails TF-IDF words + chars (the strongest classical arm here) by 1.0 points with all labels" in l
        for l in lines
    )
    assert any(
        "ours beats TF-IDF words (the strongest classical arm here) by 1.3 points with 50 labels" in l for l in lines
    )
    assert not any("TF-IDF words by" in l or "chars (the strongest classical arm here) by 1.3" in l for l in lines)
    assert not any("TF-IDF + logistic regression" in l for l in lines)
    assert "Overall, ours beats the strongest classical arm at 1 of the 2 label counts both ran (50)." in lines
    assert "Overall, ours beats random init at 2 of the 2 label counts both ran (50, all)." in lines

    # a baseline without runs at a count is not the strongest there; one never run at all is not named
    study["results"]["chars"]["all"] = {"values": {}, "mean": None, "std": None, "n": 0}
    study["arms"]["never"] = {"label": "never run", "role": "classical"}
    study["results"]["never"] = {n: {"values": {}, "mean": None, "std": None, "n": 0} for n in ("50", "all")}
    lines = conclusions(study)
    assert any(
        "ours beats TF-IDF words (the strongest classical arm here) by 1.0 points with all labels" in l for l in lines
    )
    assert not any("never run" in l for l in lines)
    study["results"]["scratch"]["all"] = {"values": {}, "mean": None, "std": None, "n": 0}
    assert "Overall, ours beats random init at 1 of the 1 label counts both ran (50)." in conclusions(study)


def test_a_label_count_an_arm_skipped_breaks_its_curve():
    from nlp_ssl.report import curve_segments

    r = lambda mean, n=3: {"mean": mean, "std": 0.01 if n > 1 else 0.0, "n": n}  # noqa: E731
    none = {"mean": None, "std": None, "n": 0}
    segments = curve_segments([50, 200, 1000, 8530], [r(0.6), none, r(0.7, n=1), r(0.8)], factor=100)
    assert segments == [[(50, 60.0, 1.0, 3)], [(1000, 70.0, 0.0, 1), (8530, 80.0, 1.0, 3)]]


def test_finetune_curves_show_training_loss_and_every_evaluation(study, monkeypatch):
    """The loss panel has a point per logged step, the validation panel one per evaluation,
    both against epochs; arms without a training log (TF-IDF) draw nothing."""
    from nlp_ssl import report

    _, run_dir, _ = study
    s = json.loads((run_dir / "study.json").read_text())
    drawn = {}
    monkeypatch.setattr(report, "_save", lambda plt, fig, path: drawn.setdefault("fig", fig) and path)
    report.plot_finetuning(s, run_dir, run_dir / "unused.png")
    loss_ax, metric_ax = drawn["fig"].axes
    trained = [
        st
        for st, r in s["runs"].items()
        if r["label_count"] == "all" and r["seed"] == 0 and (run_dir / st / "train_log.jsonl").is_file()
    ]
    assert trained and len(loss_ax.lines) == len(metric_ax.lines) == len(trained)
    for stage, loss_line, metric_line in zip(trained, loss_ax.lines, metric_ax.lines):
        log = [json.loads(x) for x in (run_dir / stage / "train_log.jsonl").read_text().splitlines()]
        assert len(loss_line.get_xdata()) == sum("train/loss" in r for r in log) >= 2
        assert len(metric_line.get_xdata()) == sum("eval/accuracy" in r for r in log) >= 2
        assert max(loss_line.get_xdata()) == pytest.approx(max(r["train/epoch"] for r in log if "train/epoch" in r))
    assert loss_ax.get_xlabel() == metric_ax.get_xlabel() == "epoch"


def test_label_efficiency_is_drawn_on_a_log_axis_with_hollow_single_seed_points(study, monkeypatch):
    from nlp_ssl import report

    _, run_dir, _ = study
    s = json.loads((run_dir / "study.json").read_text())
    drawn = {}
    monkeypatch.setattr(report, "_save", lambda plt, fig, path: drawn.setdefault("fig", fig) and path)
    report.plot_label_efficiency(s, run_dir / "unused.png")
    ax = drawn["fig"].axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "40" and labels[-1].startswith("all (")
    # the "all" column ran one seed per arm: every arm gets a hollow marker there
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "white"]
    assert len(hollow) == len(s["arms"])


def test_the_verdicts_table_comes_first_and_the_pairwise_lines_fold():
    """Per label count: the best arm, its margin over the strongest labels-only arm and over
    someone else's checkpoint, and whether each gap is clear, the test named; computed from a
    fake study, rendered first in both reports, the pairwise lines folded after it."""
    import re

    from nlp_ssl.report import markdown, to_html
    from nlp_ssl.study import _summary, conclusions, verdicts

    def arm_results(per_count):
        return {n: {"values": {str(i): v for i, v in enumerate(vs)}, **_summary(vs)} for n, vs in per_count.items()}

    study = {
        "title": "Fake",
        "task": "sentiment",
        "dataset": "d",
        "seeds": [0, 1, 2],
        "metric": "test_accuracy",
        "label_counts": ["50", "all"],
        "pretraining": {},
        "runs": {},
        "arms": {
            "own": {"label": "ours", "role": "own", "start": "x"},
            "scratch": {"label": "random init", "role": "scratch", "start": None},
            "tfidf": {"label": "TF-IDF", "role": "classical", "start": None},
            "minilm": {"label": "MiniLM", "role": "transfer", "start": "m"},
        },
        "results": {
            "own": arm_results({"50": [0.70, 0.71, 0.72], "all": [0.80, 0.81, 0.79]}),
            "scratch": arm_results({"50": [0.55, 0.56, 0.54], "all": [0.70, 0.71, 0.69]}),
            "tfidf": arm_results({"50": [0.60, 0.62, 0.58], "all": [0.78, 0.79, 0.80]}),
            "minilm": arm_results({"50": [0.66, 0.70, 0.62], "all": [0.84, 0.85, 0.83]}),
        },
    }
    study["conclusions"] = conclusions(study)
    fifty, everything = verdicts(study)
    assert fifty["labels"] == "50 labels" and fifty["best"] == "ours" and fifty["score"] == "71.0 ± 1.0"
    assert fifty["labels only"] == "+11.0 points over TF-IDF (clear: Welch's t-test p=0.004)"
    assert fifty["someone else's checkpoint"].startswith("+5.0 points over MiniLM (not clear: Welch's t-test p=")
    assert everything["best"] == "MiniLM" and everything["someone else's checkpoint"] == "(the best arm is one)"
    assert everything["labels only"].startswith("+5.0 points over TF-IDF (clear: Welch's t-test p=")
    assert fifty["ours"] == "(the best arm)"
    assert everything["ours"].startswith("ours, 4.0 points behind (clear: Welch's t-test p=")

    md = markdown(study, {})
    headings = re.findall(r"^## (.*)$", md, flags=re.M)
    assert headings[:3] == ["Verdicts", "Results", "Conclusions"]
    assert "| 50 labels | ours | 71.0 ± 1.0 | +11.0 points over TF-IDF (clear: Welch's t-test p=0.004) |" in md
    assert md.index("## Verdicts") < md.index("| start | 50 labels | all labels |")
    folded = md.split("## Conclusions")[1].split("## ")[0]
    assert folded.strip().startswith("<details><summary>") and folded.strip().endswith("</details>")
    page = to_html(study, {})
    assert re.search(r"<h2>Conclusions</h2>\s*<details><summary>[^<]+</summary><ul>", page)
    assert page.index("<h2>Verdicts</h2>") < page.index("<h2>Results</h2>")
