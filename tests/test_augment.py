"""Training-time augmentation against seller-written text: attacked copies keep their low targets."""

from __future__ import annotations

import json

from lref.data import load_dir
from lref.distill.augment import INSTRUCTIONS, augment_attacks
from lref.distill.student import build_examples


def test_attacked_copies_keep_targets_and_leave_the_catalogue_alone(esci_slice):
    corpus = load_dir(esci_slice)
    ex = build_examples(corpus)
    before = {pid: p.title for pid, p in corpus.products.items()}
    out, prods = augment_attacks(ex, corpus.products, per_query=2, seed=1)
    assert out[: len(ex)] == ex and (out, prods) == augment_attacks(ex, corpus.products, per_query=2, seed=1)
    new = out[len(ex) :]
    assert len(new) == 4 * len(corpus.query_ids)  # 2 products x 2 attacks per query (each query has >= 2 low ones)
    src = {(e["query_id"], e["product_id"]): e for e in ex}
    for e in new:
        pid, kind = e["product_id"].split("#")
        orig = src[(e["query_id"], pid)]
        assert e["target"] == orig["target"] <= 0.34 and e["gold"] == orig["gold"]
        copy, p = prods[e["product_id"]], corpus.products[pid]
        if kind == "stuffed":
            assert copy.title == f"{p.title} {e['query']}" and e["augmented_by"] == "stuffing"
        else:
            assert copy.description.startswith(INSTRUCTIONS) and copy.title == p.title
    assert {pid: p.title for pid, p in corpus.products.items()} == before and "#" not in "".join(corpus.products)


def test_cli_ranker_trains_on_the_attacked_copies(esci_slice, tiny_bert, tmp_path):
    from lref.cli import main

    argv = ["distill", "ranker", "--data", str(esci_slice), "--base", tiny_bert, "--max-steps", "1"]
    assert (
        main([*argv, "--batch-size", "4", "--max-length", "32", "--augment-attacks", "1", "--out", str(tmp_path)]) == 0
    )
    meta = json.loads((tmp_path / "distill.json").read_text())
    n_judged = len(load_dir(esci_slice).judgments)
    assert meta["config"]["augment_attacks"] == 1 and meta["n_examples"] == n_judged + 2 * 4
