"""The ablation of a pipeline run: the eval metrics after each stage, beside the BM25 baseline on the same split.

Writes `ablation.json` (a list of {stage, macro_f1, accuracy, over_grading_rate, under_grading_rate, ndcg@10}),
`ablation.md` (a Markdown table) and `ablation.png` (the metrics by stage).
"""

from __future__ import annotations

import json
from pathlib import Path

KEYS = ("macro_f1", "accuracy", "over_grading_rate", "under_grading_rate", "ndcg@10")


def ablation_rows(pairs: list[tuple[str, Path]]) -> list[dict]:
    rows = []
    for stage, run in pairs:
        path = Path(run) / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no metrics for stage {stage!r} (run `lref eval --out {run}` first)")
        m = json.loads(path.read_text(encoding="utf-8"))
        rows.append({"stage": stage, **{k: m.get(k) for k in KEYS}, "n_pairs": m.get("n_pairs")})
    return rows


def ablation_table(rows: list[dict]) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    head = "| stage | macro-F1 | accuracy | over-grading | under-grading | nDCG@10 | pairs |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        vals = " | ".join(fmt(r[k]) for k in KEYS)
        lines.append(f"| {r['stage']} | {vals} | {r['n_pairs']} |")
    return "\n".join(lines)


def plot_ablation(rows: list[dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [r["stage"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in KEYS:
        ys = [r[k] if r[k] is not None else float("nan") for r in rows]
        ax.plot(stages, ys, marker="o", label=k)
    ax.set_ylim(0, 1)
    ax.set_xlabel("stage")
    ax.set_title("lref pipeline ablation (held-out split)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_ablation(pairs: list[tuple[str, Path]], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    rows = ablation_rows(pairs)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    table = ablation_table(rows)
    (out / "ablation.md").write_text(table + "\n", encoding="utf-8")
    plot_ablation(rows, out / "ablation.png")
    return table
