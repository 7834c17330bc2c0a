"""A study's write-up: ``report.md``, ``report.html`` and ``plots/*.png`` from ``study.json``
and the runs' ``train_log.jsonl`` (nothing here trains or scores anything)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from nlp_ssl.outputs import atomic_file, write_text


def scale(study: dict) -> tuple[float, str]:
    """Shares in [0, 1] (accuracy, F1) are shown as percentages (points); BLEU/ROUGE as they are."""
    from nlp_ssl.metrics import REPORTED

    shown = REPORTED.get(study["metric"].split("_", 1)[-1])
    return (100.0, " points") if shown is not None and shown.share else (1.0, "")


def write_report(study: dict, run_dir: Path) -> dict[str, Path]:
    """Write the report files; returns their paths by name."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made = {"label_efficiency": plot_label_efficiency(study, plots / "label_efficiency.png")}
    if study["pretraining"]:
        made["pretraining_curves"] = plot_pretraining(study, run_dir, plots / "pretraining_curves.png")
    made["finetune_curves"] = plot_finetuning(study, run_dir, plots / "finetune_curves.png")
    write_text(run_dir / "report.md", markdown(study, {k: v.relative_to(run_dir) for k, v in made.items()}))
    write_text(run_dir / "report.html", to_html(study, {k: v.relative_to(run_dir) for k, v in made.items()}))
    return {"report": run_dir / "report.md", "html": run_dir / "report.html", **made}


def _cell(r: dict, factor: float) -> str:
    if r["mean"] is None:
        return "-"
    text = f"{r['mean'] * factor:.1f}"
    return text + (f" ± {r['std'] * factor:.1f}" if r["n"] > 1 else "")


def headline_table(study: dict) -> str:
    """Arms x label counts, ``mean ± sd`` of the compared metric (Markdown)."""
    return "\n".join(_markdown_table(_results_table(study)))


def _metric_name(study: dict) -> str:
    split, _, name = study["metric"].partition("_")
    factor, _ = scale(study)
    return f"{split} {name}" + (" (%)" if factor == 100 else "")


def _results_table(study: dict) -> dict:
    factor, _ = scale(study)
    counts = study["label_counts"]
    return {
        "header": ["start", *("all labels" if n == "all" else f"{n} labels" for n in counts)],
        "numeric": [False, *([True] * len(counts))],
        "rows": [
            [info["label"], *(_cell(study["results"][arm][n], factor) for n in counts)]
            for arm, info in study["arms"].items()
        ],
    }


