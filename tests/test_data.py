import json

import pytest

from lref.data import (
    DataError,
    Product,
    load_dir,
    load_judgments,
    load_products,
    render_product,
    split_by_query,
    to_dataset,
)

PRODUCTS = [
    {"product_id": "P1", "title": "Red running shoe", "brand": "Acme", "color": "red", "category": ["Shoes", "Run"]},
    {"product_id": "P2", "title": "Blue hat", "brand": "", "color": None, "category": []},
]


def write(tmp_path, judgments: str, products=PRODUCTS, queries: str | None = None):
    d = tmp_path / "data"
    d.mkdir()
    (d / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    (d / "judgments.tsv").write_text(judgments)
    if queries:
        (d / "queries.tsv").write_text(queries)
    return d


HEADER = "query_id\tquery\tproduct_id\tesci_label\tgrade\n"


def test_load_dir_esci150_layout(esci_slice):
    c = load_dir(esci_slice)
    assert len(c.query_ids) == 4
    assert all(j.product_id in c.products for j in c.judgments)
    assert {j.label for j in c.judgments} <= {"E", "S", "C", "I"}
    assert all(j.grade == {"E": 3, "S": 2, "C": 1, "I": 0}[j.label] for j in c.judgments)


def test_small_dir_and_dataset(tmp_path):
    d = write(tmp_path, HEADER + "q1\tred shoe\tP1\tE\t3\nq1\tred shoe\tP2\tI\t0\n")
    c = load_dir(d)
    assert [(j.product_id, j.grade) for j in c.judgments] == [("P1", 3), ("P2", 0)]
    ds = to_dataset(c)
    assert ds.column_names == ["query_id", "query", "product_id", "product_text", "label", "grade"]
    assert ds[0]["product_text"].startswith("Title: Red running shoe\nBrand: Acme\nColour: red\nCategory: Shoes > Run")


@pytest.mark.parametrize(
    "judgments,match",
    [
        (
            "query_id\tquery\tproduct_id\tgrade\nq\tx\tP1\t3\n",
            r"judgments.tsv, line 1, field 'esci_label': missing column",
        ),
        (
            HEADER + "q1\tx\tP1\tE\t3\nq1\tx\tP2\tQ\t3\n",
            r"judgments.tsv, line 3, field 'esci_label': unknown label 'Q'",
        ),
        (HEADER + "q1\tx\tP9\tE\t3\n", r"judgments.tsv, line 2, field 'product_id': product 'P9' not found"),
        (HEADER + "q1\t\tP1\tE\t3\n", r"judgments.tsv, line 2, field 'query': missing value"),
        ("", r"judgments.tsv: file is empty"),
        (HEADER, r"judgments.tsv: file has no data rows"),
        (HEADER + "q1\tx\tP1\tE\t3\nq1\tx\tP1\tS\t2\n", r"line 3: duplicate judgment"),
    ],
)
def test_bad_judgments_name_file_line_field(tmp_path, judgments, match):
    d = write(tmp_path, judgments)
    with pytest.raises(DataError, match=match):
        load_dir(d)


def test_bad_json_line_and_missing_title(tmp_path):
    p = tmp_path / "products.jsonl"
    p.write_text('{"product_id": "A", "title": "ok"}\n{"product_id": "B", "title": \n')
    with pytest.raises(DataError, match=r"products.jsonl, line 2: bad JSON"):
        load_products(p)
    p.write_text('{"product_id": "A"}\n')
    with pytest.raises(DataError, match=r"products.jsonl, line 1, field 'title': missing field"):
        load_products(p)
    p.write_text('{"product_id": "A", "title": "t", "rating": "five"}\n')
    with pytest.raises(DataError, match=r"line 1, field 'rating': expected a number, got text 'five'"):
        load_products(p)


def test_generic_csv_with_column_mapping(tmp_path):
    pp = tmp_path / "items.csv"
    pp.write_text("sku,name,cat\nA,Lamp,Home|Lighting\nB,Desk,Home\n")
    products = load_products(pp, mapping={"product_id": "sku", "title": "name", "category": "cat"})
    assert products["A"].category == ["Home", "Lighting"] and products["B"].title == "Desk"
    jp = tmp_path / "labels.jsonl"
    jp.write_text(
        '{"qid": 1, "text": "lamp", "sku": "A", "rel": 3}\n{"qid": 1, "text": "lamp", "sku": "B", "rel": 0}\n'
    )
    js = load_judgments(
        jp, "esci", {"query_id": "qid", "query": "text", "product_id": "sku", "label": "rel"}, products
    )
    assert [(j.query_id, j.label, j.grade) for j in js] == [("1", "E", 3), ("1", "I", 0)]


def test_render_cuts_to_token_budget(tiny_model):
    from lref.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    p = Product("X", "Super long title " * 10, description="words " * 500, brand="Acme")
    text = render_product(p, max_tokens=40, tokenizer=tok)
    assert len(tok.encode(text, add_special_tokens=False)) <= 40
    assert text.startswith("Title: Super long title")
    assert render_product(p, max_tokens=5) == "Title: Super long title Super"


def test_split_by_query_is_seeded_and_disjoint():
    qs = [f"q{i}" for i in range(100)]
    a = split_by_query(qs, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    b = split_by_query(list(reversed(qs)), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    c = split_by_query(qs, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=2)
    assert a == b and a != c
    assert [len(a[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert set(a["train"]).isdisjoint(a["test"]) and set().union(*a.values()) == set(qs)
    with pytest.raises(ValueError):
        split_by_query(qs, {"a": 0.5, "b": 0.6})


def test_subset_keeps_whole_queries(esci_slice):
    c = load_dir(esci_slice)
    parts = split_by_query(c.query_ids, {"a": 0.5, "b": 0.5}, seed=0)
    sub = c.subset(parts["a"])
    assert {j.query_id for j in sub.judgments} == set(parts["a"])
    assert len(sub.judgments) == sum(1 for j in c.judgments if j.query_id in parts["a"])
