"""Run a scorer on a judgments file and write scores, metrics and a report into a run folder.

`scores.jsonl` holds everything needed to recompute every metric: query, product, gold grade, score
and, where the scorer has them, the label probabilities and predicted label.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lref.data import Corpus
from lref.eval.metrics import compute_metrics
from lref.eval.report import write_report

log = logging.getLogger(__name__)


def score_rows(corpus: Corpus, scorer, progress: bool = True) -> list[dict]:
    results = scorer.score(corpus, progress=progress)
    if len(results) != len(corpus.judgments):
        raise RuntimeError(f"scorer {scorer.name} returned {len(results)} results for {len(corpus.judgments)} pairs")
    return [
        {"query_id": j.query_id, "product_id": j.product_id, "grade": j.grade, **r}
        for j, r in zip(corpus.judgments, results, strict=True)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate(corpus: Corpus, scorer, out_dir: str | Path, name: str | None = None, progress: bool = True) -> dict:
    """Score every judged pair, then write scores.jsonl, metrics.json, report.md and plots to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = score_rows(corpus, scorer, progress)
    write_jsonl(out_dir / "scores.jsonl", rows)
    metrics = compute_metrics(rows, corpus.scheme)
    metrics["name"] = name or scorer.name
    metrics["scorer"] = scorer.name
    write_report(out_dir, metrics, corpus.scheme, title=f"lref eval: {metrics['name']}", rows=rows)
    log.info("wrote %s (nDCG@10 %s over %d queries)", out_dir, metrics["ndcg@10"], metrics["n_queries"])
    return metrics
