"""Shared inputs of the students and the LTR model: the students' product text and the LTR features.

Students see a short product text (title, brand, colour, category, start of the features) because
they are meant to score in milliseconds at 64-128 tokens; the LLM judge sees the long rendering.
BM25 (`lref.rag.bm25`) and the MiniLM loader (`lref.rag.embedder`) live in the rag layer.
Tag features read `tags.jsonl` as data (never importing the tagging package); without tags the
query-topic match falls back to the product's category path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lref.data import DataError, Product, render_product
from lref.rag.bm25 import bm25_text

log = logging.getLogger(__name__)

STUDENT_PRODUCT_WORDS = 40
FEATURES = [
    "bm25",
    "bm25_rank",
    "bm25_qz",
    "bi_cosine",
    "bi_cosine_qz",
    "ce_score",
    "ce_score_qz",
    "title_coverage",
    "text_coverage",
    "topic_match",
    "style_match",
    "quality_mean",
    "quality_min",
    "rating",
    "log_rating_count",
]
_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"a", "an", "and", "the", "for", "of", "with", "to", "in", "on", "by", "without", "&", "de", "la", "el", "y"}


def student_text(product: Product, max_words: int = STUDENT_PRODUCT_WORDS) -> str:
    return render_product(product, max_tokens=max_words)


def words(text: str) -> set[str]:
    """Lower-cased word set without stop words, with a crude plural strip, for tag overlap features."""
    out = set()
    for w in _WORD.findall(text.lower()):
        if w in _STOP:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") else w)
    return out


# ---------------------------------------------------------------------------------------------- tags


def load_tags(path: str | Path) -> dict[str, dict]:
    """`tags.jsonl`: {product_id, topic: [...], style: [...], quality: {dim: {level, ...}}} per line."""
    from lref.data import read_table

    out: dict[str, dict] = {}
    for n, obj in read_table(path, required=["product_id"]):
        for key in ("topic", "style"):
            if key in obj and not isinstance(obj[key], list):
                raise DataError("expected a list", path, n, key)
        if "quality" in obj and not isinstance(obj["quality"], dict):
            raise DataError("expected an object {dimension: {level, ...}}", path, n, "quality")
        out[str(obj["product_id"])] = obj
    return out


def _level(value) -> float | None:
    """A quality level as a number: {level: 3} or {level: "high"} or a bare number/word."""
    if isinstance(value, dict):
        value = value.get("level")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        named = {"low": 0.0, "medium": 1.0, "mid": 1.0, "high": 2.0}
        if value.lower() in named:
            return named[value.lower()]
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _overlap(query_words: set[str], phrases: Sequence[str]) -> float:
    """Largest share of a phrase's words that the query contains (0 when there are no phrases)."""
    best = 0.0
    for ph in phrases:
        w = words(str(ph))
        if w:
            best = max(best, len(w & query_words) / len(w))
    return best


def tag_features(query: str, product: Product, tags: Mapping[str, dict] | None) -> dict[str, float]:
    """Query-topic match, style match and quality levels from tags; topic from the category path without tags."""
    qw = words(query)
    t = (tags or {}).get(product.product_id)
    if t is None:
        topics = list(product.category[1:]) or list(product.category)
        return {
            "topic_match": _overlap(qw, topics),
            "style_match": 0.0,
            "quality_mean": float("nan"),
            "quality_min": float("nan"),
        }
    levels = [v for v in (_level(x) for x in (t.get("quality") or {}).values()) if v is not None]
    return {
        "topic_match": _overlap(qw, t.get("topic") or []),
        "style_match": _overlap(qw, t.get("style") or []),
        "quality_mean": float(np.mean(levels)) if levels else float("nan"),
        "quality_min": float(np.min(levels)) if levels else float("nan"),
    }


def coverage_features(query: str, product: Product) -> dict[str, float]:
    """Share of the query's words found in the title, and in the indexed text (title, brand, category, bullets)."""
    qw = words(query)
    if not qw:
        return {"title_coverage": 0.0, "text_coverage": 0.0}
    return {
        "title_coverage": len(qw & words(product.title)) / len(qw),
        "text_coverage": len(qw & words(bm25_text(product))) / len(qw),
    }


def per_query_z(values: Sequence[float], query_ids: Sequence[str]) -> np.ndarray:
    """Scores standardised within each query's candidates (mean 0, std 1): comparable across queries."""
    v = np.asarray(values, dtype=np.float64)
    q = np.asarray(query_ids)
    out = np.full(len(v), np.nan)
    for qid in np.unique(q):
        m = q == qid
        x = v[m]
        if np.isnan(x).all():
            continue
        out[m] = (x - np.nanmean(x)) / (np.nanstd(x) + 1e-9)
    return out


def rating_features(product: Product) -> dict[str, float]:
    return {
        "rating": float("nan") if product.rating is None else float(product.rating),
        "log_rating_count": float(np.log1p(product.rating_count or 0)),
    }
