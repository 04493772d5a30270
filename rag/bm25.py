"""The one BM25 of lref: Okapi BM25 (bm25s, Lucene variant, English stemming) over a whole catalogue.

Used by the BM25 baseline (`BM25Scorer`, `lref eval --scorer bm25`), the learning-to-rank features and the
teacher's BM25 candidates, so all three see the same scores. Corpus statistics come from every product.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from lref.data import Corpus, Product

log = logging.getLogger(__name__)


def bm25_text(p: Product) -> str:
    """The fields BM25 indexes: title, brand, colour, category and bullets (descriptions add noise)."""
    return " ".join([p.title, p.brand, p.color, " ".join(p.category), p.bullet_points])


class BM25Index:
    """BM25 over a catalogue; scores per query are computed once and kept."""

    def __init__(self, products: Mapping[str, Product], k1: float = 1.2, b: float = 0.75, progress: bool = False):
        import bm25s
        import Stemmer

        self.bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.ids = list(products)
        self.row_of = {pid: i for i, pid in enumerate(self.ids)}
        self.index = bm25s.BM25(k1=k1, b=b, method="lucene")
        texts = [bm25_text(products[pid]) for pid in self.ids]
        self.index.index(
            bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=progress), show_progress=False
        )
        self.cache: dict[str, np.ndarray] = {}

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every catalogue product for `query`, in `self.ids` order (float32)."""
        if query not in self.cache:
            q = self.bm25s.tokenize(
                [query], stopwords="en", stemmer=self.stemmer, return_ids=False, show_progress=False
            )
            # a query of stop words only has no tokens: every product scores 0 (bm25s would raise IndexError)
            empty = np.zeros(len(self.ids), dtype=np.float32)
            self.cache[query] = np.asarray(self.index.get_scores(q[0]), dtype=np.float32) if q[0] else empty
        return self.cache[query]

    def score(self, query: str, product_id: str) -> float:
        return float(self.scores(query)[self.row_of[product_id]])

    def top(self, query: str, n: int) -> list[str]:
        """The `n` best products with a positive score, best first (ties in catalogue order)."""
        s = self.scores(query)
        order = np.argsort(-s, kind="stable")[:n]
        return [self.ids[i] for i in order if s[i] > 0]

    def rank_of(self, query: str) -> dict[str, int]:
        """Every product's 0-based rank for `query` (ties in catalogue order)."""
        s = self.scores(query)
        ranks = np.empty(len(s), dtype=np.int64)
        ranks[np.argsort(-s, kind="stable")] = np.arange(len(s))
        return {pid: int(ranks[i]) for i, pid in enumerate(self.ids)}


class BM25Scorer:
    """The BM25 baseline as an eval scorer: `score(corpus)` gives each judged pair its BM25 score."""

    name = "bm25"

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        index = BM25Index(corpus.products, self.k1, self.b, progress)
        return [{"score": index.score(j.query, j.product_id)} for j in corpus.judgments]
