import json
import subprocess
import sys

import pytest

from lref.cli import main
from lref.data import read_jsonl
from lref.eval.metrics import compute_metrics
from lref.labels import ESCI

METRIC_KEYS = {
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
    "n_queries",
}


def test_help_and_bm25_never_import_torch(esci_slice, tmp_path):
    code = (
        "import sys\nfrom lref.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"assert main(['eval', '--scorer', 'bm25', '--data', r'{esci_slice}', '--out', r'{tmp_path / 'r'}']) == 0\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "r" / "metrics.json").exists()


def test_eval_bm25_and_llm_end_to_end(esci_slice, tiny_model, tmp_path):
    for scorer in ("bm25", "llm"):
        out = tmp_path / scorer
        argv = ["eval", "--scorer", scorer, "--data", str(esci_slice), "--out", str(out)]
        if scorer == "llm":
            argv += ["--model", str(tiny_model)]
        assert main(argv) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert METRIC_KEYS <= metrics.keys()
        assert metrics["n_queries"] == 4
        rows = read_jsonl(out / "scores.jsonl")
        assert len(rows) == metrics["n_pairs"]
        assert {"query_id", "product_id", "grade", "score"} <= rows[0].keys()
        # every metric can be recomputed from scores.jsonl alone
        again = compute_metrics(rows, ESCI)
        for k in METRIC_KEYS:
            assert again[k] == pytest.approx(metrics[k]) if metrics[k] is not None else again[k] is None
        assert (out / "report.md").exists()
        if scorer == "llm":
            assert set(rows[0]["probs"]) == {"E", "S", "C", "I"}
            assert metrics["accuracy"] is not None and (out / "confusion.png").exists()
            assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert metrics["accuracy"] is None and 0.5 < metrics["ndcg@10"] <= 1.0
    assert main(["compare", str(tmp_path / "bm25"), str(tmp_path / "llm"), "--out", str(tmp_path / "cmp.md")]) == 0
    table = (tmp_path / "cmp.md").read_text()
    assert "| bm25 |" in table and "| llm |" in table and (tmp_path / "cmp.png").exists()


def test_score_command_writes_one_line_per_pair(esci_slice, tiny_model, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert (
        main(["score", "--model", str(tiny_model), "--data", str(esci_slice), "--queries", "1", "--out", str(out)])
        == 0
    )
    rows = read_jsonl(out)
    n = sum(
        1
        for line in (esci_slice / "judgments.tsv").read_text().splitlines()[1:]
        if line.split("\t")[0] == rows[0]["query_id"]
    )
    assert len(rows) == n
    for r in rows:
        assert abs(sum(r["probs"].values()) - 1) < 1e-6 and 0 <= r["score"] <= 1
        assert r["pred_label"] == max(r["probs"], key=r["probs"].get)


def test_judgments_flag_uses_another_file(esci_slice, tmp_path):
    lines = (esci_slice / "judgments.tsv").read_text().splitlines()
    other = tmp_path / "other.tsv"
    other.write_text("\n".join(lines[:6]) + "\n")
    assert main(["eval", "--data", str(esci_slice), "--judgments", str(other), "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n_pairs"] == 5


def test_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "products.jsonl").write_text('{"product_id": "A", "title": "x"}\n{broken\n')
    (d / "judgments.tsv").write_text("query_id\tquery\tproduct_id\tesci_label\nq\tx\tA\tE\n")
    assert main(["eval", "--data", str(d), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "products.jsonl, line 2: bad JSON" in err and "Traceback" not in err
    assert main(["eval", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "data folder not found" in capsys.readouterr().err


def test_config_file_sets_flags_and_flags_win(esci_slice, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {esci_slice}\nscorer: bm25\nout: {tmp_path / 'from_config'}\nqueries: 2\n")
    assert main(["eval", "--config", str(cfg)]) == 0
    assert json.loads((tmp_path / "from_config" / "metrics.json").read_text())["n_queries"] == 2
    assert main(["eval", "--config", str(cfg), "--queries", "3", "--out", str(tmp_path / "flag")]) == 0
    assert json.loads((tmp_path / "flag" / "metrics.json").read_text())["n_queries"] == 3
    cfg.write_text("bogus: 1\n")
    assert main(["eval", "--config", str(cfg), "--data", "x", "--out", "y"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


def test_config_file_reaches_nested_subcommands(esci_slice, tmp_path):
    cfg = tmp_path / "split.yaml"
    cfg.write_text(f"data: {esci_slice}\ntest_fraction: 0.5\nout: {tmp_path / 'split'}\n")
    assert main(["distill", "split", "--config", str(cfg)]) == 0
    split = json.loads((tmp_path / "split" / "split.json").read_text())
    assert len(split["train"]) == 2 and len(split["test"]) == 2


def test_training_on_evaluated_queries_is_refused(esci_slice, tiny_model, tmp_path, capsys):
    (tmp_path / "held.txt").write_text("q1\n")
    rows = tmp_path / "train.jsonl"
    row = {"query_id": "q1", "query": "x", "product_id": "P", "product_text": "Title: y", "label": "E", "grade": 3}
    rows.write_text(json.dumps(row) + "\n")
    argv = ["sft", "--data", str(esci_slice), "--train", str(rows), "--model", str(tiny_model)]
    assert main([*argv, "--eval-query-ids", str(tmp_path / "held.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "also in --eval-query-ids" in capsys.readouterr().err
