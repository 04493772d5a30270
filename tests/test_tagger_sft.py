"""A tagger adapter trained by the SFT stage on the tagger's own yes/no question."""

import json

import numpy as np

from lref.cli import main
from lref.data import Product
from lref.rag.kg import split_tag_id
from lref.tagging.prompts import tag_question
from lref.tagging.sft_data import tagger_sft_rows
from lref.tagging.taxonomy import build_from_products

PRODUCTS = {
    "A": Product("A", "Squeaky rubber dog toy", brand="Acme", category=["Pets", "Dogs", "Toys"]),
    "B": Product("B", "Scratching post for cats", brand="Kitty", category=["Pets", "Cats"]),
    "C": Product("C", "Stainless steel chef knife", brand="Chef", category=["Kitchen", "Knives"]),
    "D": Product("D", "Wooden cutting board", brand="Oak", category=["Kitchen", "Boards"]),
}
TAGS = [
    {"product_id": "A", "topic": ["Pets > Dogs"], "style": []},
    {"product_id": "B", "topic": ["Pets > Cats"], "style": []},
    {"product_id": "C", "topic": ["Kitchen > Knives"], "style": ["minimalist"]},
    {"product_id": "D", "topic": ["Kitchen > Boards"], "style": ["rustic"]},
    {"product_id": "MISSING", "topic": ["Pets"], "style": []},
]


def kg():
    return build_from_products([p.category for p in PRODUCTS.values()], max_depth=2).graph()


def test_rows_are_the_tagger_question_with_yes_and_sibling_no():
    g = kg()
    rows = tagger_sft_rows(PRODUCTS, TAGS, g, negatives=1, seed=0)
    yes = [r for r in rows if r["completion"][0]["content"] == "yes"]
    no = [r for r in rows if r["completion"][0]["content"] == "no"]
    # 4 known topics + 2 known styles present in the shipped vocabulary -> 6 yes, one no each; MISSING skipped
    assert len(yes) == 6 and len(no) == 6
    for r in rows:
        assert r["prompt"] == tag_question(PRODUCTS[r["product_id"]], g, r["tag"])
    by_product = {(r["product_id"], r["tag"]) for r in yes}
    for r in no:
        assert (r["product_id"], r["tag"]) not in by_product
    # the "no" for a topic is its sibling (same parent): the hard negative
    neg_a = next(r["tag"] for r in no if r["product_id"] == "A" and split_tag_id(r["tag"])[0] == "topic")
    assert neg_a == "topic:Pets > Cats"


def test_tagger_adapter_trains_with_lref_sft_and_scores(tiny_model, tmp_path):
    import yaml

    products = tmp_path / "products.jsonl"
    products.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in PRODUCTS.values()))
    (tmp_path / "tags.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TAGS))
    tax = build_from_products([p.category for p in PRODUCTS.values()], max_depth=2)
    tax.save(tmp_path / "taxonomy.yaml")
    assert yaml.safe_load((tmp_path / "taxonomy.yaml").read_text())["topic"]
    rows = tmp_path / "rows.jsonl"
    argv = ["tagger-data", "--products", str(products), "--tags", str(tmp_path / "tags.jsonl")]
    assert main([*argv, "--taxonomy", str(tmp_path / "taxonomy.yaml"), "--out", str(rows)]) == 0
    out = tmp_path / "tagger"
    argv = ["sft", "--train", str(rows), "--model", str(tiny_model), "--max-steps", "10", "--learning-rate", "0.01"]
    assert main([*argv, "--batch-size", "4", "--lora-r", "8", "--no-packing", "--out", str(out)]) == 0
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 2 and steps[-1]["loss"] < steps[0]["loss"]
    assert (out / "adapter" / "adapter_config.json").exists()

    from lref.engines.hf import HFEngine

    prompts = [json.loads(x)["prompt"] for x in rows.read_text().splitlines()]
    base = HFEngine.from_pretrained(tiny_model, scheme="binary").verbalizer_logits(prompts)
    tuned = HFEngine.from_pretrained(tiny_model, adapter=out / "adapter", scheme="binary").verbalizer_logits(prompts)
    assert not np.allclose(base, tuned, atol=1e-3)


def test_sft_without_data_for_records_is_a_clear_error(tiny_model, tmp_path, capsys):
    assert main(["sft", "--model", str(tiny_model), "--out", str(tmp_path / "x")]) == 2
    assert "needs --data" in capsys.readouterr().err
