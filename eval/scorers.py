"""Scorers the harness can run: anything that gives each judged pair a score, and maybe a label distribution.

`score(corpus)` returns one dict per judgment, in the corpus order, with `score` and, for scorers
that classify, `probs` ({label: p}) and `pred_label`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from lref.data import Corpus, Product, render_product

log = logging.getLogger(__name__)


class Scorer(Protocol):
    name: str

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]: ...


def bm25_text(p: Product) -> str:
    """The fields BM25 indexes: title, brand, colour, category and bullets (descriptions add noise)."""
    return " ".join([p.title, p.brand, p.color, " ".join(p.category), p.bullet_points])


class BM25Scorer:
    """Okapi BM25 (bm25s, Lucene variant, English stemming) with corpus statistics from all products."""

    name = "bm25"

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        ids = list(corpus.products)
        row_of = {pid: i for i, pid in enumerate(ids)}
        texts = [bm25_text(corpus.products[pid]) for pid in ids]
        index = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        index.index(
            bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=progress), show_progress=False
        )
        out: list[dict] = []
        cache: dict[str, object] = {}
        for j in corpus.judgments:
            if j.query not in cache:
                q = bm25s.tokenize([j.query], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
                cache[j.query] = index.get_scores(q[0])
            out.append({"score": float(cache[j.query][row_of[j.product_id]])})
        return out


class LLMScorer:
    """A causal-LM judge through any `Engine`: one forward pass per pair, prompts grouped by query."""

    name = "llm"

    def __init__(self, engine, max_product_tokens: int = 256):
        self.engine = engine
        self.max_product_tokens = max_product_tokens

    def prompts(self, corpus: Corpus) -> list:
        from lref.prompts import judgment_messages

        tok = getattr(self.engine, "tokenizer", None)
        return [
            judgment_messages(
                j.query, render_product(corpus.products[j.product_id], self.max_product_tokens, tok), corpus.scheme
            )
            for j in corpus.judgments
        ]

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        results = self.engine.score(self.prompts(corpus), progress=progress)
        scheme = self.engine.scheme
        return [{"score": r.score, "probs": r.probs_by_label(scheme), "pred_label": r.label} for r in results]


class _StudentScorer:
    """Scores every judged pair with a student's `score_pairs(queries, products, progress)`."""

    student = None

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        js = corpus.judgments
        s = self.student.score_pairs([j.query for j in js], [corpus.products[j.product_id] for j in js], progress)
        return [{"score": x} for x in s]


class CrossEncoderScorer(_StudentScorer):
    """A cross-encoder student saved by `lref distill ranker`."""

    name = "cross-encoder"

    def __init__(self, model_dir, batch_size: int = 64, int8: bool = False):
        from lref.distill.ranker import CrossEncoderStudent

        self.student = CrossEncoderStudent(model_dir, batch_size, int8)


class BiEncoderScorer(_StudentScorer):
    """Cosine of query and product embeddings: a bi-encoder student, or zero-shot MiniLM when no model is given."""

    name = "bi-encoder"

    def __init__(self, model_dir=None, batch_size: int = 64):
        from lref.distill.recall import BiEncoderStudent

        self.student = BiEncoderStudent(model_dir, batch_size)


class LTRScorer:
    """A LightGBM lambdarank model saved by `lref distill ltr`, over BM25, student and tag features."""

    name = "ltr"

    def __init__(self, model_dir, int8: bool = False):
        from lref.distill.ltr import LTRModel

        self.model = LTRModel.load(model_dir, int8)

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        return [{"score": float(x)} for x in self.model.score_corpus(corpus, progress)]
