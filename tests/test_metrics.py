"""Metrics checked against hand-computed values (arithmetic in the comments)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lref.eval.metrics import (
    auc_top_vs_bottom,
    classification_metrics,
    compute_metrics,
    expected_calibration_error,
    grading_rates,
    mean_ndcg,
    ndcg_per_query,
)
from lref.labels import ESCI

L3 = 1 / math.log2(3)  # discount of rank 2 = 0.6309297535714575


# ---------------------------------------------------------------- nDCG


def test_ndcg_known_order():
    # grades [3, 0, 2] -> gains [7, 0, 3]; scores rank item1 (gain 0), item2 (gain 3), item0 (gain 7).
    # DCG@3  = 0/1 + 3/log2(3) + 7/log2(4) = 1.8927893 + 3.5 = 5.3927893
    # IDCG@3 = 7/1 + 3/log2(3) + 0/2       = 7 + 1.8927893  = 8.8927893
    # nDCG@3 = 5.3927893 / 8.8927893 = 0.6064227
    res = ndcg_per_query(["q"] * 3, [3, 0, 2], [0.2, 0.9, 0.5], k=3)
    assert res["q"] == pytest.approx((3 * L3 + 3.5) / (7 + 3 * L3))
    assert res["q"] == pytest.approx(0.6064227, abs=1e-7)
    # k=2: DCG@2 = 0 + 3/log2(3) = 1.8927893, IDCG@2 = 7 + 1.8927893 -> 0.2128454
    res2 = ndcg_per_query(["q"] * 3, [3, 0, 2], [0.2, 0.9, 0.5], k=2)
    assert res2["q"] == pytest.approx(0.2128454, abs=1e-7)


def test_ndcg_ideal_order_is_one():
    res = ndcg_per_query(["q"] * 3, [3, 0, 2], [0.9, 0.1, 0.5], k=10)
    assert res == {"q": pytest.approx(1.0)}


def test_ndcg_ties_averaged():
    # scores [0.5, 0.5, 0.1]: items 0 and 1 tie for ranks 1-2, each rank gets the mean gain (7 + 0) / 2 = 3.5.
    # DCG  = 3.5/1 + 3.5/log2(3) + 3/2 = 3.5 + 2.2082541 + 1.5 = 7.2082541
    # IDCG = 7 + 3/log2(3) = 8.8927893 -> nDCG = 0.8105729
    res = ndcg_per_query(["q"] * 3, [3, 0, 2], [0.5, 0.5, 0.1], k=3)
    assert res["q"] == pytest.approx((3.5 + 3.5 * L3 + 1.5) / (7 + 3 * L3))
    assert res["q"] == pytest.approx(0.8105729, abs=1e-7)


def test_ndcg_single_candidate_and_all_zero_query():
    qids = ["single", "single0", "zero", "zero", "ok", "ok"]
    grades = [2, 0, 0, 0, 1, 3]
    scores = [0.3, 0.9, 0.1, 0.2, 0.9, 0.1]
    res = ndcg_per_query(qids, grades, scores, k=10)
    # "single": one relevant candidate -> 1.0; "single0" and "zero": ideal DCG 0 -> skipped.
    # "ok": gains [1, 7], order (1, 7): DCG = 1 + 7/log2(3) = 5.4165083, IDCG = 7 + 1/log2(3) = 7.6309298 -> 0.7098097
    assert set(res) == {"single", "ok"}
    assert res["single"] == 1.0
    assert res["ok"] == pytest.approx((1 + 7 * L3) / (7 + L3))
    assert mean_ndcg(qids, grades, scores, k=10) == pytest.approx((1.0 + (1 + 7 * L3) / (7 + L3)) / 2)


def test_mean_ndcg_none_without_relevant_candidates():
    assert mean_ndcg(["a", "a"], [0, 0], [0.1, 0.2], k=5) is None


def test_ndcg_equal_scores_is_permutation_average():
    grades = [3, 0, 2]
    gains = [2**g - 1 for g in grades]
    for k in (1, 2, 3):
        ideal = sorted(gains, reverse=True)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        expected = np.mean(
            [
                sum(g / math.log2(i + 2) for i, g in enumerate(perm[:k])) / idcg
                for perm in itertools.permutations(gains)
            ]
        )
        assert mean_ndcg(["q"] * 3, grades, [0.0] * 3, k=k) == pytest.approx(expected)


def test_ndcg_length_mismatch():
    with pytest.raises(ValueError, match="lengths differ"):
        ndcg_per_query(["q"], [1, 2], [0.1, 0.2], k=5)


# ---------------------------------------------------------------- classification


def test_classification_metrics_tiny_confusion():
    gold = [3, 3, 3, 2, 0, 0]
    pred = [3, 3, 2, 2, 0, 3]
    m = classification_metrics(gold, pred, ESCI)
    # correct: items 0, 1, 3, 4 -> 4/6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # E: predicted {0,1,5}, gold {0,1,2}: TP 2 -> P 2/3, R 2/3, F1 2/3
    # S: predicted {2,3}, gold {3}: TP 1 -> P 1/2, R 1, F1 2*(1/2)/(3/2) = 2/3
    # C: never gold nor predicted -> 0 (zero_division=0)
    # I: predicted {4}, gold {4,5}: TP 1 -> P 1, R 1/2, F1 2/3
    pc = m["per_class"]
    assert pc["E"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert pc["S"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert pc["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert pc["I"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    # macro = (2/3 + 2/3 + 0 + 2/3) / 4 = 0.5; weighted = (3*2/3 + 1*2/3 + 0 + 2*2/3) / 6 = 4/6
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["weighted_f1"] == pytest.approx(4 / 6)
    assert m["confusion"] == {
        "labels": ["E", "S", "C", "I"],
        "matrix": [
            [2, 1, 0, 0],  # gold E: 2 predicted E, 1 predicted S
            [0, 1, 0, 0],  # gold S
            [0, 0, 0, 0],  # gold C
            [1, 0, 0, 1],  # gold I: 1 predicted E, 1 predicted I
        ],
    }


def test_grading_rates():
    # pairs (gold, pred): (0,1) over, (1,1), (2,3) over, (3,2) under -> over 2/4, under 1/4
    assert grading_rates([0, 1, 2, 3], [1, 1, 3, 2]) == (pytest.approx(0.5), pytest.approx(0.25))


# ---------------------------------------------------------------- AUC


def test_auc_with_tie():
    # E scores {0.9, 0.4}, I scores {0.4, 0.1}; the grade-2 item is ignored.
    # pairs: (0.9>0.4)=1, (0.9>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1 -> 3.5/4 = 0.875
    assert auc_top_vs_bottom([3, 3, 0, 0, 2], [0.9, 0.4, 0.4, 0.1, 0.99], top=3, bottom=0) == pytest.approx(0.875)


def test_auc_none_when_one_side_empty():
    assert auc_top_vs_bottom([3, 2, 1], [0.1, 0.2, 0.3], top=3, bottom=0) is None
    assert auc_top_vs_bottom([0, 1], [0.1, 0.2], top=3, bottom=0) is None


# ---------------------------------------------------------------- ECE


def test_ece_hand_computed():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.30, 0.70], [0.25, 0.75]])
    gold = [0, 1, 1, 0]
    # conf / correct: 0.95 yes (bin 9), 0.85 no (bin 8), 0.70 yes (bin 7), 0.75 no (bin 7)
    # bin 7: conf (0.70+0.75)/2 = 0.725, acc 0.5 -> 2/4 * 0.225 = 0.1125
    # bin 8: conf 0.85, acc 0 -> 1/4 * 0.85 = 0.2125
    # bin 9: conf 0.95, acc 1 -> 1/4 * 0.05 = 0.0125
    # ECE = 0.3375
    ece, bins = expected_calibration_error(probs, gold, n_bins=10)
    assert ece == pytest.approx(0.3375)
    assert len(bins) == 10
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 0, 2, 1, 1]
    assert bins[7] == pytest.approx({"lo": 0.7, "hi": 0.8, "count": 2, "confidence": 0.725, "accuracy": 0.5})
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None


def test_ece_bin_edges():
    # confidence 0.5 opens bin [0.5, 0.6); 1.0 falls in the closed last bin [0.9, 1.0]; both correct.
    # ECE = 1/2 * |1 - 0.5| + 1/2 * |1 - 1.0| = 0.25
    ece, bins = expected_calibration_error(np.array([[0.5, 0.5], [0.0, 1.0]]), [0, 1], n_bins=10)
    assert bins[5]["count"] == 1 and bins[9]["count"] == 1
    assert ece == pytest.approx(0.25)


# ---------------------------------------------------------------- compute_metrics


def _p(e, s, c, i):
    return {"E": e, "S": s, "C": c, "I": i}


ROWS = [
    # q1: ranking p1 (E), p3 (S), p2 (I) is ideal
    {"query_id": "q1", "product_id": "p1", "grade": 3, "score": 0.9, "probs": _p(0.8, 0.1, 0.05, 0.05)},
    {"query_id": "q1", "product_id": "p2", "grade": 0, "score": 0.2, "probs": _p(0.2, 0.1, 0.1, 0.6)},
    {"query_id": "q1", "product_id": "p3", "grade": 2, "score": 0.6, "probs": _p(0.4, 0.5, 0.05, 0.05)},
    # q2: the irrelevant p4 is ranked above the exact p5 and over-graded as E
    {"query_id": "q2", "product_id": "p4", "grade": 0, "score": 0.99, "probs": _p(0.7, 0.1, 0.1, 0.1)},
    {"query_id": "q2", "product_id": "p5", "grade": 3, "score": 0.95, "probs": _p(0.9, 0.05, 0.03, 0.02)},
    # q3: only an irrelevant candidate -> no nDCG
    {"query_id": "q3", "product_id": "p6", "grade": 0, "score": 0.1, "probs": _p(0.02, 0.03, 0.05, 0.9)},
]
# q1 nDCG = 1; q2: gains (0, 7): DCG = 7/log2(3) = 4.4165, IDCG = 7 -> 1/log2(3) = 0.6309298
NDCG_Q2 = L3
# random: q1 mean gain 10/3 over ranks 1-3: 10/3 * (1 + 0.6309298 + 0.5) / (7 + 3*0.6309298) = 0.7987482
#         q2 mean gain 3.5 over ranks 1-2: 3.5 * (1 + 0.6309298) / 7 = 0.8154649
RANDOM_Q1 = 10 / 3 * (1 + L3 + 0.5) / (7 + 3 * L3)
RANDOM_Q2 = 3.5 * (1 + L3) / 7


def _random_by_permutations(grades: list[int], k: int) -> float:
    gains = [2**g - 1 for g in grades]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gains, reverse=True)[:k]))
    return float(
        np.mean([sum(g / math.log2(i + 2) for i, g in enumerate(p[:k])) / idcg for p in itertools.permutations(gains)])
    )


def test_compute_metrics_with_probs():
    m = compute_metrics(ROWS, ESCI)
    assert m["n_pairs"] == 6 and m["n_queries"] == 3 and m["n_queries_ranked"] == 2
    assert m["ndcg@10_per_query"] == pytest.approx({"q1": 1.0, "q2": NDCG_Q2})
    assert m["ndcg@10"] == pytest.approx((1 + NDCG_Q2) / 2)  # 0.8154649
    assert m["ndcg@5"] == pytest.approx((1 + NDCG_Q2) / 2)
    # random baseline equals the average over all orders of each query's candidates
    expected_random = (_random_by_permutations([3, 0, 2], 10) + _random_by_permutations([0, 3], 10)) / 2
    assert m["ndcg@10_random"] == pytest.approx(expected_random)
    assert m["ndcg@10_random"] == pytest.approx((RANDOM_Q1 + RANDOM_Q2) / 2)
    assert m["ndcg@5_random"] == pytest.approx(expected_random)
    # argmax preds: E, I, S, E, E, I vs gold E, I, S, I, E, I -> only p4 wrong (over-graded)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["over_grading_rate"] == pytest.approx(1 / 6)
    assert m["under_grading_rate"] == 0.0
    # E: P 2/3 R 1 F1 0.8; S: 1 1 1; C: 0; I: P 1 R 2/3 F1 0.8
    # macro = (0.8 + 1 + 0 + 0.8) / 4 = 0.65; weighted = (2*0.8 + 1*1 + 3*0.8) / 6 = 5/6
    assert m["macro_f1"] == pytest.approx(0.65)
    assert m["weighted_f1"] == pytest.approx(5 / 6)
    assert m["per_class"]["E"]["f1"] == pytest.approx(0.8)
    # AUC E vs I: E scores {0.9, 0.95}, I scores {0.2, 0.99, 0.1}: each E beats 2 of 3 -> 4/6
    assert m["auc_e_vs_i"] == pytest.approx(4 / 6)
    # ECE: confidences 0.8 ok, 0.6 ok, 0.5 ok, 0.7 wrong, 0.9 ok, 0.9 ok, one bin each except 0.9 (two)
    # gaps: 0.2, 0.4, 0.5, 0.7, 0.1 (x2) -> (0.2 + 0.4 + 0.5 + 0.7 + 0.1 + 0.1) / 6 = 2/6
    assert m["ece"] == pytest.approx(1 / 3)
    assert sum(b["count"] for b in m["reliability"]) == 6
    assert m["confusion"]["matrix"][3] == [1, 0, 0, 2]  # gold I: one predicted E, two predicted I


def test_compute_metrics_pred_label_wins_over_probs():
    rows = [dict(r, pred_label="I") for r in ROWS]  # everything predicted I: gold I are 3 of 6
    m = compute_metrics(rows, ESCI)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["over_grading_rate"] == 0.0 and m["under_grading_rate"] == pytest.approx(0.5)
    assert m["ece"] == pytest.approx(1 / 3)  # ECE still comes from probs


def test_compute_metrics_labels_without_probs():
    rows = [{k: v for k, v in r.items() if k != "probs"} | {"pred_label": "E"} for r in ROWS]
    m = compute_metrics(rows, ESCI)
    assert m["accuracy"] == pytest.approx(2 / 6)  # gold E: p1, p5
    assert m["ece"] is None and m["reliability"] is None


def test_compute_metrics_bm25_like_rows():
    rows = [{k: v for k, v in r.items() if k != "probs"} | {"probs": None} for r in ROWS]
    m = compute_metrics(rows, ESCI)
    for key in ("accuracy", "macro_f1", "weighted_f1", "over_grading_rate", "under_grading_rate", "ece"):
        assert m[key] is None, key
    assert m["per_class"] is None and m["confusion"] is None and m["reliability"] is None
    # ranking metrics are the same as with probs: they only use the scores
    assert m["ndcg@10"] == pytest.approx((1 + NDCG_Q2) / 2)
    assert m["auc_e_vs_i"] == pytest.approx(4 / 6)
    assert m["n_pairs"] == 6


def test_compute_metrics_inconsistent_rows():
    rows = [dict(r) for r in ROWS]
    del rows[2]["probs"]
    with pytest.raises(ValueError, match="inconsistent rows.*'probs'"):
        compute_metrics(rows, ESCI)
    rows = [dict(r) for r in ROWS]
    rows[0]["pred_label"] = "E"
    with pytest.raises(ValueError, match="inconsistent rows.*'pred_label'"):
        compute_metrics(rows, ESCI)


def test_compute_metrics_bad_rows():
    with pytest.raises(ValueError, match="no rows"):
        compute_metrics([], ESCI)
    with pytest.raises(ValueError, match="grade 7"):
        compute_metrics([{"query_id": "q", "product_id": "p", "grade": 7, "score": 1.0}], ESCI)
    with pytest.raises(ValueError, match="lacks"):
        compute_metrics([{"query_id": "q", "product_id": "p", "grade": 1}], ESCI)
