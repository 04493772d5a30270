"""One vector store (lref.rag.store) for tag definitions, exemplars and the recall student's catalogue index."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from lref.data import Product


def _unit(rng, n, dim=32):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_catalogue_index_takes_precomputed_vectors_and_reopens(tmp_path, tiny_bert):
    from lref.rag.embedder import Embedder
    from lref.rag.store import CATALOGUE, EXEMPLARS, TAGS, Store

    rng = np.random.default_rng(0)
    ids = [f"P{i}" for i in range(300)]
    vecs = _unit(rng, len(ids))
    store = Store(tmp_path / "index", embedder=Embedder(tiny_bert), collections=[CATALOGUE])
    store.add(CATALOGUE, ids, embeddings=vecs)  # no texts, no metadata: vectors as they are
    assert store.names == [CATALOGUE] and store.count(CATALOGUE) == 300
    with pytest.raises(ValueError, match="300 ids for 2 embeddings"):
        store.add(CATALOGUE, ids, embeddings=vecs[:2])

    reopened = Store(tmp_path / "index")  # the manifest says which collections the folder holds
    assert reopened.names == [CATALOGUE] and TAGS not in reopened.vectorstores
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["collections"] == [CATALOGUE] and not manifest["embedder"].startswith("/")
    schema = " ".join(r[0] for r in sqlite3.connect(tmp_path / "index" / "chroma" / "chroma.sqlite3").execute(
        "select schema_str from collections"))  # fmt: skip
    assert str(tmp_path) not in schema and "lref_sentence_transformer" in schema
    ids_back, mat = reopened.all_vectors(CATALOGUE)
    order = [ids_back.index(i) for i in ids]
    np.testing.assert_allclose(mat[order], vecs, atol=1e-6)  # stored as given
    q = vecs[:20]
    approx = [[h.id for h in hits] for hits in reopened.query(CATALOGUE, q, 10)]
    assert approx == reopened.exact_query(CATALOGUE, q, 10)
    assert all(hits[0].similarity == pytest.approx(1.0, abs=1e-5) for hits in reopened.query(CATALOGUE, q, 1))
    assert reopened.recall_at_k(CATALOGUE, k=10) > 0.95

    both = Store(tmp_path / "index", collections=[TAGS, EXEMPLARS])  # one folder can serve all three
    assert both.names == [CATALOGUE, TAGS, EXEMPLARS] and both.count(CATALOGUE) == 300
    assert Store(tmp_path / "index").names == [CATALOGUE, TAGS, EXEMPLARS]


def test_texts_are_embedded_through_the_store_embedder_and_its_cache(tmp_path, tiny_bert, monkeypatch):
    from lref.rag.embed_cache import default_cache
    from lref.rag.embedder import Embedder
    from lref.rag.store import EXEMPLARS, Store

    monkeypatch.setenv("LREF_EMBED_CACHE", str(tmp_path / "cache"))
    emb = Embedder(tiny_bert)
    store = Store(tmp_path / "tags", embedder=emb)
    texts = ["red leather boots", "blue cotton shirt", "steel frying pan"]
    store.add(EXEMPLARS, ["a", "b", "c"], texts, [{"topic": "x"}] * 3)
    assert default_cache().count(emb.identity) == 3  # langchain-chroma embedded through lref's cached embedder
    hits = store.query(EXEMPLARS, emb.encode(["steel frying pan"]), 2)[0]
    assert hits[0].id == "c" and hits[0].metadata == {"topic": "x"}
    with pytest.raises(ValueError, match="texts to embed or precomputed"):
        store.add(EXEMPLARS, ["d"])


def test_recall_index_uses_precomputed_embeddings_and_the_rag_store(tmp_path, tiny_bert):
    from lref.data import Corpus, Judgment
    from lref.distill.recall import BiEncoderStudent, build_index, recall_at_k
    from lref.labels import get_scheme
    from lref.rag.store import CATALOGUE, Store

    products = {f"P{i}": Product(f"P{i}", f"product number {i}") for i in range(30)}
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 30)
    student = BiEncoderStudent(tiny_bert)
    store, ids, emb = build_index(student, products, tmp_path / "index", progress=False, embeddings=vecs)
    assert ids == list(products) and emb.tobytes() == vecs.tobytes()
    assert np.load(tmp_path / "index" / "embeddings.npy").tobytes() == vecs.tobytes()
    assert json.loads((tmp_path / "index" / "ids.json").read_text()) == ids
    assert isinstance(store, Store) and store.count(CATALOGUE) == 30
    js = [Judgment("q1", "product number 3", "P3", "E", 3), Judgment("q1", "product number 3", "P4", "I", 0)]
    corpus = Corpus(js, products, get_scheme("esci"))
    res = recall_at_k(corpus, student, Store(tmp_path / "index"), ids, emb, ks=(30,))
    assert res["recall@30_index"] == res["recall@30_exact"] == 1.0 and res["ann_overlap@30"] == 1.0
    exact_only = recall_at_k(corpus, student, None, ids, emb, ks=(30,))
    assert "recall@30_index" not in exact_only and exact_only["recall@30_exact"] == 1.0
    with pytest.raises(ValueError, match="2 embeddings for 30 products"):
        build_index(student, products, tmp_path / "bad", progress=False, embeddings=vecs[:2])
