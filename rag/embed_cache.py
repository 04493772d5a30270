"""An on-disk cache of sentence embeddings, shared by every job on the machine.

Tagging, the recall student's catalogue index, the teacher's dense candidates and data selection all embed
through `lref.rag.embedder.Embedder`, which looks each text up here first, so a catalogue text is embedded
once per model across jobs and processes.

- Key: the model's identity (`model_identity`: its name and a sha256 over its weight and config files, so a
  fine-tuned student never reads the vectors of its base) and the sha256 of the text.
- Storage: one SQLite file (`embeddings.sqlite3`) in write-ahead-log mode. Writers take SQLite's lock with a
  busy timeout and insert with `INSERT OR IGNORE`, so concurrent processes never corrupt it and never
  overwrite a row; readers are not blocked by writers. Vectors are float32 bytes: a hit returns the same
  vector bit for bit.
- Where: `$LREF_EMBED_CACHE` (a folder), else `~/.cache/lref/embeddings`. `LREF_EMBED_CACHE=off` turns the
  cache off. `clear_cache()` empties it (one model or all).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENV = "LREF_EMBED_CACHE"
DB_NAME = "embeddings.sqlite3"
OFF = {"off", "0", "false", "no", "none"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
CONFIG_NAMES = {
    "config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
}
_IDENTITY: dict[tuple, str] = {}


def cache_dir() -> Path | None:
    """The cache folder from `$LREF_EMBED_CACHE` (default `~/.cache/lref/embeddings`), or None when off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lref" / "embeddings"


def model_files(folder: str | Path) -> list[Path]:
    """The files that decide a sentence-transformers model's vectors: weights and configs of each module."""
    folder = Path(folder)
    dirs = [folder]
    modules = folder / "modules.json"
    if modules.exists():
        for m in json.loads(modules.read_text(encoding="utf-8")):
            if m.get("path"):
                dirs.append(folder / m["path"])
    out = []
    for d in dirs:
        if d.is_dir():
            out += sorted(
                p for p in d.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_NAMES)
            )
    return out


def model_identity(name: str, folder: str | Path) -> str:
    """`name@<sha256 prefix>` over the model's weight and config files (memoised per file size and mtime)."""
    files = model_files(folder)
    if not files:
        raise FileNotFoundError(f"embedding model {name!r}: no weights or config files in {folder}")
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _IDENTITY:
        h = hashlib.sha256()
        for p in files:
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        _IDENTITY[stamp] = h.hexdigest()[:32]
    return f"{name}@{_IDENTITY[stamp]}"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Vectors by (model identity, text hash) in one SQLite file; safe across threads and processes."""

    def __init__(self, folder: str | Path, timeout_s: float = 60.0):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None
        self.pid = -1

    def connect(self) -> sqlite3.Connection:
        """This process's connection (a forked child opens its own), with WAL and the table in place."""
        if self.conn is None or self.pid != os.getpid():
            self.folder.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, text_sha BLOB NOT NULL, "
                "vec BLOB NOT NULL, PRIMARY KEY (model, text_sha)) WITHOUT ROWID"
            )
            self.conn, self.pid = conn, os.getpid()
        return self.conn

    def get(self, model: str, keys: Sequence[bytes], chunk: int = 500) -> dict[bytes, np.ndarray]:
        """The cached vectors among `keys` (text hashes) for `model`."""
        out: dict[bytes, np.ndarray] = {}
        uniq = list(dict.fromkeys(keys))
        with self.lock:
            conn = self.connect()
            for s in range(0, len(uniq), chunk):
                part = uniq[s : s + chunk]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"SELECT text_sha, vec FROM vectors WHERE model = ? AND text_sha IN ({marks})", [model, *part]
                ).fetchall()
                for k, v in rows:
                    out[bytes(k)] = np.frombuffer(v, dtype=np.float32)
        return out

    def put(self, model: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors in one transaction; a key already there keeps its first vector."""
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = [(model, k, v.tobytes()) for k, v in zip(keys, vectors, strict=True)]
        with self.lock:
            conn = self.connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO vectors (model, text_sha, vec) VALUES (?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def count(self, model: str | None = None) -> int:
        with self.lock:
            conn = self.connect()
            if model is None:
                return conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", [model]).fetchone()[0]

    def clear(self, model: str | None = None) -> int:
        """Delete every vector (of one model identity, or all); returns how many rows went."""
        with self.lock:
            conn = self.connect()
            if model is None:
                n = conn.execute("DELETE FROM vectors").rowcount
            else:
                n = conn.execute("DELETE FROM vectors WHERE model = ?", [model]).rowcount
            if model is None:
                conn.execute("VACUUM")
        log.info("embedding cache %s: cleared %d vectors", self.path, n)
        return n

    def close(self) -> None:
        with self.lock:
            if self.conn is not None and self.pid == os.getpid():
                self.conn.close()
            self.conn = None


_OPEN: dict[Path, EmbeddingCache] = {}


def default_cache() -> EmbeddingCache | None:
    """The process-wide cache at `cache_dir()`, or None when `LREF_EMBED_CACHE=off`."""
    folder = cache_dir()
    if folder is None:
        return None
    if folder not in _OPEN:
        _OPEN[folder] = EmbeddingCache(folder)
    return _OPEN[folder]


def clear_cache(folder: str | Path | None = None, model: str | None = None) -> int:
    """Empty the cache at `folder` (default: `cache_dir()`), for one model identity or all; returns rows removed."""
    folder = Path(folder) if folder is not None else cache_dir()
    if folder is None or not (folder / DB_NAME).exists():
        return 0
    cache = _OPEN.get(folder) or EmbeddingCache(folder)
    return cache.clear(model)