def sections(study: dict, plots: dict) -> list[dict]:
    """The report's content, once: each section has a title and any of ``paragraphs``,
    ``bullets`` (``(level, text)``), ``table`` (``header``, ``numeric``, ``rows``) and
    ``images`` (``(name, path)``). ``markdown`` and ``to_html`` only render it."""
    from nlp_ssl.study import VERDICT_REFERENCES, verdicts

    references = [name for name, _ in VERDICT_REFERENCES]
    out = [
        {
            "title": "Verdicts",
            "table": {
                "header": [
                    "labels",
                    "best arm",
                    _metric_name(study),
                    *(f"over {name}" for name in references),
                    "our best arm",
                ],
                "numeric": [False, False, True, *([False] * len(references)), False],
                "rows": [
                    [v["labels"], v["best"], v["score"], *(v[name] for name in references), v["ours"]]
                    for v in verdicts(study)
                ],
            },
            "paragraphs": [
                "Each margin is over the strongest arm of its kind at that label count; clear: the gap is more "
                "than seed noise (p < 0.05)."
            ],
        },
        {"title": "Results", "table": _results_table(study)},
        {
            "title": "Conclusions",
            "folded": "every arm against the strongest baselines, label count by label count",
            "bullets": [(1 if line.startswith("  ") else 0, line.strip()) for line in study["conclusions"]],
        },
        {
            "title": "Arms",
            "table": {
                "header": ["arm", "role", "starts from"],
                "numeric": [False, False, False],
                "rows": [
                    [a["label"], a["role"], a["start"] or ("TF-IDF features" if a["role"] == "classical" else "-")]
                    for a in study["arms"].values()
                ],
            },
        },
    ]
    if study["pretraining"]:
        out.append(
            {
                "title": "Pretraining cost",
                "table": {
                    "header": [
                        "stage",
                        "objective",
                        "parameters",
                        "tokens",
                        "minutes",
                        "tokens/s",
                        "validation loss",
                        "perplexity",
                    ],
                    "numeric": [False, False, True, True, True, True, True, True],
                    "rows": [
                        [
                            f"pretrain-{name}",
                            p["objective"],
                            f"{(p['parameters'] or 0) / 1e6:.2f}M",
                            f"{p['tokens'] or 0:,}",
                            f"{(p['train_seconds'] or 0) / 60:.1f}",
                            f"{p['tokens_per_s'] or 0:,.0f}",
                            _fixed(p["eval_loss"], 3),
                            _fixed(p["eval_perplexity"], 1),
                        ]
                        for name, p in study["pretraining"].items()
                    ],
                },
            }
        )
    out.append({"title": "Plots", "images": [(name, path.as_posix()) for name, path in plots.items()]})
    out.append(
        {
            "title": "Every run",
            "table": {
                "header": ["run", "arm", "labels", "seed", "value", "train examples", "steps", "seconds"],
                "numeric": [False, False, True, True, True, True, True, True],
                "rows": [
                    [
                        stage,
                        r["arm"],
                        str(r["label_count"]),
                        str(r["seed"]),
                        f"{r['value']:.4f}",
                        str(r["train_examples"]),
                        "-" if r["steps"] is None else str(r["steps"]),
                        "-" if r["train_seconds"] is None else str(r["train_seconds"]),
                    ]
                    for stage, r in study["runs"].items()
                ],
            },
            "paragraphs": ["Every figure is in study.json; each run's folder holds its metrics, predictions and logs."],
        }
    )
    return out


def _intro(study: dict) -> str:
    return (
        f"Task: {study['task']} on {study['dataset']}. Compared: {_metric_name(study)}, mean ± standard deviation "
        f"over seeds {', '.join(map(str, study['seeds']))} (each seed picks the labelled sample and the initial "
        "head)."
    )


def _markdown_table(table: dict) -> list[str]:
    return [
        "| " + " | ".join(table["header"]) + " |",
        "| " + " | ".join("---:" if n else "---" for n in table["numeric"]) + " |",
    ] + ["| " + " | ".join(row) + " |" for row in table["rows"]]


def markdown(study: dict, plots: dict) -> str:
    out = [f"# {study['title']}", "", _intro(study)]
    for section in sections(study, plots):
        out += ["", f"## {section['title']}", ""]
        folded = section.get("folded")
        out += [f"<details><summary>{html.escape(folded)}</summary>", ""] if folded else []
        out += [f"{'  ' * level}- {text}" for level, text in section.get("bullets", [])]
        out += ["", "</details>"] if folded else []
        out += _markdown_table(section["table"]) if "table" in section else []
        for name, path in section.get("images", []):
            out += [f"![{name}]({path})", ""]
        for paragraph in section.get("paragraphs", []):
            out += ["", paragraph]
    return "\n".join(out).rstrip("\n") + "\n"


