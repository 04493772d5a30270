"""What the server scores with: the students, the LTR pipeline and the LLM judge, behind one interface.

Each scorer has a served `name`, a `kind` (ranker, ltr, recall, llm) and
`score(query, docs) -> (scores, extras)`, run on the batcher's worker thread. Scores are computed by
the same code `lref eval` runs offline (`CrossEncoderStudent`, `BiEncoderStudent`, `LTRModel`,
`HFEngine` + `judgment_messages`), so a query's candidates get the numbers `scores.jsonl` holds.
A document is a catalogue product or a bare text; a text is scored as the product text it stands for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lref.data import Corpus, Judgment, Product, render_product
from lref.labels import get_scheme
from lref.serve.errors import RequestError

log = logging.getLogger(__name__)


@dataclass
class Doc:
    """A document of a request: a catalogue product, or a bare text (then `product` is None)."""

    text: str | None = None
    product: Product | None = None

    @property
    def product_id(self) -> str | None:
        return self.product.product_id if self.product else None


class Catalogue:
    """The products requests may name by id (`--products FILE`)."""

    def __init__(self, products: dict[str, Product], source: str = ""):
        self.products, self.source = products, source

    @classmethod
    def load(cls, path: str | Path) -> Catalogue:
        from lref.data import load_products

        return cls(load_products(path), str(path))

    def get(self, ids: list[str]) -> list[Product]:
        missing = [p for p in dict.fromkeys(ids) if p not in self.products]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise RequestError(
                f"unknown product id {shown} (not in {self.source or 'the catalogue'})",
                404,
                "NotFoundError",
                "documents",
            )
        return [self.products[p] for p in ids]


class RankerScorer:
    """The cross-encoder student (`lref distill ranker`), int8 on CPU unless `int8=False`, on torch or ONNX Runtime."""

    kind = "ranker"

    def __init__(
        self, name: str, model_dir: str | Path, int8: bool = True, batch_size: int = 64, backend: str = "torch"
    ):
        self.name, self.root = name, str(model_dir)
        if backend == "onnx":  # ONNX Runtime (exported and quantized on first use into DIR/onnx)
            from lref.distill.onnx_export import OnnxCrossEncoder

            self.student = OnnxCrossEncoder(model_dir, batch_size, int8)
        elif backend == "torch":
            from lref.distill.ranker import CrossEncoderStudent

            self.student = CrossEncoderStudent(model_dir, batch_size, int8)
        else:
            raise ValueError(f"unknown ranker backend {backend!r} (choose torch or onnx)")

    def text(self, doc: Doc) -> str:
        from lref.distill.features import student_text

        return doc.text if doc.product is None else student_text(doc.product, self.student.max_words)

    def score(self, query: str, docs: list[Doc]):
        return self.student.score_texts([query] * len(docs), [self.text(d) for d in docs]), None


class RecallScorer:
    """The bi-encoder recall student (`lref distill recall`) and, when the folder has one, its catalogue index."""

    kind = "recall"

    def __init__(self, name: str, model_dir: str | Path, batch_size: int = 64):
        from lref.distill.recall import BiEncoderStudent

        self.name, self.root = name, str(model_dir)
        self.student = BiEncoderStudent(model_dir, batch_size)
        self.index = self.ids = self.emb = None
        idx = Path(model_dir) / "index"
        if (idx / "ids.json").exists():
            from lref.distill.recall import open_index

            self.index = open_index(self.student, idx)
            self.ids = json.loads((idx / "ids.json").read_text(encoding="utf-8"))
            self.emb = np.load(idx / "embeddings.npy")
            self.row_of = {p: i for i, p in enumerate(self.ids)}

    def text(self, doc: Doc) -> str:
        from lref.distill.features import student_text

        return doc.text if doc.product is None else student_text(doc.product, self.student.max_words)

    def score(self, query: str, docs: list[Doc]):
        return self.student.score_texts([query] * len(docs), [self.text(d) for d in docs]), None

    def search(self, query: str, k: int) -> tuple[list[str], list[float]]:
        """The index's top `k` product ids for `query`, nearest first, with their cosines."""
        if self.index is None:
            raise RequestError(
                f"recall model {self.name!r} has no catalogue index (lref distill recall builds {self.root}/index)",
                400,
                param="model",
            )
        qe = self.student.embed_texts([query])
        from lref.distill.recall import search_index

        ids = search_index(self.index, qe, k)[0]
        return ids, [float(self.emb[self.row_of[p]] @ qe[0]) for p in ids]


class LTRScorer:
    """The LightGBM lambdarank pipeline (`lref distill ltr`) over catalogue products.

    Its features need each product's fields and its BM25 statistics over the whole catalogue, so it
    scores products named by id only; per-query normalised features see exactly the request's candidates.
    """

    kind = "ltr"

    def __init__(self, name: str, model_dir: str | Path, catalogue: Catalogue | None, int8: bool = True):
        from lref.distill.ltr import LTRModel
        from lref.rag.bm25 import BM25Index

        if catalogue is None:
            raise ValueError(f"--ltr {model_dir}: the LTR model needs a catalogue (--products FILE)")
        self.name, self.root = name, str(model_dir)
        self.model = LTRModel.load(model_dir, int8)
        self.catalogue = catalogue
        self.bm25 = BM25Index(catalogue.products)
        self.scheme = get_scheme("esci")

    def score(self, query: str, docs: list[Doc]):
        if any(d.product is None for d in docs):
            raise RequestError(
                f'model {self.name!r} (ltr) scores catalogue products only: give documents as {{"product_id": ...}}',
                400,
                param="documents",
            )
        label = self.scheme.grades[0]
        js = [Judgment("q", query, d.product_id, label.label, label.value) for d in docs]
        corpus = Corpus(js, self.catalogue.products, self.scheme, {"q": query})
        return [float(x) for x in self.model.score_corpus(corpus, bm25=self.bm25)], None


class JudgeScorer:
    """The LLM judge: one forward pass per pair, `relevance_score` = the expected grade in [0, 1].

    One instance per served name of the LLM host (the base model and each LoRA adapter); the grade
    distribution comes back as the extras. Prompts are `lref eval --scorer llm`'s.
    """

    kind = "llm"

    def __init__(self, name: str, host, scheme: str = "esci", max_product_tokens: int = 256, batch_size: int = 16):
        from lref.engines.hf import HFEngine

        self.name, self.host, self.root = name, host, host.loras.get(name, host.base_name)
        self.engine = HFEngine(host.model, host.tokenizer, scheme, batch_size=batch_size)
        self.scheme = self.engine.scheme
        self.max_product_tokens = max_product_tokens

    def score(self, query: str, docs: list[Doc]):
        from lref.prompts import judgment_messages

        tok = self.host.tokenizer
        texts = [
            d.text if d.product is None else render_product(d.product, self.max_product_tokens, tok) for d in docs
        ]
        prompts = [judgment_messages(query, t, self.scheme) for t in texts]
        with self.host.adapter(self.name):
            res = self.engine.score(prompts)
        return [r.score for r in res], [r.probs_by_label(self.scheme) for r in res]
