"""Tag evaluation: topic accuracy against the catalogue category path, coverage, style/quality distributions.

Accuracy is measured on held-out products only (kept out of the exemplar index), at level 1 (the root
category) and level 2 (root and second level must both match). A product without a predicted topic
counts as wrong; products without a category path are left out of accuracy; level 2 counts only
products whose path has two levels. Confidence of the level-1 topic is checked for calibration (ECE).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lref.data import Product

log = logging.getLogger(__name__)
SEP = " > "


def _level(topics: list[str], level: int) -> tuple[str, ...] | None:
    for t in topics:
        parts = tuple(t.split(SEP))
        if len(parts) == level:
            return parts
    deeper = [tuple(t.split(SEP)) for t in topics if t.count(SEP) + 1 > level]
    return deeper[0][:level] if deeper else None


def ece(conf: list[float], correct: list[bool], bins: int = 10) -> tuple[float | None, list[dict]]:
    if not conf:
        return None, []
    c, y = np.asarray(conf), np.asarray(correct, dtype=float)
    idx = np.minimum((c * bins).astype(int), bins - 1)  # bin i holds [i/bins, (i+1)/bins); 1.0 in the last
    out, total = [], 0.0
    for i in range(bins):
        m = idx == i
        if m.any():
            out.append({"lo": i / bins, "hi": (i + 1) / bins, "n": int(m.sum()),
                        "confidence": float(c[m].mean()), "accuracy": float(y[m].mean())})  # fmt: skip
            total += m.sum() * abs(c[m].mean() - y[m].mean())
    return float(total / len(c)), out


def tag_metrics(products: Mapping[str, Product], rows: list[dict], holdout: set[str] | None = None) -> dict:
    """Metrics over the tags rows of held-out products (all rows when `holdout` is None)."""
    rows = [r for r in rows if holdout is None or r["product_id"] in holdout]
    n1 = c1 = n2 = c2 = 0
    conf1, ok1 = [], []
    errors = Counter()
    for r in rows:
        p = products.get(r["product_id"])
        if p is None or not p.category:
            continue
        gold = tuple(p.category)
        pred1 = _level(r.get("topic") or [], 1)
        n1 += 1
        hit = pred1 is not None and pred1 == gold[:1]
        c1 += hit
        conf1.append(float((r.get("confidence") or {}).get(f"topic:{pred1[0]}", 0.0)) if pred1 else 0.0)
        ok1.append(bool(hit))
        if not hit:
            errors[(gold[0], pred1[0] if pred1 else "(none)")] += 1
        if len(gold) >= 2:
            n2 += 1
            pred2 = _level(r.get("topic") or [], 2)
            c2 += pred2 is not None and pred2 == gold[:2]
    n = len(rows)
    style = Counter(s for r in rows for s in r.get("style") or [])
    quality: dict[str, dict[str, int]] = {}
    for r in rows:
        for dim, v in (r.get("quality") or {}).items():
            quality.setdefault(dim, Counter())[v.get("level", "?")] += 1
    e, rel = ece(conf1, ok1)
    return {
        "n_products": n,
        "n_with_category": n1,
        "n_with_level2": n2,
        "topic_acc_l1": c1 / n1 if n1 else None,
        "topic_acc_l2": c2 / n2 if n2 else None,
        "coverage": sum(bool(r.get("topic")) for r in rows) / n if n else None,
        "style_coverage": sum(bool(r.get("style")) for r in rows) / n if n else None,
        "topic_l1_ece": e,
        "topic_l1_reliability": rel,
        "style_distribution": dict(style.most_common()),
        "quality_distribution": {k: dict(v) for k, v in quality.items()},
        "top_l1_confusions": [{"gold": g, "pred": p, "n": k} for (g, p), k in errors.most_common(10)],
    }


def write_tag_report(out: str | Path, metrics: dict, title: str = "Tag evaluation") -> Path:
    """metrics.json, report.md and PNG plots (style and quality distributions, topic reliability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    style = metrics["style_distribution"]
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(style)[:20]
    ax.barh(names[::-1], [style[n] for n in names][::-1])
    ax.set_xlabel("products")
    ax.set_title("style tags")
    fig.tight_layout()
    fig.savefig(out / "style.png", dpi=100)
    plt.close(fig)

    dims = metrics["quality_distribution"]
    fig, axes = plt.subplots(1, max(1, len(dims)), figsize=(3.2 * max(1, len(dims)), 3.2), squeeze=False)
    for ax, (dim, levels) in zip(axes[0], dims.items(), strict=False):
        ax.bar(list(levels), list(levels.values()))
        ax.set_title(dim)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=100)
    plt.close(fig)

    rel = metrics["topic_l1_reliability"]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    if rel:
        ax.plot([b["confidence"] for b in rel], [b["accuracy"] for b in rel], "o-")
    ax.set_xlabel("level-1 topic confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("topic reliability")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)

    fmt = lambda v: "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [
        f"# {title}",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[
            f"| {k} | {fmt(metrics.get(k))} |"
            for k in ("topic_acc_l1", "topic_acc_l2", "coverage", "style_coverage", "topic_l1_ece", "n_products")
        ],
        "",
        "Accuracy is on products held out of the exemplar index; level 2 requires root and second level to match.",
        "",
        "## Most frequent level-1 confusions",
        "",
        "| gold | predicted | n |",
        "| --- | --- | --- |",
        *[f"| {c['gold']} | {c['pred']} | {c['n']} |" for c in metrics["top_l1_confusions"]],
        "",
        "## Plots",
        "",
        "![style](style.png) ![quality](quality.png) ![reliability](reliability.png)",
        "",
    ]
    if "setup" in metrics:
        lines += ["## Setup", "", "```json", json.dumps(metrics["setup"], indent=1), "```", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return out
