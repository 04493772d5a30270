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
    corpus: Corpus,
    scorer: Scorer,
    out_dir: str | Path,
    name: str | None = None,
    progress: bool = True,
    perturb: str | None = None,
    perturb_seed: int = 0,
    perturb_per_query: int = 1,
) -> dict:
    """Score every judged pair, then write scores.jsonl, metrics.json, report.md and plots to `out_dir`.

    With `perturb` (one of `lref.eval.perturb.KINDS`), the scorer also scores a copy of the corpus whose
    targets (up to `perturb_per_query` irrelevant products per query, drawn with `perturb_seed`) carry that
    seller-written attack: `scores_perturbed.jsonl`, and `metrics["robustness"]` (nDCG@10 change, share of
    targets moved into the top 10) in metrics.json and report.md. The other metrics stay those of the clean run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = score_rows(corpus, scorer, progress)
    write_jsonl(out_dir / "scores.jsonl", rows)
    metrics = compute_metrics(rows, corpus.scheme)
    metrics["name"] = name or scorer.name
    metrics["scorer"] = scorer.name
    if perturb:
        from lref.eval.perturb import perturb_corpus, pick_targets, report_section, robustness

        targets = pick_targets(corpus, perturb_seed, perturb_per_query)
        attacked = score_rows(perturb_corpus(corpus, perturb, targets), scorer, progress)
        write_jsonl(out_dir / "scores_perturbed.jsonl", attacked)
        r = robustness(rows, attacked, targets, perturb)
        metrics["robustness"] = {**r, "seed": perturb_seed, "per_query": perturb_per_query, "targets": targets}
        log.info(
            "%s: nDCG@10 %s -> %s, %s of %s attacked products moved into the top 10",
            perturb, r["ndcg@10_clean"], r["ndcg@10_perturbed"], r["moved_into_top10"], r["n_outside_top10_clean"],
        )  # fmt: skip
    write_report(out_dir, metrics, corpus.scheme, title=f"lref eval: {metrics['name']}", rows=rows)
    if perturb:
        with (out_dir / "report.md").open("a", encoding="utf-8") as f:
            f.write("\n" + report_section(metrics["robustness"]))
    log.info("wrote %s (nDCG@10 %s over %d queries)", out_dir, metrics["ndcg@10"], metrics["n_queries"])
    return metrics
