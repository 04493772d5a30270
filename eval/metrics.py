"""Relevance-evaluation metrics: ranking quality (nDCG, AUC), label quality (accuracy, F1, grading bias) and
calibration (ECE).

All functions are pure: they take gold grades, scores and predictions and return plain Python values (floats,
dicts, lists) so the result can be dumped to JSON as is. `compute_metrics` turns the rows of a scores.jsonl into the
flat metrics dict that `eval.report` renders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    ndcg_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from lref.labels import LabelScheme

log = logging.getLogger(__name__)

NDCG_KS = (5, 10)


def classification_metrics(gold: Sequence[int], pred: Sequence[int], scheme: LabelScheme) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1 and the confusion matrix of predicted vs gold grades.

    F1 is taken over every grade of the scheme (`labels=scheme.values`, zero_division=0), so a grade that is neither
    in gold nor predicted counts as F1 0 in the macro average: the number is comparable across runs on the same scheme.
    Confusion rows are gold, columns predicted, both in scheme order (highest grade first).
    """
    gold_a, pred_a = _as_int_arrays(gold, pred)
    values = scheme.values
    precision, recall, f1, support = precision_recall_fscore_support(gold_a, pred_a, labels=values, zero_division=0)
    per_class = {
        g.label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, g in enumerate(scheme.grades)
    }
    matrix = confusion_matrix(gold_a, pred_a, labels=values)
    return {
        "accuracy": float(accuracy_score(gold_a, pred_a)),
        "macro_f1": float(f1_score(gold_a, pred_a, labels=values, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold_a, pred_a, labels=values, average="weighted", zero_division=0)),
        "per_class": per_class,
        "confusion": {"labels": scheme.labels, "matrix": matrix.astype(int).tolist()},
    }


def grading_rates(gold: Sequence[int], pred: Sequence[int]) -> tuple[float, float]:
    """(over-grading rate, under-grading rate): the share of pairs graded above / below their gold grade.

    Reported apart from accuracy because the two errors cost differently: over-grading promotes irrelevant products.
    """
    gold_a, pred_a = _as_int_arrays(gold, pred)
    return float(np.mean(pred_a > gold_a)), float(np.mean(pred_a < gold_a))


def ndcg_per_query(
    query_ids: Sequence[str], gold_grades: Sequence[int], scores: Sequence[float], k: int
) -> dict[str, float]:
    """nDCG@k of each query: gain 2^grade - 1, log2 discount, ranked by score descending, tied scores averaged.

    Queries with ideal DCG 0 (every candidate grade 0) have no defined nDCG and are left out. A query with a single
    candidate scores 1.0 (any ranking of one item is ideal); sklearn refuses those, so they are handled here.
    """
    if not len(query_ids) == len(gold_grades) == len(scores):
        raise ValueError(
            f"ndcg_per_query: lengths differ (query_ids={len(query_ids)}, grades={len(gold_grades)}, "
            f"scores={len(scores)})"
        )
    if k < 1:
        raise ValueError(f"ndcg_per_query: k must be >= 1, got {k}")
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for qid, grade, score in zip(query_ids, gold_grades, scores, strict=True):
        gains, scs = groups.setdefault(str(qid), ([], []))
        gains.append(2.0 ** int(grade) - 1.0)
        scs.append(float(score))
    out: dict[str, float] = {}
    for qid, (gains, scs) in groups.items():
        if max(gains) <= 0:
            continue
        if len(gains) == 1:
            out[qid] = 1.0
            continue
        # y_true holds the exponential gains, so sklearn's linear-gain nDCG is the 2^g - 1 variant.
        out[qid] = float(ndcg_score([gains], [scs], k=k, ignore_ties=False))
    return out


def mean_ndcg(query_ids: Sequence[str], gold_grades: Sequence[int], scores: Sequence[float], k: int) -> float | None:
    """Mean of `ndcg_per_query` over the queries that have one; None when no query has a relevant candidate."""
    per_query = ndcg_per_query(query_ids, gold_grades, scores, k)
    if not per_query:
        return None
    return float(np.mean(list(per_query.values())))


def auc_top_vs_bottom(gold_grades: Sequence[int], scores: Sequence[float], top: int, bottom: int) -> float | None:
    """ROC AUC of the score separating the `top` grade from the `bottom` grade, pooled over all queries.

    Other grades are ignored; tied scores get half credit. None when either grade has no pairs.
    """
    grades = np.asarray(gold_grades, dtype=int)
    scs = np.asarray(scores, dtype=float)
    if grades.shape != scs.shape:
        raise ValueError(f"auc_top_vs_bottom: {grades.size} grades but {scs.size} scores")
    is_top, is_bottom = grades == top, grades == bottom
    if not is_top.any() or not is_bottom.any():
        return None
    mask = is_top | is_bottom
    return float(roc_auc_score(is_top[mask].astype(int), scs[mask]))


