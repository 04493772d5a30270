"""Weak supervision from the catalogue: pseudo-queries, hard negatives, the pairs file, pretrain-then-gold."""

from __future__ import annotations

import inspect
import json

import pytest

from lref.data import DataError, Product, load_dir
from lref.distill.weak import (
    POSITIVE,
    SAME_CATEGORY,
    WeakConfig,
    brand_words,
    category_closeness,
    product_type,
    read_pairs,
    satisfies,
    weak_pairs,
    write_pairs,
)


@pytest.fixture(scope="module")
def catalogue(esci_slice):
    """The products of four real queries (their candidate pools: the hardest case for leakage)."""
    return load_dir(esci_slice)


def test_type_brand_and_satisfies_on_hand_made_products():
    p = Product("a", "UGG Women's Coquette Chestnut Slipper", brand="UGG", color="Chestnut",
                category=["Clothing, Shoes & Jewelry", "Women", "Shoes", "Slippers"])  # fmt: skip
    assert product_type(p) == "slippers" and brand_words(p) == "ugg"
    tops = Product("b", "Tee", brand="Generic", category=["Clothing", "Women", "Tops, Tees & Blouses", "Women"])
    assert product_type(tops) == "blouses" and brand_words(tops) == ""  # a section level is skipped; generic brand
    assert product_type(Product("c", "x", category=["Women"])) == ""
    assert brand_words(Product("d", "x", brand="Wüsthof")) == "wusthof"
    assert satisfies("ugg slippers women", p) and not satisfies("ugg slippers black", p)
    q = Product("e", "Slipper", category=["Clothing, Shoes & Jewelry", "Women", "Shoes", "Sandals"])
    assert category_closeness(p, q) == 0.75 and category_closeness(p, p) == 1.0
    assert category_closeness(p, Product("f", "y", category=["Books"])) == 0.0


def test_pairs_are_deterministic_and_seeded(catalogue):
    cfg = WeakConfig(per_product=2, max_products=40, seed=3)
    a = weak_pairs(catalogue.products, cfg)
    assert a == weak_pairs(catalogue.products, cfg)
    b = weak_pairs(catalogue.products, WeakConfig(per_product=2, max_products=40, seed=4))
    assert a != b


def test_no_pseudo_query_is_a_judged_query_and_the_generator_never_sees_judgments(catalogue):
    # the leakage guard: the generator takes products and settings only
    assert list(inspect.signature(weak_pairs).parameters) == ["products", "cfg"]
    rows = weak_pairs(catalogue.products, WeakConfig(per_product=5))
    judged = {j.query.strip().lower() for j in catalogue.judgments}
    made = {r["query"] for r in rows}
    assert len(made) > 100 and not made & judged
    assert all(r["query_id"] not in catalogue.query_ids for r in rows)
    assert all(2 <= len(q.split()) <= 8 and q == q.lower() for q in made)


def test_every_query_has_its_product_as_positive_and_negatives_that_differ(catalogue):
    ps = catalogue.products
    rows = weak_pairs(ps, WeakConfig(per_product=3, max_products=60))
    by_q: dict[str, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["query_id"], []).append(r)
        assert 0.0 <= r["target"] <= 1.0 and r["gold"] is None
    assert len(by_q) >= 100
    n_neg = {"category": 0, "bm25": 0}
    for qid, rs in by_q.items():
        pos = [r for r in rs if r["source"] == "self"]
        assert len(pos) == 1 and pos[0]["target"] == POSITIVE and qid.startswith(f"weak:{pos[0]['product_id']}:")
        p = ps[pos[0]["product_id"]]
        assert len({r["product_id"] for r in rs}) == len(rs)  # a product once per query
        for r in rs:
            if r["source"] in n_neg:
                n_neg[r["source"]] += 1
                o = ps[r["product_id"]]
                assert o.category != p.category or o.brand != p.brand  # another category or brand
                assert not satisfies(r["query"], o)  # never a product that has every word of the query
                assert r["target"] <= SAME_CATEGORY
            if r["source"] == "category":
                assert o.category == p.category and r["target"] == SAME_CATEGORY
    assert n_neg["category"] > 20 and n_neg["bm25"] > 50


