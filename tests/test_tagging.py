"""Content tagger: taxonomy, knowledge graph, chroma store, candidates, batch job, quality, eval, LLM step."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lref.data import Product
from lref.rag.kg import TagGraph
from lref.tagging.taxonomy import Taxonomy, build_from_products

ROOT = Path(__file__).resolve().parents[1]

# A handmade catalogue: three roots, clear vocabularies.
CATALOGUE = {
    ("Home & Kitchen", "Furniture", "Chairs"): ["oak dining chair", "velvet accent chair", "folding camp chair"],
    ("Home & Kitchen", "Kitchen", "Cookware"): ["cast iron skillet 12 inch", "nonstick frying pan", "stock pot 8 qt"],
    ("Pet Supplies", "Dogs", "Toys"): ["squeaky dog chew toy", "rope tug toy for puppies", "dog fetch ball"],
    ("Pet Supplies", "Cats", "Litter"): ["clumping cat litter 20 lb", "pine cat litter pellets", "silica cat litter"],
    ("Electronics", "Audio", "Headphones"): ["wireless bluetooth headphones", "noise cancelling over-ear headphones"],
}


def catalogue_products() -> list[Product]:
    out = []
    for path, titles in CATALOGUE.items():
        for i, t in enumerate(titles):
            pid = f"{path[2][:3].upper()}{i}"
            out.append(Product(pid, t.title(), brand="Acme", category=list(path), rating=4.5, rating_count=120))
    return out


def write_products(path: Path, products: list[Product]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for p in products:
            d = p.to_dict()
            d.pop("extra")
            f.write(json.dumps(d) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- taxonomy


def test_taxonomy_build_from_handmade_catalogue(tmp_path):
    paths = [["A", "B", "C", "D"], ["A", "B", "E"], ["A", "F"], ["G"], ["A", "B", "C"], []]
    tax = build_from_products(paths, max_depth=3)
    assert [n.name for n in tax.topic] == ["A", "G"]  # by count
    a = tax.topic[0]
    assert a.count == 4 and [c.name for c in a.children] == ["B", "F"]
    b = a.children[0]
    assert b.count == 3 and {c.name: c.count for c in b.children} == {"C": 2, "E": 1}
    assert all(not c.children for c in b.children)  # depth 3: D is cut
    assert ("A", "B", "C", "D") not in tax.topic_paths() and ("A", "B", "C") in tax.topic_paths()
    assert "vintage" in tax.style_names() and {q.name for q in tax.quality} >= {"title", "social_proof"}
    # min_count prunes rare branches
    assert [c.name for c in build_from_products(paths, min_count=2).topic[0].children] == ["B"]
    # YAML round trip
    back = Taxonomy.load(tax.save(tmp_path / "tax.yaml"))
    assert back.topic_paths() == tax.topic_paths() and back.style_names() == tax.style_names()
    assert back.thresholds == tax.thresholds


def test_taxonomy_cli_build_and_bad_file(tmp_path, capsys):
    from lref.cli import main

    prods = write_products(tmp_path / "p.jsonl", catalogue_products())
    assert main(["taxonomy", "build", "--products", str(prods), "--out", str(tmp_path / "t.yaml")]) == 0
    tax = Taxonomy.load(tmp_path / "t.yaml")
    assert {n.name for n in tax.topic} == {"Home & Kitchen", "Pet Supplies", "Electronics"}
    (tmp_path / "bad.yaml").write_text("style:\n  - {definition: no name}\n")
    with pytest.raises(Exception, match="style entry 0 needs a 'name'"):
        Taxonomy.load(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------------------------------- graph


def small_graph() -> TagGraph:
    tax = Taxonomy.from_dict(
        {
            "topic": [{"name": "Home", "children": [{"name": "Furniture", "children": ["Chairs"]}]}],
            "style": [
                {"name": "vintage", "synonyms": ["retro"], "related": ["rustic"], "excludes": ["modern"]},
                {"name": "modern", "synonyms": ["contemporary"]},
                {"name": "rustic"},
            ],
            "quality": [{"name": "title", "levels": ["good", "poor"]}],
        }
    )
    return tax.graph()


def test_graph_consistency_ancestors_synonyms_exclusions(tmp_path):
    kg = small_graph()
    assert kg.ancestors("topic:Home > Furniture > Chairs") == ["topic:Home > Furniture", "topic:Home"]
    assert kg.related("style:vintage") == ["style:rustic"] and kg.related("style:rustic") == ["style:vintage"]
    out = kg.make_consistent(
        {"topic:Home > Furniture > Chairs": 0.8, "style:retro": 0.7, "style:contemporary": 0.6, "style:unknown": 0.9}
    )
    # ancestors added with the child's confidence; synonym mapped; the less confident of an excluded pair dropped
    assert out == {
        "topic:Home > Furniture > Chairs": 0.8,
        "topic:Home > Furniture": 0.8,
        "topic:Home": 0.8,
        "style:vintage": 0.7,
    }
    # the exclusion goes the other way when modern is more confident
    assert set(kg.make_consistent({"style:vintage": 0.55, "style:modern": 0.9})) == {"style:modern"}
    # product edges, then save / load in the documented format
    kg.tag_product("P1", {"topic:Home > Furniture > Chairs": 0.8, "style:vintage": 0.7})
    path = kg.save(tmp_path / "kg.json")
    data = json.loads(path.read_text())
    assert data["format"] == "lref-kg" and data["version"] == 1
    assert {"source": "topic:Home > Furniture", "target": "topic:Home", "rel": "is_a"} in data["edges"]
    back = TagGraph.load(path)
    assert back.product_tags("P1") == {"topic:Home > Furniture > Chairs": 0.8, "style:vintage": 0.7}
    assert back.products_with("style:vintage") == ["P1"]
    assert sorted(back.g.edges(data="rel")) == sorted(kg.g.edges(data="rel"))


# ---------------------------------------------------------------------------------------------- store + tagger


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A store over the handmade catalogue plus one planted exemplar with a unique topic and style."""
    from lref.rag.store import Store
    from lref.tagging.tagger import build_index

    products = catalogue_products()
    planted = Product("PLANT", "Ceramic Garden Gnome Statue With Lantern", brand="Gnomeland", category=[])
    tags = {"PLANT": {"topic": ["Garden", "Garden > Decor", "Garden > Decor > Gnomes"], "style": ["gothic"]}}
    tax = build_from_products([p.category for p in products] + [["Garden", "Decor", "Gnomes"]])
    d = tmp_path_factory.mktemp("store")
    store = Store(d)
    info = build_index(store, tax, [*products, planted], tags)
    assert info["n_exemplars"] == len(products) + 1
    assert info["recall@10"]["lref_exemplars"] == pytest.approx(1.0)
    tax.save(d / "taxonomy.yaml")
    return d