def expected_calibration_error(
    probs: np.ndarray, gold_idx: Sequence[int], n_bins: int = 10
) -> tuple[float, list[dict]]:
    """Top-label ECE: sum over equal-width confidence bins of (bin share) * |accuracy - mean confidence|.

    Confidence is the highest probability of a row, the prediction its argmax (ties -> the first column). Bins are
    [lo, hi) on [0, 1], the last one closed. Returns the ECE and every bin as {lo, hi, count, confidence, accuracy}
    (confidence and accuracy None for empty bins) for a reliability diagram.
    """
    p = np.asarray(probs, dtype=float)
    gold = np.asarray(gold_idx, dtype=int)
    if p.ndim != 2 or p.shape[0] != gold.shape[0]:
        raise ValueError(
            f"expected_calibration_error: probs shape {p.shape} does not match {gold.shape[0]} gold labels"
        )
    if p.shape[0] == 0:
        raise ValueError("expected_calibration_error: no rows")
    if n_bins < 1:
        raise ValueError(f"expected_calibration_error: n_bins must be >= 1, got {n_bins}")
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == gold
    # Rounding keeps decimal bin edges (0.7 * 10 = 7.000000000000001) in the bin they belong to.
    idx = np.clip(np.floor(np.round(conf * n_bins, 9)).astype(int), 0, n_bins - 1)
    n = len(conf)
    ece = 0.0
    bins = []
    for b in range(n_bins):
        in_bin = idx == b
        count = int(in_bin.sum())
        bin_conf = float(conf[in_bin].mean()) if count else None
        bin_acc = float(correct[in_bin].mean()) if count else None
        if count:
            ece += count / n * abs(bin_acc - bin_conf)
        bins.append(
            {"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": count, "confidence": bin_conf, "accuracy": bin_acc}
        )
    return float(ece), bins


def compute_metrics(rows: list[dict], scheme: LabelScheme) -> dict:
    """All metrics of one scored run, from the rows of its scores.jsonl.

    The predicted grade of a row is its `pred_label`'s grade, else the argmax of its `probs`. A scorer that gives
    neither (e.g. BM25) gets ranking metrics and AUC only: the classification keys, grading rates and ECE are None.
    Every row must carry the same kind of output; a mix raises ValueError.
    """
    if not rows:
        raise ValueError("compute_metrics: no rows")
    has_pred = _consistent_field(rows, "pred_label")
    has_probs = _consistent_field(rows, "probs")

    query_ids, grades, scores = [], [], []
    for i, row in enumerate(rows):
        missing = [key for key in ("query_id", "grade", "score") if row.get(key) is None]
        if missing:
            raise ValueError(f"compute_metrics: row {i} lacks {missing}: {row!r}")
        grade = int(row["grade"])
        if grade not in scheme.values:
            raise ValueError(f"compute_metrics: row {i} has grade {grade}, not one of {scheme.values} ({scheme.name})")
        score = float(row["score"])
        if not math.isfinite(score):
            raise ValueError(f"compute_metrics: row {i} has a non-finite score {row['score']!r}")
        query_ids.append(str(row["query_id"]))
        grades.append(grade)
        scores.append(score)

    out: dict = {"n_pairs": len(rows), "n_queries": len(set(query_ids))}
    for k in NDCG_KS:
        per_query = ndcg_per_query(query_ids, grades, scores, k)
        out[f"ndcg@{k}"] = float(np.mean(list(per_query.values()))) if per_query else None
        # All scores equal + tie averaging = the expected nDCG of a uniformly random order of the same candidates.
        out[f"ndcg@{k}_random"] = mean_ndcg(query_ids, grades, [0.0] * len(grades), k)
        if k == 10:
            out["ndcg@10_per_query"] = per_query
            out["n_queries_ranked"] = len(per_query)
    out["auc_e_vs_i"] = auc_top_vs_bottom(grades, scores, scheme.max_value, scheme.min_value)

    probs = _probs_matrix(rows, scheme) if has_probs else None
    if has_pred:
        pred = [scheme.grade_of(str(row["pred_label"])) for row in rows]
    elif probs is not None:
        pred = [scheme.values[j] for j in probs.argmax(axis=1)]
    else:
        pred = None

    if pred is None:
        log.info("compute_metrics: rows carry no labels or probabilities; classification metrics are None")
        out.update(
            accuracy=None,
            macro_f1=None,
            weighted_f1=None,
            per_class=None,
            confusion=None,
            over_grading_rate=None,
            under_grading_rate=None,
        )
    else:
        out.update(classification_metrics(grades, pred, scheme))
        out["over_grading_rate"], out["under_grading_rate"] = grading_rates(grades, pred)

    if probs is None:
        out["ece"], out["reliability"] = None, None
    else:
        gold_idx = [scheme.values.index(g) for g in grades]
        out["ece"], out["reliability"] = expected_calibration_error(probs, gold_idx)
    return out


def _as_int_arrays(gold: Sequence[int], pred: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    gold_a = np.asarray(gold, dtype=int)
    pred_a = np.asarray(pred, dtype=int)
    if gold_a.shape != pred_a.shape:
        raise ValueError(f"{gold_a.size} gold grades but {pred_a.size} predictions")
    if gold_a.size == 0:
        raise ValueError("no gold/predicted pairs")
    return gold_a, pred_a


def _consistent_field(rows: list[dict], key: str) -> bool:
    """Whether every row has a non-None `key`; raises ValueError when only some do."""
    present = [row.get(key) is not None for row in rows]
    n = sum(present)
    if 0 < n < len(rows):
        first_missing = present.index(False)
        raise ValueError(
            f"compute_metrics: inconsistent rows: {n} of {len(rows)} rows have {key!r} and {len(rows) - n} do not "
            f"(first without: row {first_missing}, {rows[first_missing]!r}); a scores file must come from one scorer"
        )
    return n == len(rows)


def _probs_matrix(rows: list[dict], scheme: LabelScheme) -> np.ndarray:
    """(n, n_grades) probabilities in scheme order; labels a row leaves out count 0, each row is renormalised."""
    p = np.zeros((len(rows), len(scheme.grades)))
    for i, row in enumerate(rows):
        for label, value in row["probs"].items():
            p[i, scheme.index(label)] += float(value)
        total = p[i].sum()
        if not np.isfinite(total) or total <= 0 or (p[i] < 0).any():
            raise ValueError(f"compute_metrics: row {i} has invalid probs {row['probs']!r}")
        if abs(total - 1.0) > 1e-6:
            log.debug("row %d: probs sum to %.6f, renormalising", i, total)
        p[i] /= total
    return p
