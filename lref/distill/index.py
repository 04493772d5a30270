"""A persistent chroma store of precomputed catalogue embeddings (cosine HNSW).

Embeddings are always computed by the caller (a student bi-encoder) and passed in: vectors on `add`,
`query_embeddings` on `query`. The collection is created with `embedding_function=None`, so chroma's
default embedding function (which downloads a model) is never built or called. This is a small
stand-in for the rag package's store; the two are meant to be unified.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class VectorIndex:
    def __init__(self, path: str | Path, name: str = "products"):
        import chromadb
        from chromadb.config import Settings

        if not 3 <= len(name) <= 512:
            raise ValueError(f"collection name must be 3-512 characters, got {name!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.client = chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False))
        self.collection = self.client.get_or_create_collection(
            name, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    def __len__(self) -> int:
        return self.collection.count()

    def add(self, ids: list[str], embeddings: np.ndarray, batch_size: int = 2048) -> None:
        """Add (or overwrite) vectors by id, in batches below chroma's maximum batch size."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if len(ids) != len(emb):
            raise ValueError(f"{len(ids)} ids for {len(emb)} embeddings")
        step = min(batch_size, self.client.get_max_batch_size())
        for s in range(0, len(ids), step):
            self.collection.upsert(ids=list(ids[s : s + step]), embeddings=emb[s : s + step])
        log.info("index %s holds %d vectors", self.path, len(self))

    def query(self, embeddings: np.ndarray, k: int) -> list[list[str]]:
        """The ids of the approximate `k` nearest products of each query vector, nearest first."""
        emb = np.asarray(embeddings, dtype=np.float32)
        res = self.collection.query(query_embeddings=emb, n_results=min(k, len(self)), include=["distances"])
        return res["ids"]