def test_pairs_file_round_trip_and_located_errors(catalogue, tmp_path):
    rows = weak_pairs(catalogue.products, WeakConfig(max_products=10))
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, rows)
    assert read_pairs(path, catalogue.products) == rows
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1]) | {"target": 1.5}
    path.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    with pytest.raises(DataError) as e:
        read_pairs(path)
    assert e.value.line == 2 and e.value.field == "target" and str(path) in str(e.value)
    path.write_text(lines[0].replace('"product_id": "', '"product_id": "NOPE') + "\n")
    with pytest.raises(DataError, match="unknown product") as e:
        read_pairs(path, catalogue.products)
    assert e.value.line == 1 and e.value.field == "product_id"
    path.write_text(json.dumps({"query": "x", "product_id": "p", "target": 1}) + "\n")
    with pytest.raises(DataError) as e:
        read_pairs(path)
    assert e.value.field == "query_id"


def test_cli_weak_then_pretrain_then_gold_with_base(esci_slice, tiny_bert, tmp_path, capsys):
    """`distill weak` writes pairs; `distill ranker|recall --pairs` pretrains on them; `--base` that student
    continues it on the gold judgments (the cross-encoder keeps its pretrained head)."""
    import numpy as np

    from lref.cli import main
    from lref.distill.ranker import CrossEncoderStudent, base_cross_encoder

    pairs = tmp_path / "pairs.jsonl"
    argv = ["distill", "weak", "--data", str(esci_slice), "--out", str(pairs), "--max-products", "30"]
    assert main([*argv, "--per-product", "1"]) == 0
    rows = read_pairs(pairs)
    assert "weak:" in rows[0]["query_id"] and f"-> {pairs}" in capsys.readouterr().out
    small = ["--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--data", str(esci_slice)]
    pre, gold = tmp_path / "pre", tmp_path / "gold"
    assert main(["distill", "ranker", *small, "--base", tiny_bert, "--pairs", str(pairs), "--out", str(pre)]) == 0
    meta = json.loads((pre / "distill.json").read_text())
    assert meta["n_examples"] == len(rows) and all(q.startswith("weak:") for q in meta["train_query_ids"])
    # the pretrained student as a base keeps its head: same scores as the saved student
    qp = [(r["query"], "Title: something") for r in rows[:4]]
    again = base_cross_encoder(str(pre), 32, "mean").predict(qp)
    np.testing.assert_allclose(again, CrossEncoderStudent(pre).model.predict(qp), rtol=1e-5)
    assert main(["distill", "ranker", *small, "--base", str(pre), "--out", str(gold)]) == 0
    meta = json.loads((gold / "distill.json").read_text())
    assert meta["config"]["base"] == str(pre) and meta["train_query_ids"] == load_dir(esci_slice).query_ids
    bi = tmp_path / "bi"
    assert main(["distill", "recall", *small, "--base", tiny_bert, "--pairs", str(pairs), "--no-index",
                 "--out", str(bi)]) == 0  # fmt: skip
    assert json.loads((bi / "distill.json").read_text())["n_triplets"] > 0
    capsys.readouterr()
    assert main(["distill", "recall", *small, "--pairs", str(pairs), "--judgments", "x.tsv", "--out", str(bi)]) != 0
    assert "--pairs trains on the pairs file alone" in capsys.readouterr().err


def test_bm25_scores_a_query_of_stop_words_as_zero(catalogue):
    from lref.rag.bm25 import BM25Index

    index = BM25Index(catalogue.products)
    assert not index.scores("the and of").any() and index.top("the and of", 5) == []
    word = next(iter(catalogue.products.values())).title.split()[0]
    assert index.scores(word).max() > 0
