import numpy as np
import pytest

from lref.labels import ESCI
from lref.train.selection import (
    SelectionSpec,
    adjacent_confusion,
    budget_count,
    class_balance,
    confusions,
    imcims_keep,
    k_center,
    query_tiers,
    select,
    tier_balanced_sample,
    uncertainty,
)


def test_imcims_keep_rule_every_combination():
    gold = ["E"] * 8
    cases = [(im, ci, ms) for im in ("S", "E") for ci in ("E", "C") for ms in ("S", "E")]
    im, ci, ms = zip(*cases, strict=True)
    keep, reasons = imcims_keep(gold, im, ci, ms)
    # only IM wrong (S), CI right (E) and MS not reproducing the human label (S) keeps the row
    assert keep == [c == ("S", "E", "S") for c in cases]
    assert "IM predicted S (wrong)" in reasons[0] and "no mislabel flag" in reasons[0]
    assert "flags a likely mislabel" in reasons[1]


def test_budget_and_confusions():
    assert budget_count(0.1, 50) == 5 and budget_count(7, 50) == 7 and budget_count(500, 50) == 50
    with pytest.raises(ValueError):
        budget_count(0, 10)
    assert [adjacent_confusion(lab, ESCI) for lab in "ESCI"] == ["S", "E", "S", "C"]
    recs = [{"label": "E"}, {"label": "I"}]
    probs = np.array([[0.5, 0.1, 0.3, 0.1], [0.1, 0.2, 0.3, 0.4]])
    assert confusions(recs, ESCI, probs) == ["C", "C"]  # the teacher's best wrong label


def test_tiers_and_balanced_sample():
    recs = [{"query_id": q} for q, n in (("a", 6), ("b", 3), ("c", 1)) for _ in range(n)]
    tiers = query_tiers(recs)
    assert tiers == {"a": "head", "b": "torso", "c": "tail"}
    picks = tier_balanced_sample(recs, tiers, 3)
    assert sorted(tiers[recs[i]["query_id"]] for i in picks) == ["head", "tail", "torso"]
    traffic = [{"query_id": "a", "freq": 1}, {"query_id": "b", "freq": 100}, {"query_id": "c", "freq": 5}]
    assert query_tiers(traffic, "freq") == {"b": "head", "c": "torso", "a": "tail"}


def test_uncertainty_kinds():
    p = np.array([[0.25, 0.25, 0.25, 0.25], [0.97, 0.01, 0.01, 0.01], [0.5, 0.5, 0.0, 0.0]])
    ent = uncertainty(p, "entropy")
    assert ent[0] == pytest.approx(np.log(4)) and ent[1] < ent[2] < ent[0]
    assert uncertainty(p, "margin").tolist() == pytest.approx([1.0, 0.04, 1.0])


def test_k_center_picks_the_far_clusters():
    emb = np.array([[0, 0], [0.1, 0], [10, 0], [10, 0.1], [0, 10]], dtype=float)
    idx, _ = k_center(emb, 3)
    assert {tuple(emb[i].round()) for i in idx} == {(0, 0), (10, 0), (0, 10)}
    idx, d = k_center(emb, 1, centers=[0, 2], candidates=[1, 3, 4])
    assert idx == [4] and d[0] == pytest.approx(10.0)


def test_class_balance():
    labels = ["E"] * 10 + ["I"] * 3 + ["C"]
    picks = class_balance(labels, 6)
    got = sorted(labels[i] for i in picks)
    assert got == ["C", "E", "E", "I", "I", "I"]  # rarest label first, round-robin


def test_select_records_why_and_respects_budget():
    recs = [
        {"query_id": str(i % 4), "query": f"q{i % 4}", "product_text": f"Title: thing {i}", "label": lab}
        for i, lab in enumerate("EEEEEEEESSSCII" * 2)
    ]
    rows, summary = select(recs, ESCI, SelectionSpec(methods=("balance", "random"), budget=0.5))
    assert len(rows) == 14 == summary["selected"]
    assert {r["selected_by"] for r in rows} == {"balance", "random"}
    assert all(r["reason"] for r in rows)
    bal = [r["label"] for r in rows if r["selected_by"] == "balance"]
    assert sorted(set(bal)) == ["C", "E", "I", "S"]