def test_candidates_find_planted_exemplar(store_dir):
    from lref.rag.store import Store
    from lref.tagging.tagger import Tagger

    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir))
    query = Product("Q1", "Garden Gnome Statue, Ceramic, With Solar Lantern", brand="Other")
    (c,) = tagger.gather([query])
    best = max((t for t in c.topic if t.count(">") == 2), key=c.topic.get)
    assert best == "topic:Garden > Decor > Gnomes"
    assert c.topic["topic:Garden"] > 0.5
    assert c.style.get("style:gothic", 0) > 0.3 and "exemplars" in c.evidence["style_sources"]["gothic"]
    assert c.evidence["exemplars"][0][0] == "PLANT"
    (row,) = tagger.tag([query])
    assert row["topic"] == ["Garden", "Garden > Decor", "Garden > Decor > Gnomes"]
    # other products land in their own category
    (r2,) = tagger.tag([Product("Q2", "Stainless Steel Frying Pan With Lid")])
    assert r2["topic"][:2] == ["Home & Kitchen", "Home & Kitchen > Kitchen"]


def test_store_config_is_portable_and_reopens_in_new_process(store_dir):
    from lref.rag.embedder import Embedder
    from lref.rag.store import EXEMPLARS, Store

    schema = " ".join(r[0] for r in sqlite3.connect(store_dir / "chroma" / "chroma.sqlite3").execute(
        "select schema_str from collections"))  # fmt: skip
    assert "lref_sentence_transformer" in schema and '"ef_search":128' in schema
    assert str(store_dir) not in schema and "/work" not in schema and '"name":"default"' not in schema
    q = Embedder().encode(["dog toy", "frying pan", "headphones"])
    here = [[(h.id, round(h.similarity, 5)) for h in hits] for hits in Store(store_dir).query(EXEMPLARS, q, 5)]
    np.save(store_dir.parent / "q.npy", q)
    code = (
        "import json, sys, numpy as np; from lref.rag.store import Store, EXEMPLARS; "
        f"q = np.load({str(store_dir.parent / 'q.npy')!r}); s = Store({str(store_dir)!r}); "
        "print(json.dumps([[(h.id, round(h.similarity, 5)) for h in hits] for hits in s.query(EXEMPLARS, q, 5)]))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    there = json.loads(res.stdout.strip().splitlines()[-1])
    assert [[tuple(x) for x in hits] for hits in there] == here
    assert [h[0] for h in here[1]][:3] == ["COO0", "COO1", "COO2"] or here[1][0][0].startswith("COO")


def test_hnsw_recall_against_exact(store_dir):
    from lref.rag.store import EXEMPLARS, Store

    s = Store(store_dir)
    q = s.embedder.encode(["chair", "litter", "ball", "pan"])
    exact = s.exact_query(EXEMPLARS, q, 10)
    approx = [[h.id for h in hits] for hits in s.query(EXEMPLARS, q, 10)]
    assert approx == exact  # tiny collection: HNSW with ef_search 128 is exact
    assert s.read_manifest()["ef_search"] == 128 and s.recall_at_k(EXEMPLARS, k=10) == 1.0


# ---------------------------------------------------------------------------------------------- batch job


class Killed(BaseException):
    """Like a kill: not an `Exception`, so the batch job's per-row retry does not catch it."""


class KillAfter:
    """Wraps a tagger; raises after `n` batches, as if the process had been killed."""

    def __init__(self, tagger, n):
        self.tagger, self.n = tagger, n

    def tag(self, products):
        if self.n == 0:
            raise Killed()
        self.n -= 1
        return self.tagger.tag(products)


def test_resume_after_kill_no_duplicates_no_losses(store_dir, tmp_path):
    from lref.rag.store import Store
    from lref.tagging import batch
    from lref.tagging.tagger import Tagger

    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir))
    products = catalogue_products()
    src = write_products(tmp_path / "in.jsonl", products)
    out = tmp_path / "tags.jsonl"
    # the kill arrives at the third batch
    with pytest.raises(Killed):
        batch.run_batch(KillAfter(tagger, 2), src, out, batch_size=3, progress=False)
    assert len(out.read_text().splitlines()) == 6
    with out.open("a") as f:  # a torn last line, as from a kill in the middle of a write
        f.write('{"product_id": "CHA1", "topic": ["Home')
    with pytest.raises(Exception, match="--resume"):
        batch.run_batch(tagger, src, out, progress=False)
    s = batch.run_batch(tagger, src, out, resume=True, batch_size=3, progress=False)
    ids = [json.loads(line)["product_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(p.product_id for p in products) and len(ids) == len(set(ids))
    assert s["skipped"] == 6 and s["tagged"] == len(products) - 6 and s["errors"] == 0
    # resuming a finished job is a no-op
    s2 = batch.run_batch(tagger, src, out, resume=True, progress=False)
    assert s2["tagged"] == 0 and len(out.read_text().splitlines()) == len(products)


def test_bad_rows_go_to_errors_file(store_dir, tmp_path):
    from lref.rag.store import Store
    from lref.tagging.batch import run_batch
    from lref.tagging.tagger import Tagger

    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir))
    lines = [
        json.dumps({"product_id": "A1", "title": "Dog Chew Toy"}),
        "{not json",
        json.dumps({"product_id": "A2", "title": ""}),
        json.dumps({"product_id": "A3", "title": "Cat Litter", "rating": "five"}),
        json.dumps({"product_id": "A1", "title": "Dog Chew Toy again"}),
        json.dumps({"product_id": "A4", "title": "Skillet"}),
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    s = run_batch(tagger, src, tmp_path / "tags.jsonl", progress=False)
    good = [json.loads(x)["product_id"] for x in (tmp_path / "tags.jsonl").read_text().splitlines()]
    errs = [json.loads(x) for x in (tmp_path / "tags.errors.jsonl").read_text().splitlines()]
    assert good == ["A1", "A4"] and s["errors"] == 4
    assert [e["line"] for e in errs] == [2, 3, 4, 5]
    assert "bad JSON" in errs[0]["reason"] and "field 'title'" in errs[1]["reason"]
    assert "field 'rating'" in errs[2]["reason"] and "duplicate" in errs[3]["reason"]


def test_resume_keeps_reporting_duplicates_and_bad_rows(store_dir, tmp_path):
    from lref.rag.store import Store
    from lref.tagging.batch import run_batch
    from lref.tagging.tagger import Tagger

    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir))
    lines = [
        json.dumps({"product_id": "A1", "title": "Dog Chew Toy"}),
        json.dumps({"product_id": "A2", "title": "Cat Litter"}),
        "{not json",
        json.dumps({"product_id": "A1", "title": "Dog Chew Toy again"}),
        json.dumps({"product_id": "A3", "title": "Skillet"}),
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "tags.jsonl"
    with pytest.raises(Killed):  # A1 written, killed while tagging A2
        run_batch(KillAfter(tagger, 1), src, out, batch_size=1, progress=False)
    s = run_batch(tagger, src, out, resume=True, batch_size=1, progress=False)
    ids = [json.loads(x)["product_id"] for x in out.read_text().splitlines()]
    errs = [json.loads(x) for x in (tmp_path / "tags.errors.jsonl").read_text().splitlines()]
    assert ids == ["A1", "A2", "A3"] and s["skipped"] == 1
    assert [e["line"] for e in errs] == [3, 4] and "duplicate" in errs[1]["reason"]


# ---------------------------------------------------------------------------------------------- quality


def test_quality_tags_levels_and_reasons():
    from lref.tagging.quality import quality_tags

    good = Product(
        "G", "Acme Oak Dining Chair, Set of 2", description=" ".join(["word"] * 40),
        bullet_points="a\nb\nc", brand="Acme", color="Brown", category=["Home", "Chairs"],
        rating=4.6, rating_count=500,
    )  # fmt: skip
    q = quality_tags(good)
    assert q["title"] == {"level": "good", "reasons": []}
    assert q["description"]["level"] == "complete" and q["attributes"]["level"] == "complete"
    assert q["social_proof"]["level"] == "strong"
    bad = Product("B", "CHAIR CHAIR CHAIRS BEST CHAIR CHEAP", category=["Home", "Tables"], rating=3.1, rating_count=4)
    q = quality_tags(bad)
    assert q["title"]["level"] == "poor"
    reasons = " ".join(q["title"]["reasons"])
    assert "shouting" in reasons and "keyword stuffing ('chair' 4 times)" in reasons
    assert "no brand" in reasons and "no product-type word" in reasons
    assert q["description"]["level"] == "missing" and q["attributes"]["level"] == "partial"  # 2 of 4
    assert quality_tags(Product("N", "Plain Thing"))["attributes"]["level"] == "sparse"
    assert q["social_proof"]["level"] == "weak"
    assert quality_tags(Product("N", "Plain Thing"))["social_proof"] == {"level": "none", "reasons": ["no ratings"]}


# ---------------------------------------------------------------------------------------------- eval


def test_tag_metrics_hand_computed():
    from lref.eval.tags import tag_metrics

    products = {
        "a": Product("a", "x", category=["H", "K"]),
        "b": Product("b", "x", category=["H", "F"]),
        "c": Product("c", "x", category=["P"]),
        "d": Product("d", "x", category=[]),
        "e": Product("e", "x", category=["H", "K"]),
    }
    rows = [
        {"product_id": "a", "topic": ["H", "H > K"], "style": ["modern"], "quality": {"title": {"level": "good"}}},
        {"product_id": "b", "topic": ["H", "H > K"], "style": [], "quality": {"title": {"level": "poor"}}},
        {"product_id": "c", "topic": [], "style": []},
        {"product_id": "d", "topic": ["H"], "style": []},
        {"product_id": "e", "topic": ["X"], "style": ["modern"]},
    ]
    m = tag_metrics(products, rows, holdout={"a", "b", "c", "d"})
    assert m["n_products"] == 4 and m["n_with_category"] == 3
    assert m["topic_acc_l1"] == pytest.approx(2 / 3)  # a, b right; c has no topic
    assert m["topic_acc_l2"] == pytest.approx(1 / 2)  # a right, b wrong
    assert m["coverage"] == pytest.approx(3 / 4)
    assert m["style_distribution"] == {"modern": 1}
    assert m["quality_distribution"] == {"title": {"good": 1, "poor": 1}}


def test_cli_index_tag_eval(store_dir, tmp_path):
    from lref.cli import main

    prods = write_products(tmp_path / "p.jsonl", catalogue_products())
    store = tmp_path / "store"
    assert main(["index", "--products", str(prods), "--store", str(store), "--holdout-fraction", "0.25"]) == 0
    manifest = json.loads((store / "manifest.json").read_text())
    held = manifest["held_out"]
    assert len(held) == 4 and manifest["n_exemplars"] == 10
    out = tmp_path / "tags.jsonl"
    args = ["tag", "--products", str(prods), "--taxonomy", str(store / "taxonomy.yaml"), "--store", str(store)]
    assert main([*args, "--out", str(out), "--kg-out", str(tmp_path / "kg.json")]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 14
    r = rows[0]
    assert set(r) == {"product_id", "topic", "style", "quality", "confidence", "evidence", "model", "version"}
    assert r["model"] == "retrieval"
    assert TagGraph.load(tmp_path / "kg.json").product_tags(r["product_id"])
    ev = tmp_path / "ev"
    a = ["eval-tags", "--products", str(prods), "--tags", str(out), "--out", str(ev), "--holdout-fraction", "0.25"]
    assert main(a) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["n_products"] == 4 and m["topic_acc_l1"] >= 0.75
    assert (ev / "report.md").exists() and (ev / "style.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- LLM step


def test_llm_step_with_tiny_model(store_dir, tiny_model):
    from lref.engines.hf import HFEngine
    from lref.rag.store import Store
    from lref.tagging.prompts import tag_question
    from lref.tagging.tagger import Tagger

    engine = HFEngine.from_pretrained(tiny_model, scheme="binary", batch_size=8)
    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir), engine=engine, model_name="tiny")
    p = Product("Q", "Squeaky Rubber Dog Toy", brand="Acme")
    (row,) = tagger.tag([p])
    asked = row["evidence"]["llm_p_yes"]
    assert asked and "topic:Pet Supplies > Dogs" in asked
    t, q = next(iter(asked.items()))
    direct = engine.score([tag_question(p, tagger.kg, t)])[0].probs[0]
    assert q == pytest.approx(direct, abs=1e-4) and 0 < q < 1
    assert row["model"] == "tiny"
    with pytest.raises(ValueError, match="binary"):
        Tagger(
            Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir), engine=HFEngine.from_pretrained(tiny_model)
        )


