"""Run reports: metrics.json, a markdown report with tables and plots, and side-by-side comparison of runs.

A run directory holds one evaluated scorer. `write_report` fills it from the dict of `eval.metrics.compute_metrics`;
`compare_runs` and `plot_comparison` read several of them back through their metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from lref.labels import LabelScheme, get_scheme

log = logging.getLogger(__name__)

HEADLINE_KEYS = [
    "ndcg@5",
    "ndcg@10",
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "over_grading_rate",
    "under_grading_rate",
    "auc_e_vs_i",
    "ece",
    "n_pairs",
]
COMPARISON_PLOT_KEYS = ["ndcg@10", "macro_f1", "accuracy"]


def write_report(
    run_dir: Path, metrics: dict, scheme: LabelScheme | str, title: str, rows: list[dict] | None = None
) -> None:
    """Write metrics.json, report.md and the PNG plots of one run into `run_dir`.

    The confusion and reliability plots are skipped (and report.md says so) when the metrics have no classification
    or no probability part. With `rows`, report.md also lists the pairs graded furthest from gold.
    """
    scheme = get_scheme(scheme)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=_json_default) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str | None] = {}  # file name -> None if written, else why it was skipped
    if metrics.get("confusion"):
        _plot_confusion(plt, metrics["confusion"], run_dir / "confusion.png")
        plots["confusion.png"] = None
    else:
        plots["confusion.png"] = "the scorer gives no labels, so there is no confusion matrix"
    if metrics.get("reliability"):
        _plot_reliability(plt, metrics["reliability"], metrics.get("ece"), run_dir / "reliability.png")
        plots["reliability.png"] = None
    else:
        plots["reliability.png"] = "the scorer gives no probabilities, so there is no reliability diagram"
    _plot_ndcg_hist(plt, metrics.get("ndcg@10_per_query") or {}, run_dir / "ndcg_per_query.png")
    plots["ndcg_per_query.png"] = None

    (run_dir / "report.md").write_text(_report_markdown(metrics, scheme, title, plots, rows))
    log.info("wrote report of %r to %s", title, run_dir)


def compare_runs(run_dirs: list[Path], keys: list[str] | None = None) -> str:
    """Markdown table of the headline metrics of several runs, one row per run (4 decimals, "n/a" for None)."""
    keys = keys or HEADLINE_KEYS
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for run_dir in run_dirs:
        metrics = _load_metrics(run_dir)
        name = _escape(_run_name(run_dir, metrics))
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics.get(key)) for key in keys) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(run_dirs: list[Path], out_png: Path) -> None:
    """Grouped bar chart of nDCG@10, macro-F1 and accuracy per run; missing metrics are marked n/a."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [_load_metrics(d) for d in run_dirs]
    names = [_run_name(d, m) for d, m in zip(run_dirs, loaded, strict=True)]
    x = np.arange(len(names))
    width = 0.8 / len(COMPARISON_PLOT_KEYS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.5))
    for i, key in enumerate(COMPARISON_PLOT_KEYS):
        values = [m.get(key) for m in loaded]
        heights = [v if v is not None else 0.0 for v in values]
        pos = x + (i - (len(COMPARISON_PLOT_KEYS) - 1) / 2) * width
        bars = ax.bar(pos, heights, width, label=key)
        for bar, v in zip(bars, values, strict=True):
            text = "n/a" if v is None else f"{v:.3f}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(x, names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("value")
    ax.set_title("Run comparison")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _report_markdown(
    metrics: dict, scheme: LabelScheme, title: str, plots: dict[str, str | None], rows: list[dict] | None
) -> str:
    md = [f"# {title}", "", f"Label scheme: `{scheme.name}` ({', '.join(scheme.labels)}, highest grade first).", ""]
    n_ranked = metrics.get("n_queries_ranked")
    md += [
        f"{_fmt(metrics.get('n_pairs'))} pairs over {_fmt(metrics.get('n_queries'))} queries"
        + (f" ({n_ranked} with a relevant candidate, used for nDCG)." if n_ranked is not None else "."),
        "",
        "## Headline metrics",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    md += [f"| {key} | {_fmt(metrics.get(key))} |" for key in HEADLINE_KEYS]
    md += [
        "",
        "## Random-ranking baseline",
        "",
        "Expected nDCG of a uniformly random order of the same candidates; a scorer should clear it.",
        "",
        "| metric | run | random |",
        "|---|---:|---:|",
    ]
    for k in (5, 10):
        md.append(f"| ndcg@{k} | {_fmt(metrics.get(f'ndcg@{k}'))} | {_fmt(metrics.get(f'ndcg@{k}_random'))} |")
    md.append("")

    per_class, confusion = metrics.get("per_class"), metrics.get("confusion")
    md += ["## Per-class precision / recall / F1", ""]
    if per_class:
        md += ["| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
        for label, c in per_class.items():
            md.append(
                f"| {label} | {_fmt(c.get('precision'))} | {_fmt(c.get('recall'))} | {_fmt(c.get('f1'))} "
                f"| {_fmt(c.get('support'))} |"
            )
    else:
        md.append("n/a: the scorer gives no labels.")
    md += ["", "## Confusion matrix", ""]
    if confusion:
        labels = confusion["labels"]
        md += [
            "Rows: gold, columns: predicted.",
            "",
            "| gold \\ pred | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for label, row in zip(labels, confusion["matrix"], strict=True):
            md.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    else:
        md.append("n/a: the scorer gives no labels.")

    md += ["", "## Plots", ""]
    captions = {
        "confusion.png": "Confusion matrix",
        "reliability.png": "Reliability diagram",
        "ndcg_per_query.png": "Per-query nDCG@10",
    }
    for name, skipped in plots.items():
        if skipped is None:
            md.append(f"- [{captions[name]}]({name})")
        else:
            md.append(f"- {captions[name]}: skipped, {skipped}.")

    per_query = metrics.get("ndcg@10_per_query") or {}
    if per_query:
        worst = sorted(per_query.items(), key=lambda kv: (kv[1], kv[0]))[:5]
        md += ["", "## Lowest nDCG@10 queries", "", "| query_id | ndcg@10 |", "|---|---:|"]
        md += [f"| {_escape(q)} | {_fmt(v)} |" for q, v in worst]

    if rows:
        md += _error_section(rows, scheme)
    return "\n".join(md) + "\n"


def _error_section(rows: list[dict], scheme: LabelScheme, limit: int = 10) -> list[str]:
    """The pairs whose predicted grade is furthest from gold, to read alongside the aggregate numbers."""
    errors = []
    for row in rows:
        label = row.get("pred_label")
        if label is None and row.get("probs"):
            label = max(row["probs"].items(), key=lambda kv: kv[1])[0]
        if label is None:
            return []
        pred = scheme.grade_of(str(label))
        if pred != int(row["grade"]):
            errors.append((abs(pred - int(row["grade"])), pred, row))
    md = ["", "## Largest grading errors", ""]
    if not errors:
        return md + ["None: every pair got its gold grade."]
    errors.sort(key=lambda e: (-e[0], -float(e[2].get("score", 0.0))))
    md += ["| query_id | product_id | gold | predicted | score |", "|---|---|---|---|---:|"]
    for _, pred, row in errors[:limit]:
        gold_label, pred_label = scheme.label_of_value(int(row["grade"])), scheme.label_of_value(pred)
        md.append(
            f"| {_escape(row.get('query_id'))} | {_escape(row.get('product_id'))} "
            f"| {gold_label} | {pred_label} | {_fmt(row.get('score'))} |"
        )
    return md


def _plot_confusion(plt, confusion: dict, path: Path) -> None:
    labels, matrix = confusion["labels"], np.asarray(confusion["matrix"], dtype=int)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 1.1 * len(labels) + 2))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Confusion matrix")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            color = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_reliability(plt, bins: list[dict], ece: float | None, path: Path) -> None:
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["hi"] - bins[0]["lo"]
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    accuracy = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    ax.bar(centers, accuracy, width=width, edgecolor="black", alpha=0.8, label="accuracy")
    filled = [b for b in bins if b["count"]]
    ax.plot(
        [b["confidence"] for b in filled],
        [b["accuracy"] for b in filled],
        "o",
        color="tab:red",
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram" + (f" (ECE {ece:.4f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    ax_count.bar(centers, [b["count"] for b in bins], width=width, edgecolor="black", color="tab:gray")
    ax_count.set_xlabel("confidence")
    ax_count.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_ndcg_hist(plt, per_query: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if per_query:
        values = list(per_query.values())
        ax.hist(values, bins=np.linspace(0, 1, 21), edgecolor="black")
        ax.axvline(float(np.mean(values)), color="tab:red", linestyle="--", label=f"mean {np.mean(values):.4f}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no query with a relevant candidate", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_xlabel("nDCG@10")
    ax.set_ylabel("queries")
    ax.set_title("Per-query nDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.json at {path}")
    return json.loads(path.read_text())


def _run_name(run_dir: Path, metrics: dict) -> str:
    return str(metrics.get("name") or Path(run_dir).name)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return _escape(value)


def _escape(value) -> str:
    return str(value).replace("|", "\\|")


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metrics value of type {type(obj).__name__} is not JSON serialisable")
