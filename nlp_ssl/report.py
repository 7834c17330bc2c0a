"""A study's write-up: ``report.md``, ``report.html`` and ``plots/*.png`` from ``study.json``
and the runs' ``train_log.jsonl`` (nothing here trains or scores anything)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from nlp_ssl.outputs import write_text

def scale(study: dict) -> tuple[float, str]:
    """Accuracy-like figures in [0, 1] are shown as percentages (points); BLEU/ROUGE as they are."""
    name = study["metric"].split("_", 1)[-1]
    return (100.0, " points") if name in ("accuracy", "f1_macro", "precision_macro", "recall_macro") else (1.0, "")


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
    factor, _ = scale(study)
    counts = study["label_counts"]
    lines = ["| start | " + " | ".join("all labels" if n == "all" else f"{n} labels" for n in counts) + " |",
             "| --- |" + " ---: |" * len(counts)]
    for arm, info in study["arms"].items():
        lines.append(f"| {info['label']} | " + " | ".join(_cell(study["results"][arm][n], factor) for n in counts) + " |")
    return "\n".join(lines)


def _metric_name(study: dict) -> str:
    split, _, name = study["metric"].partition("_")
    factor, _ = scale(study)
    return f"{split} {name}" + (" (%)" if factor == 100 else "")


def markdown(study: dict, plots: dict) -> str:
    metric = _metric_name(study)
    out = [f"# {study['title']}", "",
           f"Task: {study['task']} on `{study['dataset']}`. Compared: **{metric}**, mean ± standard deviation over "
           f"seeds {', '.join(map(str, study['seeds']))} (each seed picks the labelled sample and the initial head).",
           "", "## Results", "", headline_table(study), "", "## Conclusions", ""]
    out += [f"{'  ' if line.startswith('  ') else ''}- {line.strip()}" for line in study["conclusions"]]
    out += ["", "## Arms", "", "| arm | role | starts from |", "| --- | --- | --- |"]
    out += [f"| {a['label']} | {a['role']} | {a['start'] or ('TF-IDF features' if a['role'] == 'classical' else '-')} |"
            for a in study["arms"].values()]
    if study["pretraining"]:
        out += ["", "## Pretraining cost", "", "| stage | objective | parameters | tokens | minutes | tokens/s | "
                "validation loss | perplexity |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, p in study["pretraining"].items():
            out.append(f"| pretrain-{name} | {p['objective']} | {(p['parameters'] or 0) / 1e6:.2f}M | {p['tokens'] or 0:,} "
                       f"| {(p['train_seconds'] or 0) / 60:.1f} | {p['tokens_per_s'] or 0:,.0f} | "
                       f"{_fixed(p['eval_loss'], 3)} | {_fixed(p['eval_perplexity'], 1)} |")
    out += ["", "## Plots", ""]
    for name, path in plots.items():
        out += [f"![{name}]({path.as_posix()})", ""]
    out += ["## Every run", "", "| run | arm | labels | seed | value | train examples | steps | seconds |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for stage, r in study["runs"].items():
        out.append(f"| {stage} | {r['arm']} | {r['label_count']} | {r['seed']} | {r['value']:.4f} | "
                   f"{r['train_examples']} | {r['steps'] if r['steps'] is not None else '-'} | "
                   f"{r['train_seconds'] if r['train_seconds'] is not None else '-'} |")
    out += ["", "Every figure is in `study.json`; each run's folder holds its metrics, predictions and logs."]
    return "\n".join(out) + "\n"


def to_html(study: dict, plots: dict) -> str:
    """The same report as one self-contained page (images beside it)."""
    factor, _ = scale(study)
    e = html.escape
    counts = study["label_counts"]
    head = "".join(f"<th>{'all labels' if n == 'all' else f'{n} labels'}</th>" for n in counts)
    rows = "".join(
        f"<tr><td>{e(info['label'])}</td>"
        + "".join(f"<td class=n>{e(_cell(study['results'][arm][n], factor))}</td>" for n in counts) + "</tr>"
        for arm, info in study["arms"].items())
    bullets = "".join(f"<li{' class=sub' if c.startswith('  ') else ''}>{e(c.strip())}</li>"
                      for c in study["conclusions"])
    figures = "".join(f"<figure><img src='{e(p.as_posix())}' alt='{e(n)}'><figcaption>{e(n)}</figcaption></figure>"
                      for n, p in plots.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(study['title'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem}}td.n{{text-align:right}}
li.sub{{margin-left:1.5rem;color:#444}}img{{max-width:100%}}</style></head><body>
<h1>{e(study['title'])}</h1>
<p>Task: {e(study['task'])} on <code>{e(study['dataset'])}</code>. Compared: <b>{e(_metric_name(study))}</b>,
mean &plusmn; sd over seeds {e(', '.join(map(str, study['seeds'])))}.</p>
<h2>Results</h2><table><tr><th>start</th>{head}</tr>{rows}</table>
<h2>Conclusions</h2><ul>{bullets}</ul>
<h2>Plots</h2>{figures}
<p>Every figure is in <code>study.json</code>.</p>
</body></html>
"""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: Path) -> Path:
    """Grid, legend, and the PNG written through a temp file (readers never see half an image)."""
    ax.grid(alpha=0.3)
    ax.legend()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        tmp.replace(path)
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
        sizes = [r["train_examples"] for r in study["runs"].values() if r["label_count"] == "all" and r["train_examples"]]
        all_x = max(sizes) if sizes else (max(numeric) * 4 if numeric else 1)
    xs = {n: (all_x if n == "all" else int(n)) for n in counts}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, info in study["arms"].items():
        pts = [(xs[n], r["mean"] * factor, r["std"] * factor) for n in counts
               if (r := study["results"][arm][n])["mean"] is not None]
        if pts:
            x, y, err = zip(*pts)
            style = "--" if info["role"] == "classical" else "-"
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linestyle=style, label=info["label"])
    ax.set_xscale("log")
    ax.set_xticks(sorted(xs.values()))
    ax.set_xticklabels([f"all ({xs[n]:,})" if n == "all" else str(n) for n in sorted(counts, key=lambda n: xs[n])])
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(_metric_name(study))
    ax.set_title(f"{study['task']}: label efficiency (error bars: sd over seeds)")
    return _finish(plt, fig, ax, path)


