"""Request and response bodies of the relevance routes: rerank (Cohere v2 / vLLM), score (vLLM) and search.

- `/v1/rerank` (also `/rerank`, `/v2/rerank`): Cohere's v2 rerank body, which vLLM, Jina and TEI also
  speak. A document is a string, `{"text": ...}` or, with a catalogue loaded, `{"product_id": ...}`.
  The response carries Cohere's `id`, `results` and `meta` and vLLM's `model` and `usage`; the LLM
  judge adds each document's grade distribution in the `grades` extension field.
- `/v1/score`: vLLM's score body (`text_1`, `text_2` -> `data: [{index, score}]`).
- `/v1/search`: recall from the catalogue index, optionally reranked (the cascade), with stage timings.

The bounds here are the hard limits of the schema; the server's own (smaller, configurable) limits
are checked in the routes and answer 400 with the reason.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

MAX_DOCUMENTS = 10_000
MAX_TEXT_CHARS = 100_000


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")  # other clients' extra fields are accepted and ignored


class TextDocument(_Base):
    text: StrictStr = Field(max_length=MAX_TEXT_CHARS)


class ProductDocument(_Base):
    product_id: StrictStr = Field(min_length=1, max_length=256)


Document = StrictStr | TextDocument | ProductDocument


class RerankRequest(_Base):
    model: str | None = Field(None, description="served name of the scorer; default: the first one served")
    query: StrictStr = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    documents: list[Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1, le=MAX_DOCUMENTS, description="return the best N (default: all)")
    return_documents: bool = Field(False, description="echo each document's text (Cohere v1 / vLLM)")
    max_tokens_per_doc: int | None = Field(None, ge=1, description="accepted for Cohere clients; students cut")


class RerankDocument(BaseModel):
    text: str
    product_id: str | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None
    grades: dict[str, float] | None = Field(None, description="LLM judge only: probability of each grade")


class RerankUsage(BaseModel):
    total_tokens: int = 0
    search_units: int = 1


class ApiVersion(BaseModel):
    version: str = "2"
    is_experimental: bool = False


class BilledUnits(BaseModel):
    search_units: int = 1


class RerankMeta(BaseModel):
    api_version: ApiVersion = Field(default_factory=ApiVersion)
    billed_units: BilledUnits = Field(default_factory=BilledUnits)


class RerankResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"rerank-{uuid.uuid4().hex}")
    model: str
    results: list[RerankResult]
    usage: RerankUsage = Field(default_factory=RerankUsage)
    meta: RerankMeta = Field(default_factory=RerankMeta)


class ScoreRequest(_Base):
    model: str | None = None
    text_1: StrictStr | list[StrictStr] = Field(description="the query, or one query per text_2 entry")
    text_2: StrictStr | list[StrictStr] = Field(description="the documents")

    def pairs(self) -> list[tuple[str, str]]:
        """(query, document) pairs: one text_1 against every text_2, or text_1[i] against text_2[i]."""
        t1 = [self.text_1] if isinstance(self.text_1, str) else list(self.text_1)
        t2 = [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)
        if not t1 or not t2:
            raise ValueError("text_1 and text_2 must not be empty")
        if len(t1) == 1:
            return [(t1[0], t) for t in t2]
        if len(t1) != len(t2):
            raise ValueError(f"text_1 has {len(t1)} entries and text_2 {len(t2)}: give one text_1 or equal lengths")
        return list(zip(t1, t2, strict=True))


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"score-{uuid.uuid4().hex}")
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ScoreData]
    usage: RerankUsage = Field(default_factory=RerankUsage)


class SearchRequest(_Base):
    query: StrictStr = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    top_k: int = Field(10, ge=1, le=MAX_DOCUMENTS, description="products to return")
    candidates: int | list[StrictStr] | None = Field(
        None, description="how many products recall retrieves (default max(top_k, 100)), or the product ids to rank"
    )
    model: str | None = Field(None, description="the recall model (default: the one served)")
    rerank_model: str | None = Field(None, description="a ranker or ltr model that reranks the recalled products")


class SearchHit(BaseModel):
    product_id: str
    score: float
    recall_score: float | None = None
    title: str | None = None


class SearchTimings(BaseModel):
    recall_ms: float = 0.0
    rerank_ms: float = 0.0
    total_ms: float = 0.0


class SearchResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"search-{uuid.uuid4().hex}")
    query: str
    model: str | None = None
    rerank_model: str | None = None
    results: list[SearchHit]
    timings: SearchTimings