def to_html(study: dict, plots: dict) -> str:
    """The same report as one self-contained page (images beside it)."""
    e = html.escape
    body = [f"<h1>{e(study['title'])}</h1>", f"<p>{e(_intro(study))}</p>"]
    for section in sections(study, plots):
        body.append(f"<h2>{e(section['title'])}</h2>")
        if section.get("bullets"):
            bullets = (
                "<ul>"
                + "".join(f"<li{' class=sub' if level else ''}>{e(text)}</li>" for level, text in section["bullets"])
                + "</ul>"
            )
            folded = section.get("folded")
            body.append(f"<details><summary>{e(folded)}</summary>{bullets}</details>" if folded else bullets)
        if "table" in section:
            t = section["table"]
            cls = [" class=n" if n else "" for n in t["numeric"]]
            body.append(
                "<table><tr>"
                + "".join(f"<th>{e(h)}</th>" for h in t["header"])
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td{c}>{e(v)}</td>" for c, v in zip(cls, row)) + "</tr>" for row in t["rows"]
                )
                + "</table>"
            )
        body += [
            f"<figure><img src='{e(path)}' alt='{e(name)}'><figcaption>{e(name)}</figcaption></figure>"
            for name, path in section.get("images", [])
        ]
        body += [f"<p>{e(p)}</p>" for p in section.get("paragraphs", [])]
    return (
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(study["title"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem}}td.n{{text-align:right}}
li.sub{{margin-left:1.5rem;color:#444}}img{{max-width:100%}}</style></head><body>
"""
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: Path) -> Path:
    """Grid, legend, and the PNG written."""
    ax.grid(alpha=0.3)
    if len(ax.get_legend_handles_labels()[1]) > 6:  # beside the axes: inside, a long legend hides the curves
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    else:
        ax.legend()
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    """The PNG written through a temp file (readers never see half an image)."""
    try:
        with atomic_file(path) as tmp:
            # the format named: matplotlib would take it from the temp name's suffix
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_label_efficiency(study: dict, path: Path) -> Path:
    plt = _pyplot()
    factor, _ = scale(study)
    counts = study["label_counts"]
    numeric = [int(n) for n in counts if n != "all"]
    # "all" sits one step to the right of the largest count on the log axis, labelled with its size
    all_x = None
    if "all" in counts:
        sizes = [
            r["train_examples"] for r in study["runs"].values() if r["label_count"] == "all" and r["train_examples"]
        ]
        all_x = max(sizes) if sizes else (max(numeric) * 4 if numeric else 1)
    xs = {n: (all_x if n == "all" else int(n)) for n in counts}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    single_seed = False
    # past ten arms the default cycle repeats colours: one colour per arm from a longer palette
    palette = plt.get_cmap("tab10").colors
    if len(study["arms"]) > 10:  # tab20 pairs a dark and a light shade of each hue: the dark ones first
        palette = plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
    for index, (arm, info) in enumerate(study["arms"].items()):
        segments = curve_segments([xs[n] for n in counts], [study["results"][arm][n] for n in counts], factor)
        color = palette[index % len(palette)]
        for i, seg in enumerate(segments):
            x, y, err, n_seeds = zip(*seg)
            style = "--" if info["role"] == "classical" else "-"
            ax.errorbar(
                x,
                y,
                yerr=[e if k > 1 else 0 for e, k in zip(err, n_seeds)],
                marker="o",
                capsize=3,
                linestyle=style,
                color=color,
                label=info["label"] if i == 0 else None,
            )
            once = [(xi, yi) for xi, yi, k in zip(x, y, n_seeds) if k == 1]
            if once:  # one seed: no spread to show, drawn hollow
                single_seed = True
                ax.plot(
                    *zip(*once),
                    marker="o",
                    linestyle="none",
                    markerfacecolor="white",
                    markeredgecolor=color,
                    markersize=7,
                    zorder=3,
                )
    ax.set_xscale("log")
    ax.set_xticks(sorted(xs.values()))
    ax.set_xticklabels([f"all ({xs[n]:,})" if n == "all" else str(n) for n in sorted(counts, key=lambda n: xs[n])])
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(_metric_name(study))
    note = "; hollow: one seed" if single_seed else ""
    ax.set_title(f"{study['task']}: label efficiency (error bars: sd over seeds{note})")
    return _finish(plt, fig, ax, path)


def curve_segments(xs: list, results: list[dict], factor: float = 1.0) -> list[list[tuple]]:
    """An arm's points ``(x, mean, sd, seeds)`` in runs of neighbouring label counts: a count
    the arm did not run breaks its line instead of being bridged."""
    segments, current = [], []
    for x, r in zip(xs, results):
        if r["mean"] is None:
            if current:
                segments.append(current)
            current = []
            continue
        current.append((x, r["mean"] * factor, (r["std"] or 0.0) * factor, r["n"]))
    return segments + [current] if current else segments


def _log(run_dir: Path) -> list[dict]:
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_pretraining(study: dict, run_dir: Path, path: Path) -> Path:
    """Training and validation loss against tokens seen, one panel per objective: losses of
    different objectives are not on one scale, and runs of one budget in steps may see
    different numbers of tokens."""
    from nlp_ssl.objectives import OBJECTIVES, get_objective

    plt = _pyplot()
    runs: dict[str, list] = {}
    for name, p in study["pretraining"].items():
        if p["objective"] in OBJECTIVES and get_objective(p["objective"]).static_vectors:
            continue  # token vectors: a loss per epoch of another objective
        runs.setdefault(p["objective"], []).append(name)
    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(6 * max(1, len(runs)), 4.5), squeeze=False)
    for ax, (objective, names) in zip(axes[0], runs.items()):
        for name in names:
            log = _log(run_dir / f"pretrain-{name}")
            counted = [r for r in log if r.get("train/tokens")]
            if not counted:
                continue
            per_step = counted[-1]["train/tokens"] / counted[-1]["step"]  # packed blocks: the same every step
            train = [(r["step"] * per_step, r["train/loss"]) for r in log if "train/loss" in r]
            evals = [(r["step"] * per_step, r["eval/loss"]) for r in log if "eval/loss" in r]
            if train:
                (line,) = ax.plot(*zip(*train), alpha=0.6, label=name)
                if evals:
                    ax.plot(*zip(*evals), marker="o", linestyle="none", color=line.get_color())
        ax.set_xlabel("training tokens")
        ax.set_ylabel("loss (nats per predicted token)")
        ax.set_title(f"{objective}: training loss (line), validation loss (dots)")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path)


def plot_finetuning(study: dict, run_dir: Path, path: Path) -> Path:
    """Training loss (every logged step) and validation metric (every evaluation) against
    epochs for each arm, at the largest label count, first seed: an arm evaluated once an
    epoch has only a few validation points, so the loss panel shows how it got there."""
    plt = _pyplot()
    factor, _ = scale(study)
    n, seed = study["label_counts"][-1], study["seeds"][0]
    short = study["metric"].split("_", 1)[-1]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for stage, r in study["runs"].items():
        if r["label_count"] != n or r["seed"] != seed:
            continue
        log = _log(run_dir / stage)
        epochs = {row["step"]: row["train/epoch"] for row in log if "train/epoch" in row}
        if not epochs:  # arms not trained step by step (TF-IDF, frozen heads) have no curve here
            continue
        per_step = max(epochs.values()) / max(epochs)  # epochs are a fixed number of steps
        label = study["arms"][r["arm"]]["label"]
        train = [(row["step"] * per_step, row["train/loss"]) for row in log if "train/loss" in row]
        evals = [(row["step"] * per_step, row[f"eval/{short}"] * factor) for row in log if f"eval/{short}" in row]
        (line,) = loss_ax.plot(*zip(*train), alpha=0.8, label=label)
        if evals:
            metric_ax.plot(*zip(*evals), marker="o", color=line.get_color(), label=label)
    loss_ax.set_ylabel("training loss (per target)")
    loss_ax.set_title("training loss")
    metric_ax.set_ylabel(f"validation {short}" + (" (%)" if factor == 100 else ""))
    metric_ax.set_title(f"validation {short}, at each evaluation")
    for ax in (loss_ax, metric_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Fine-tuning ({'all' if n == 'all' else n} labels, seed {seed})")
    return _save(plt, fig, path)


def _fixed(value, digits: int) -> str:
    """A figure a stage may not have (skip-gram has no held-out loss) as ``-`` rather than nan."""
    return "-" if value is None else f"{value:.{digits}f}"