def test_llm_step_with_scripted_openai_server(store_dir, tiny_model):
    """The tagger through the openai engine against a scripted OpenAI-compatible server (httpx MockTransport)."""
    oa = pytest.importorskip("lref.engines.openai")
    import math

    import httpx

    from lref.labels import BINARY
    from lref.models import load_tokenizer
    from lref.rag.store import Store
    from lref.tagging.tagger import Tagger

    tok = load_tokenizer(tiny_model)
    yes_id, no_id = BINARY.token_ids(tok)
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        assert request.url.path == "/v1/completions"
        choices = []
        for i, prompt in enumerate(body["prompt"]):
            p_yes = 0.9 if "style tag: gothic" in prompt else 0.2
            top = {f"token_id:{yes_id}": math.log(p_yes), f"token_id:{no_id}": math.log(1 - p_yes)}
            choices.append({"index": i, "text": "yes", "logprobs": {"top_logprobs": [top]}})
        return httpx.Response(200, json={"choices": choices})

    engine = oa.OpenAIEngine(
        "http://scripted/v1", "tagger", scheme="binary", tokenizer=tok, transport=httpx.MockTransport(handler)
    )
    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir), engine=engine, model_name="tagger")
    (row,) = tagger.tag([Product("Q", "Garden Gnome Statue, Ceramic, With Solar Lantern")])
    asked = row["evidence"]["llm_p_yes"]
    assert asked["style:gothic"] == pytest.approx(0.9, abs=1e-6)
    assert all(v == pytest.approx(0.2, abs=1e-6) for t, v in asked.items() if t != "style:gothic")
    assert bodies and all(b["max_tokens"] == 1 for b in bodies)
    assert "gothic" in row["style"] and row["model"] == "tagger"
