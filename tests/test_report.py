"""Run reports: files written, numbers carried into report.md, and run comparison."""

from __future__ import annotations

import json

import pytest

from lref.eval.metrics import compute_metrics
from lref.eval.report import compare_runs, plot_comparison, write_report
from lref.labels import ESCI

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _p(e, s, c, i):
    return {"E": e, "S": s, "C": c, "I": i}


ROWS = [
    {"query_id": "q1", "product_id": "p1", "grade": 3, "score": 0.9, "probs": _p(0.8, 0.1, 0.05, 0.05)},
    {"query_id": "q1", "product_id": "p2", "grade": 0, "score": 0.2, "probs": _p(0.2, 0.1, 0.1, 0.6)},
    {"query_id": "q1", "product_id": "p3", "grade": 2, "score": 0.6, "probs": _p(0.4, 0.5, 0.05, 0.05)},
    {"query_id": "q2", "product_id": "p4", "grade": 0, "score": 0.99, "probs": _p(0.7, 0.1, 0.1, 0.1)},
    {"query_id": "q2", "product_id": "p5", "grade": 3, "score": 0.95, "probs": _p(0.9, 0.05, 0.03, 0.02)},
    {"query_id": "q3", "product_id": "p6", "grade": 0, "score": 0.1, "probs": _p(0.02, 0.03, 0.05, 0.9)},
]
BM25_ROWS = [{k: v for k, v in r.items() if k != "probs"} for r in ROWS]


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_write_report_with_probs(tmp_path):
    metrics = compute_metrics(ROWS, ESCI)
    run = tmp_path / "llm"
    write_report(run, metrics, ESCI, "LLM judge", rows=ROWS)

    assert json.loads((run / "metrics.json").read_text()) == metrics
    for name in ("confusion.png", "reliability.png", "ndcg_per_query.png"):
        assert _is_png(run / name), name

    md = (run / "report.md").read_text()
    assert md.startswith("# LLM judge")
    # nDCG@10 = (1 + 1/log2(3)) / 2 = 0.81546; accuracy 5/6 = 0.83333; macro-F1 0.65; ECE 1/3; AUC 4/6
    assert "| ndcg@10 | 0.8155 |" in md
    assert "| accuracy | 0.8333 |" in md
    assert "| macro_f1 | 0.6500 |" in md
    assert "| ece | 0.3333 |" in md
    assert "| auc_e_vs_i | 0.6667 |" in md
    assert "| n_pairs | 6 |" in md
    # random baseline for nDCG@10: (0.7987482 + 0.8154649) / 2 = 0.8071
    assert "| ndcg@10 | 0.8155 | 0.8071 |" in md
    # per-class row E: P 2/3, R 1, F1 0.8, support 2; confusion row gold I: 1 E, 0 S, 0 C, 2 I
    assert "| E | 0.6667 | 1.0000 | 0.8000 | 2 |" in md
    assert "| I | 1 | 0 | 0 | 2 |" in md
    assert "(confusion.png)" in md and "(reliability.png)" in md and "(ndcg_per_query.png)" in md
    # the over-graded pair is listed among the errors
    assert "| q2 | p4 | I | E | 0.9900 |" in md


def test_write_report_without_labels(tmp_path):
    metrics = compute_metrics(BM25_ROWS, ESCI)
    run = tmp_path / "bm25"
    write_report(run, metrics, "esci", "BM25")

    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert _is_png(run / "ndcg_per_query.png")
    assert not (run / "confusion.png").exists()
    assert not (run / "reliability.png").exists()
    md = (run / "report.md").read_text()
    assert "| accuracy | n/a |" in md and "| ece | n/a |" in md
    assert "| ndcg@10 | 0.8155 |" in md
    assert "Confusion matrix: skipped" in md and "Reliability diagram: skipped" in md


def test_compare_runs_and_plot(tmp_path):
    llm, bm25 = tmp_path / "llm", tmp_path / "bm25"
    write_report(llm, compute_metrics(ROWS, ESCI), ESCI, "LLM")
    named = compute_metrics(BM25_ROWS, ESCI) | {"name": "bm25-baseline"}
    write_report(bm25, named, ESCI, "BM25")

    table = compare_runs([llm, bm25])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| run | ndcg@5 | ndcg@10 | accuracy | macro_f1 |")
    assert len(lines) == 4  # header, separator, two runs
    assert lines[2] == ("| llm | 0.8155 | 0.8155 | 0.8333 | 0.6500 | 0.8333 | 0.1667 | 0.0000 | 0.6667 | 0.3333 | 6 |")
    assert lines[3] == "| bm25-baseline | 0.8155 | 0.8155 | n/a | n/a | n/a | n/a | n/a | 0.6667 | n/a | 6 |"

    assert compare_runs([llm], keys=["ece"]).splitlines()[2] == "| llm | 0.3333 |"

    out = tmp_path / "cmp" / "comparison.png"
    plot_comparison([llm, bm25], out)
    assert _is_png(out)


def test_compare_runs_missing_metrics(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        compare_runs([empty])
