"""Run a scorer on a judgments file and write scores, metrics and a report into a run folder.

`scores.jsonl` holds everything needed to recompute every metric: query, product, gold grade, score
and, where the scorer has them, the label probabilities and predicted label.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from lref.data import Corpus, write_jsonl
from lref.eval.metrics import compute_metrics
from lref.eval.report import write_report

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What the harness runs: anything with a `name` whose `score(corpus)` gives one dict per judgment.

    Each dict, in the corpus's judgment order, holds `score` and, for scorers that classify, `probs`
    ({label: p}) and `pred_label`. The command layer decides which scorer a name means (BM25 in `lref.rag.bm25`,
    the LLM judge in `lref.engines.judge`, the students in `lref.distill`); eval imports none of them.
    """

    name: str

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]: ...


def score_rows(corpus: Corpus, scorer: Scorer, progress: bool = True) -> list[dict]:
    results = scorer.score(corpus, progress=progress)
    if len(results) != len(corpus.judgments):
        raise RuntimeError(f"scorer {scorer.name} returned {len(results)} results for {len(corpus.judgments)} pairs")
    return [
        {"query_id": j.query_id, "product_id": j.product_id, "grade": j.grade, **r}
        for j, r in zip(corpus.judgments, results, strict=True)
    ]


def evaluate(
    corpus: Corpus, scorer: Scorer, out_dir: str | Path, name: str | None = None, progress: bool = True
) -> dict:
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
