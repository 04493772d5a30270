"""Every class of malformed input to `lref eval --data DIR` ends in one located line on stderr, exit code 2 and
no output files; inputs that are only unusual (BOM, CRLF, long fields, extra columns) are accepted.

Each test writes a small esci-layout folder, breaks one thing and runs the real command in-process
(`lref.cli.main`); one test runs it as a subprocess to show no traceback reaches the terminal.
docs/data.md lists the same classes and messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lref.cli import main
from lref.data import load_dir, render_product
from lref.tables import MAX_LINE_BYTES

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = [
    {"product_id": "P1", "title": "Red running shoe", "brand": "Acme", "category": ["Shoes"], "rating": 4.5},
    {"product_id": "P2", "title": "Blue hat", "brand": None, "color": "blue", "rating_count": 12},
    {"product_id": "P3", "title": "Shoe laces, red", "description": "Two pairs of laces."},
]
HEADER = "query_id\tquery\tproduct_id\tesci_label\tgrade\n"
JUDGMENTS = HEADER + "q1\tred shoe\tP1\tE\t3\nq1\tred shoe\tP2\tI\t0\nq2\tlaces\tP3\tE\t3\nq2\tlaces\tP1\tC\t1\n"
QUERIES = "query_id\tquery\nq1\tred shoe\nq2\tlaces\n"


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def folder(tmp_path: Path, products=None, judgments=None, queries=None) -> Path:
    """An esci-layout folder; each file is the valid default unless given (str is written as UTF-8, bytes as is)."""
    d = tmp_path / "data"
    d.mkdir(parents=True)
    for name, content in (
        ("products.jsonl", jsonl(PRODUCTS) if products is None else products),
        ("judgments.tsv", JUDGMENTS if judgments is None else judgments),
        ("queries.tsv", QUERIES if queries is None else queries),
    ):
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return d


def lref_eval(d: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    rc = main(["eval", "--data", str(d), "--scorer", "bm25", "--out", str(out), *extra])
    return rc, capsys.readouterr().err, out


def refused(d: Path, tmp_path: Path, capsys, *extra: str) -> str:
    """Run `lref eval` on a bad folder: exit 2, one line on stderr, no output written. Returns the message."""
    rc, err, out = lref_eval(d, tmp_path, capsys, *extra)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("lref: error: "), err
    assert "Traceback" not in err
    assert not (out / "metrics.json").exists() and not (out / "scores.jsonl").exists()
    return lines[0].removeprefix("lref: error: ")


# ---------------------------------------------------------------------------------------------- encoding


def test_bytes_that_are_not_utf8_name_line_and_offset_and_suggest_the_encoding(tmp_path, capsys):
    line1 = json.dumps(PRODUCTS[0]).encode() + b"\n"
    line2 = json.dumps(PRODUCTS[1]).replace("Blue hat", "Caf\\u00e9 hat").encode().replace(b"\\u00e9", b"\xe9")
    at = line2.index(b"\xe9")
    d = folder(tmp_path, products=line1 + line2 + b"\n" + json.dumps(PRODUCTS[2]).encode() + b"\n")
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'products.jsonl'}, line 2: not UTF-8: byte 0xe9 at byte offset {at} of the line (offset "
        f"{len(line1) + at} in the file); try converting from cp1252/latin-1, e.g. "
        "`iconv -f cp1252 -t utf-8 products.jsonl`"
    )

    # a cp1252 query in the judgments, and a whole file in UTF-16
    (d / "judgments.tsv").write_bytes(JUDGMENTS.replace("laces\tP1", "lac\u201ces\tP1").encode("cp1252"))
    (d / "products.jsonl").write_text(jsonl(PRODUCTS), encoding="utf-8")
    msg = refused(d, tmp_path, capsys)
    assert msg.startswith(f"{d / 'judgments.tsv'}, line 5: not UTF-8: byte 0x93 at byte offset 6 of the line")
    assert "try converting from cp1252/latin-1" in msg
    (d / "judgments.tsv").write_text(JUDGMENTS, encoding="utf-16")
    msg = refused(d, tmp_path, capsys)
    assert msg.startswith(f"{d / 'judgments.tsv'}, line 1: not UTF-8: byte 0xff at byte offset 0 of the line")
    assert "try converting from UTF-16" in msg


# ---------------------------------------------------------------------------------------------- JSON limits


def nested(depth: int):
    """A JSON object whose `extra` value makes the whole record `depth` levels deep."""
    value: list = []
    for _ in range(depth - 2):
        value = [value]
    return {**PRODUCTS[2], "extra": value}


def test_json_nested_too_deeply(tmp_path, capsys):
    d = folder(tmp_path, products=jsonl([*PRODUCTS[:2], nested(65)]))
    assert refused(d, tmp_path, capsys) == f"{d / 'products.jsonl'}, line 3: JSON nested deeper than 64 levels"
    # far past Python's recursion limit: the same message, no RecursionError
    (d / "products.jsonl").write_text(jsonl(PRODUCTS[:2]) + '{"product_id": "P3", "x": ' + "[" * 100_000 + "\n")
    assert refused(d, tmp_path, capsys) == f"{d / 'products.jsonl'}, line 3: JSON nested deeper than 64 levels"
    # 64 levels are accepted
    (d / "products.jsonl").write_text(jsonl([*PRODUCTS[:2], nested(64)]))
    assert load_dir(d).products["P3"].extra["extra"] is not None


def test_json_line_too_large(tmp_path, capsys):
    big = {**PRODUCTS[1], "description": "x" * (MAX_LINE_BYTES + 10)}
    d = folder(tmp_path, products=jsonl([PRODUCTS[0], big, PRODUCTS[2]]))
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'products.jsonl'}, line 2: line is longer than 10,485,760 bytes, the limit for one record"
    )


def test_bad_json_and_non_json_values(tmp_path, capsys):
    d = folder(tmp_path, products=jsonl(PRODUCTS[:2]) + '{"product_id": "P3", "title": \n')
    assert refused(d, tmp_path, capsys) == (f"{d / 'products.jsonl'}, line 3: bad JSON (Expecting value at column 31)")
    (d / "products.jsonl").write_text(jsonl(PRODUCTS[:2]) + '{"product_id": "P3", "title": "t", "rating": NaN}\n')
    assert refused(d, tmp_path, capsys) == f"{d / 'products.jsonl'}, line 3: bad JSON (NaN is not valid JSON)"
    (d / "products.jsonl").write_text(jsonl(PRODUCTS[:2]) + '["P3", "t"]\n')
    assert refused(d, tmp_path, capsys) == f"{d / 'products.jsonl'}, line 3: expected a JSON object, got a list"


# ---------------------------------------------------------------------------------------------- value types


@pytest.mark.parametrize(
    "change,field,message",
    [
        ({"title": 42}, "title", "expected text, got a number 42"),
        ({"title": ["Blue", "hat"]}, "title", "expected text, got a list ['Blue', 'hat']"),
        ({"brand": {"name": "Acme"}}, "brand", "expected text, got an object {'name': 'Acme'}"),
        ({"description": True}, "description", "expected text, got true/false True"),
        ({"category": [1, 2]}, "category", "expected a list of text, it holds a number 1"),
        ({"product_id": ["P2"]}, "product_id", "expected an id (text or an integer), got a list ['P2']"),
        ({"rating": "4.5"}, "rating", "expected a number, got text '4.5'"),
        ({"rating": [4.5]}, "rating", "expected a number, got a list [4.5]"),
        ({"rating_count": "12"}, "rating_count", "expected an integer, got text '12'"),
        ({"rating_count": 12.5}, "rating_count", "expected an integer, got 12.5"),
    ],
)
def test_json_value_of_the_wrong_type(tmp_path, capsys, change, field, message):
    d = folder(tmp_path, products=jsonl([PRODUCTS[0], {**PRODUCTS[1], **change}, PRODUCTS[2]]))
    assert refused(d, tmp_path, capsys) == f"{d / 'products.jsonl'}, line 2, field {field!r}: {message}"


def test_wrong_types_in_judgments_and_tsv_numbers(tmp_path, capsys):
    d = folder(tmp_path)
    rows = [
        {"query_id": "q1", "query": "red shoe", "product_id": "P1", "esci_label": "E", "grade": 3},
        {"query_id": "q1", "query": 7, "product_id": "P2", "esci_label": "I", "grade": 0},
    ]
    jp = tmp_path / "judgments.jsonl"
    jp.write_text(jsonl(rows))
    assert refused(d, tmp_path, capsys, "--judgments", str(jp)) == (
        f"{jp}, line 2, field 'query': expected text, got a number 7"
    )
    jp.write_text(jsonl([rows[0], {**rows[1], "query": "hat", "grade": "0"}]))
    assert refused(d, tmp_path, capsys, "--judgments", str(jp)) == (
        f"{jp}, line 2, field 'grade': expected an integer grade, got text '0'"
    )
    jp.write_text(jsonl([rows[0], {**rows[1], "query": "hat", "esci_label": ["I"]}]))
    assert refused(d, tmp_path, capsys, "--judgments", str(jp)) == (
        f"{jp}, line 2, field 'esci_label': expected a label or a grade, got a list ['I']"
    )
    # a TSV catalogue holds text: a number column must parse
    (d / "products.jsonl").unlink()
    (d / "products.jsonl").write_text(jsonl(PRODUCTS))
    tsv = tmp_path / "products.tsv"
    tsv.write_text("product_id\ttitle\trating\nP1\tshoe\tfive\n")
    from lref.data import DataError, load_products

    with pytest.raises(DataError, match=r"products.tsv, line 2, field 'rating': expected a number, got 'five'$"):
        load_products(tsv)
    tsv.write_text("product_id\ttitle\trating\trating_count\nP1\tshoe\t4.5\t12\n")
    assert (load_products(tsv)["P1"].rating, load_products(tsv)["P1"].rating_count) == (4.5, 12)


# ---------------------------------------------------------------------------------------------- grades


@pytest.mark.parametrize(
    "row,field,message",
    [
        ("q2\tlaces\tP1\tC\t1.5", "grade", "grade '1.5' is not an integer"),
        ("q2\tlaces\tP1\tC\tone", "grade", "grade 'one' is not an integer"),
        ("q2\tlaces\tP1\tC\t7", "grade", "grade 7 is outside the esci scheme's range 0..3"),
        ("q2\tlaces\tP1\tC\t-1", "grade", "grade -1 is outside the esci scheme's range 0..3"),
        ("q2\tlaces\tP1\t5\t", "esci_label", "grade 5 is outside the esci scheme's range 0..3"),
        ("q2\tlaces\tP1\t2.5\t", "esci_label", "grade '2.5' is not an integer"),
        ("q2\tlaces\tP1\tX\t1", "esci_label", "unknown label 'X' (scheme esci: ['E', 'S', 'C', 'I'])"),
    ],
)
def test_grade_not_an_integer_or_out_of_range(tmp_path, capsys, row, field, message):
    d = folder(tmp_path, judgments=JUDGMENTS.replace("q2\tlaces\tP1\tC\t1", row))
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}, line 5, field {field!r}: {message}"


def test_grade_and_label_disagree(tmp_path, capsys):
    d = folder(tmp_path, judgments=JUDGMENTS.replace("P2\tI\t0", "P2\tI\t2"))
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'judgments.tsv'}, line 3, field 'grade': grade 2 disagrees with label 'I' (esci: E=3, S=2, C=1, I=0)"
    )
    # a label given as its grade value agrees with the grade column; a blank grade defers to the label
    d2 = folder(tmp_path / "ok", judgments=JUDGMENTS.replace("P2\tI\t0", "P2\t0\t0").replace("P3\tE\t3", "P3\tE\t"))
    assert [(j.label, j.grade) for j in load_dir(d2).judgments][1:3] == [("I", 0), ("E", 3)]


# ---------------------------------------------------------------------------------------------- duplicates, references


def test_duplicate_pairs_products_and_queries(tmp_path, capsys):
    d = folder(tmp_path, judgments=JUDGMENTS + "q1\tred shoe\tP1\tS\t2\n")
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'judgments.tsv'}, line 6: duplicate judgment for query 'q1' and product 'P1' (first at line 2)"
    )
    (d / "judgments.tsv").write_text(JUDGMENTS)
    (d / "products.jsonl").write_text(jsonl([*PRODUCTS, {"product_id": "P1", "title": "again"}]))
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'products.jsonl'}, line 4, field 'product_id': duplicate product_id 'P1' (first at line 1)"
    )
    (d / "products.jsonl").write_text(jsonl(PRODUCTS))
    (d / "queries.tsv").write_text(QUERIES + "q1\tred shoes\n")
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'queries.tsv'}, line 4, field 'query_id': duplicate query_id 'q1' (first at line 2)"
    )


def test_judgment_product_not_in_catalogue(tmp_path, capsys):
    d = folder(tmp_path, judgments=JUDGMENTS.replace("q2\tlaces\tP3", "q2\tlaces\tP9"))
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'judgments.tsv'}, line 4, field 'product_id': product 'P9' not found in {d / 'products.jsonl'}"
    )


# ---------------------------------------------------------------------------------------------- files and columns


def test_empty_file_and_header_only(tmp_path, capsys):
    d = folder(tmp_path, judgments="")
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}: file is empty"
    (d / "judgments.tsv").write_text(HEADER)
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}: file has no data rows"
    (d / "products.jsonl").write_text("\n\n")
    assert refused(d, tmp_path, capsys) == f"{d / 'products.jsonl'}: file has no data rows"
    (d / "products.jsonl").write_text(jsonl(PRODUCTS))
    (d / "judgments.tsv").write_text("\n" + JUDGMENTS)
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}, line 1: file has no header row"
    (d / "judgments.tsv").unlink()
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}: file not found"


def test_missing_or_misspelled_column(tmp_path, capsys):
    d = folder(tmp_path, judgments=JUDGMENTS.replace("esci_label", "esci_lable", 1))
    header = ["query_id", "query", "product_id", "esci_lable", "grade"]
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'judgments.tsv'}, line 1, field 'esci_label': missing column (did you mean 'esci_lable'?) "
        f"(header has {header})"
    )
    (d / "judgments.tsv").write_text("query_id\tquery\tproduct_id\tgrade\nq1\tred shoe\tP1\t3\n")
    assert refused(d, tmp_path, capsys).startswith(
        f"{d / 'judgments.tsv'}, line 1, field 'esci_label': missing column (header has "
    )
    (d / "judgments.tsv").write_text(JUDGMENTS.replace("\t", ","))
    assert "the header has one column: is the file comma-separated?" in refused(d, tmp_path, capsys)
    (d / "judgments.tsv").write_text(JUDGMENTS)
    (d / "products.jsonl").write_text(jsonl([PRODUCTS[0], {"product_id": "P2", "titel": "Blue hat"}, PRODUCTS[2]]))
    assert refused(d, tmp_path, capsys) == (
        f"{d / 'products.jsonl'}, line 2, field 'title': missing field (did you mean 'titel'?)"
    )
    (d / "products.jsonl").write_text(jsonl(PRODUCTS))
    (d / "judgments.tsv").write_text(JUDGMENTS.replace("P2\tI\t0", "P2\tI"))
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}, line 3: row has 4 fields, header has 5"
    (d / "judgments.tsv").write_text(HEADER.replace("grade", "query") + "q1\tx\tP1\tE\tx\n")
    assert refused(d, tmp_path, capsys) == f"{d / 'judgments.tsv'}, line 1: column 'query' appears twice in the header"


# ---------------------------------------------------------------------------------------------- accepted


def metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {k: m[k] for k in ("ndcg@10", "n_pairs", "n_queries")}


def test_bom_crlf_and_extra_columns_are_accepted(tmp_path, capsys):
    plain = folder(tmp_path / "plain")
    rc, _, out_plain = lref_eval(plain, tmp_path / "plain", capsys)
    assert rc == 0
    bom, crlf = "\ufeff", lambda s: s.replace("\n", "\r\n")
    rows = JUDGMENTS.splitlines()
    odd = folder(
        tmp_path / "odd",
        products=bom + crlf(jsonl([{**p, "price": 9.5, "tags": {"a": [1]}} for p in PRODUCTS])),
        judgments=bom + crlf("".join(f"{x}\t{'annotator' if i == 0 else 'ann1'}\n" for i, x in enumerate(rows))),
        queries=bom + crlf(QUERIES),
    )
    assert (odd / "products.jsonl").read_bytes().startswith(b"\xef\xbb\xbf{")
    assert b"\r\n" in (odd / "judgments.tsv").read_bytes()
    a, b = load_dir(plain), load_dir(odd)
    assert [vars(j) for j in a.judgments] == [vars(j) for j in b.judgments] and a.queries == b.queries
    assert {k: p.title for k, p in a.products.items()} == {k: p.title for k, p in b.products.items()}
    assert b.products["P1"].extra == {"price": 9.5, "tags": {"a": [1]}}
    rc, err, out_odd = lref_eval(odd, tmp_path / "odd", capsys)
    assert rc == 0, err
    assert metrics(out_odd) == metrics(out_plain)


def test_very_long_fields_are_kept_whole_at_load(tmp_path, capsys):
    description = "laces " * 400_000  # 2.4 MB in one JSON line
    query = "red shoe " + "very " * 40_000  # 200 KB in one TSV field, over the csv module's default limit
    d = folder(
        tmp_path,
        products=jsonl([PRODUCTS[0], PRODUCTS[1], {**PRODUCTS[2], "description": description}]),
        judgments=JUDGMENTS.replace("red shoe", query),
    )
    c = load_dir(d)
    assert c.products["P3"].description == description
    assert c.judgments[0].query == query and c.queries["q1"] == query
    assert len(render_product(c.products["P3"], max_tokens=256).split(" ")) == 256  # cut when rendered
    rc, err, out = lref_eval(d, tmp_path, capsys)
    assert rc == 0, err
    assert metrics(out)["n_pairs"] == 4


# ---------------------------------------------------------------------------------------------- no traceback


@pytest.mark.parametrize("case", ["not-utf8", "deep-json"])
def test_subprocess_prints_one_line_and_exits_2(tmp_path, case):
    if case == "not-utf8":
        d = folder(tmp_path, judgments=JUDGMENTS.replace("laces\tP1", "lac\xe9s\tP1").encode("latin-1"))
        expect = f"lref: error: {d / 'judgments.tsv'}, line 5: not UTF-8: byte 0xe9 at byte offset 6 of the line"
    else:
        d = folder(tmp_path, products=jsonl(PRODUCTS[:2]) + '{"product_id": "P3", "x": ' + '{"x": ' * 100_000 + "\n")
        expect = f"lref: error: {d / 'products.jsonl'}, line 3: JSON nested deeper than 64 levels"
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LREF_DEBUG", None)
    p = subprocess.run(
        [sys.executable, "-m", "lref.cli", "eval", "--data", str(d), "--scorer", "bm25", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [p.stderr.strip()] and p.stderr.startswith(expect), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert not out.exists()
