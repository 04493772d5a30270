"""The on-disk embedding cache: exact hits, shared across processes, safe under concurrent writers, clearable."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

TEXTS = ["leather dog collar", "stainless steel frying pan", "wireless headphones", "leather dog collar"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("LREF_EMBED_CACHE", str(d))
    return d


def _no_model(monkeypatch):
    """Make any model computation fail, so only cache hits can answer."""
    from lref.rag.embedder import Embedder

    def fail(self, texts, progress=False):
        raise AssertionError(f"computed {len(texts)} texts that should have come from the cache")

    monkeypatch.setattr(Embedder, "compute", fail)


def test_hits_return_identical_vectors_and_skip_the_model(cache_dir, tiny_bert, monkeypatch):
    from lref.rag.embed_cache import default_cache
    from lref.rag.embedder import Embedder

    emb = Embedder(tiny_bert)
    first = emb.encode(TEXTS)
    assert first.shape == (4, 32) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert first.tobytes() == emb.compute(TEXTS).tobytes()  # a cold cache gives exactly the uncached vectors
    assert default_cache().count(emb.identity) == 3 and (cache_dir / "embeddings.sqlite3").exists()  # 3 texts
    _no_model(monkeypatch)
    again = Embedder(tiny_bert).encode(list(reversed(TEXTS)))
    assert again.tobytes() == first[[0, 2, 1, 0]].tobytes()  # bit for bit (a repeated text: its first vector)


def test_identity_is_name_and_weights_hash(cache_dir, tiny_bert, tmp_path):
    from transformers import BertConfig, BertModel

    from lref.rag.embedder import DEFAULT_MODEL, Embedder

    ident = Embedder(tiny_bert).identity
    copy = tmp_path / "copy" / os.path.basename(tiny_bert)
    shutil.copytree(tiny_bert, copy)
    assert Embedder(str(copy)).identity == ident  # same name, same weights: same vectors
    BertModel(BertConfig.from_pretrained(copy)).save_pretrained(copy)  # new random weights, same config
    assert Embedder(str(copy)).identity != ident
    a, b = Embedder(tiny_bert).encode(TEXTS[:2]), Embedder(str(copy)).encode(TEXTS[:2])
    assert not np.allclose(a, b)  # the retrained model's vectors are its own, never the cached ones
    assert Embedder().identity.startswith(DEFAULT_MODEL + "@")
    assert Embedder("minilm").identity == Embedder().identity


def test_a_second_process_reads_the_first_ones_entries(cache_dir, tiny_bert, tmp_path):
    from lref.rag.embedder import Embedder

    here = Embedder(tiny_bert).encode(TEXTS)
    code = textwrap.dedent(f"""
        import numpy as np
        from lref.rag.embedder import Embedder
        def fail(self, texts, progress=False):
            raise SystemExit(f"computed {{texts}}")
        Embedder.compute = fail
        np.save({str(tmp_path / "there.npy")!r}, Embedder({tiny_bert!r}).encode({TEXTS!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LREF_EMBED_CACHE": str(cache_dir)}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert np.load(tmp_path / "there.npy").tobytes() == here[[0, 1, 2, 0]].tobytes()


WRITER = """
import hashlib, sys
import numpy as np
from lref.rag.embed_cache import EmbeddingCache, text_key

folder, worker = sys.argv[1], int(sys.argv[2])
cache = EmbeddingCache(folder)
for rnd in range(40):
    texts = [f"text {i}" for i in range(rnd * 10 + worker * 3, rnd * 10 + worker * 3 + 25)]  # overlapping ranges
    vecs = np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.float32) for t in texts])
    cache.put("model@x", [text_key(t) for t in texts], vecs)
    got = cache.get("model@x", [text_key(t) for t in texts])
    assert all(got[text_key(t)].tobytes() == v.tobytes() for t, v in zip(texts, vecs)), "read back differs"
print("ok")
"""


def test_concurrent_writers_do_not_corrupt(tmp_path):
    from lref.rag.embed_cache import EmbeddingCache, text_key

    folder = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(w)], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(4)
    ]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    starts = {r * 10 + w * 3 for w in range(4) for r in range(40)}
    texts = sorted({f"text {i}" for s in starts for i in range(s, s + 25)})
    cache = EmbeddingCache(folder)
    assert cache.count("model@x") == cache.count() == len(texts)
    got = cache.get("model@x", [text_key(t) for t in texts])
    for t in texts:
        assert got[text_key(t)].tobytes() == hashlib.sha256(t.encode()).digest()
    with sqlite3.connect(folder / "embeddings.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_clear_empties_the_cache_per_model_or_all(cache_dir, tiny_bert, monkeypatch):
    from lref.rag.embed_cache import clear_cache, default_cache
    from lref.rag.embedder import Embedder

    emb = Embedder(tiny_bert)
    emb.encode(TEXTS)
    default_cache().put("other@model", [b"k" * 32], np.ones((1, 3)))
    assert clear_cache(model=emb.identity) == 3
    assert default_cache().count(emb.identity) == 0 and default_cache().count() == 1
    assert clear_cache() == 1 and default_cache().count() == 0
    calls = []
    monkeypatch.setattr(Embedder, "compute", lambda self, texts, progress=False: calls.append(texts) or np.eye(2, 32))
    Embedder(tiny_bert).encode(TEXTS[:2])
    assert calls == [TEXTS[:2]]  # after clearing, the texts are embedded again


def test_off_disables_the_cache(tmp_path, tiny_bert, monkeypatch):
    from lref.rag.embed_cache import cache_dir, default_cache
    from lref.rag.embedder import Embedder

    monkeypatch.setenv("LREF_EMBED_CACHE", "off")
    assert cache_dir() is None and default_cache() is None
    calls = []
    real = Embedder.compute
    monkeypatch.setattr(Embedder, "compute", lambda self, texts, progress=False: calls.append(1) or real(self, texts))
    emb = Embedder(tiny_bert)
    np.testing.assert_array_equal(emb.encode(TEXTS), emb.encode(TEXTS))
    assert len(calls) == 2  # computed every time
    monkeypatch.delenv("LREF_EMBED_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "lref" / "embeddings"


def test_an_unusable_cache_does_not_stop_embedding(tmp_path, tiny_bert, monkeypatch):
    from lref.rag.embedder import Embedder

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LREF_EMBED_CACHE", str(blocker / "cache"))  # cannot be created
    emb = Embedder(tiny_bert)
    np.testing.assert_allclose(emb.encode(TEXTS), emb.compute(TEXTS), atol=1e-6)