def _log(run_dir: Path) -> list[dict]:
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_pretraining(study: dict, run_dir: Path, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    from nlp_ssl.objectives import OBJECTIVES, get_objective

    for name, p in study["pretraining"].items():
        if p["objective"] in OBJECTIVES and get_objective(p["objective"]).run is not None:
            continue  # token vectors: a loss per epoch, of another objective, not on this axis
        log = _log(run_dir / f"pretrain-{name}")
        train = [(r["step"], r["train/loss"]) for r in log if "train/loss" in r]
        evals = [(r["step"], r["eval/loss"]) for r in log if "eval/loss" in r]
        if train:
            line, = ax.plot(*zip(*train), alpha=0.6, label=f"{name} ({p['objective']}) train")
            if evals:
                ax.plot(*zip(*evals), marker="o", color=line.get_color(), label=f"{name} ({p['objective']}) validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per predicted token; perplexity = exp)")
    ax.set_title("Pretraining")
    return _finish(plt, fig, ax, path)


def plot_finetuning(study: dict, run_dir: Path, path: Path) -> Path:
    """Validation metric per step for each arm, at the largest label count, first seed."""
    plt = _pyplot()
    factor, _ = scale(study)
    n, seed = study["label_counts"][-1], study["seeds"][0]
    short = study["metric"].split("_", 1)[-1]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage, r in study["runs"].items():
        if r["label_count"] != n or r["seed"] != seed:
            continue
        label = study["arms"][r["arm"]]["label"]
        points = [(row["step"], row[f"eval/{short}"] * factor) for row in _log(run_dir / stage) if f"eval/{short}" in row]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
        else:  # not trained step by step (TF-IDF): its score as a level
            ax.axhline(r["value"] * factor, linestyle="--", color="gray", label=f"{label} (test)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {short}" + (" (%)" if factor == 100 else ""))
    ax.set_title(f"Fine-tuning: validation {short} per step ({'all' if n == 'all' else n} labels, seed {seed})")
    return _finish(plt, fig, ax, path)


def _fixed(value, digits: int) -> str:
    """A figure a stage may not have (skip-gram has no held-out loss) as ``-`` rather than nan."""
    return "-" if value is None else f"{value:.{digits}f}"
