"""Records, loaders and validation for query-product judgments.

Loaders read the esci150 layout (queries.tsv, judgments.tsv, products.jsonl) and generic
JSONL/CSV/TSV files with a column mapping. Every error names the file, the line and the field, so
a user can fix the row; `DataError` is what the CLI turns into a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lref.labels import LabelError, LabelScheme, get_scheme
from lref.tables import (  # DataError, read_table: re-exported
    DataError,
    is_json,
    json_kind,
    parse_json_object,
    read_lines,
    read_table,
    show,
)

log = logging.getLogger(__name__)

PRODUCT_FIELDS = ("title", "description", "bullet_points", "brand", "color", "category", "rating", "rating_count")


@dataclass
class Product:
    product_id: str
    title: str
    description: str = ""
    bullet_points: str = ""
    brand: str = ""
    color: str = ""
    category: list[str] = field(default_factory=list)
    rating: float | None = None
    rating_count: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Judgment:
    query_id: str
    query: str
    product_id: str
    label: str  # the scheme's label name, e.g. "E"
    grade: int  # the scheme's numeric grade, e.g. 3


@dataclass
class Corpus:
    """Judgments and the products they point to."""

    judgments: list[Judgment]
    products: dict[str, Product]
    scheme: LabelScheme
    queries: dict[str, str] = field(default_factory=dict)  # query_id -> text

    @property
    def query_ids(self) -> list[str]:
        return sorted({j.query_id for j in self.judgments})

    def subset(self, query_ids: Iterable[str]) -> Corpus:
        keep = set(query_ids)
        js = [j for j in self.judgments if j.query_id in keep]
        return Corpus(js, self.products, self.scheme, {q: t for q, t in self.queries.items() if q in keep})


# ---------------------------------------------------------------------------------------------- values
# A JSON file holds each value in its JSON type; a TSV/CSV holds text, which is parsed.


def _text(value, path, line, name) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"expected text, got {json_kind(value)} {show(value)}", path, line, name)
    return value


def _id(value, path, line, name) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"expected an id (text or an integer), got {json_kind(value)} {show(value)}", path, line, name)
    return str(value).strip()


def as_str_list(value, path=None, line=None, name=None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        bad = [v for v in value if v is not None and not isinstance(v, str)]
        if bad:
            raise DataError(f"expected a list of text, it holds {json_kind(bad[0])} {show(bad[0])}", path, line, name)
        return [v for v in value if v]
    text = _text(value, path, line, name)
    for sep in (" > ", "|", ">"):
        if sep in text:
            return [p.strip() for p in text.split(sep) if p.strip()]
    return [text] if text else []


def as_number(value, kind, path, line, name):
    """A float or int field: a JSON number, or text that parses as one; None when blank."""
    if value is None or value == "":
        return None
    what = "an integer" if kind is int else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int | float)
        or (is_json(path) and isinstance(value, str))
    ):
        raise DataError(f"expected {what}, got {json_kind(value)} {show(value)}", path, line, name)
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"expected {what}, got {show(value)}", path, line, name) from None
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise DataError(f"expected {what}, got {show(value)}", path, line, name)
    return int(number) if kind is int else number


def product_from_row(
    row: Mapping, path: str | Path | None = None, line: int | None = None, mapping: Mapping[str, str] | None = None
) -> Product:
    """One table row as a `Product`, checking every value's type; DataError names the line and field.

    `mapping` renames file columns to Product fields ({field: column}); unmapped columns go to `extra`.
    """
    col = {f: (mapping or {}).get(f, f) for f in ("product_id", *PRODUCT_FIELDS)}
    for f in ("product_id", "title"):
        value = row.get(col[f])
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError("missing value", path, line, col[f])
    return Product(
        product_id=_id(row[col["product_id"]], path, line, col["product_id"]),
        **{f: _text(row.get(col[f]), path, line, col[f]) for f in PRODUCT_FIELDS[:5]},  # title .. color
        category=as_str_list(row.get(col["category"]), path, line, col["category"]),
        rating=as_number(row.get(col["rating"]), float, path, line, col["rating"]),
        rating_count=as_number(row.get(col["rating_count"]), int, path, line, col["rating_count"]),
        extra={k: v for k, v in row.items() if k not in col.values()},
    )


def load_products(path: str | Path, mapping: Mapping[str, str] | None = None) -> dict[str, Product]:
    """Products from JSONL/CSV/TSV. `mapping` renames file columns to Product fields ({field: column})."""
    path = Path(path)
    c_pid, c_title = (mapping or {}).get("product_id", "product_id"), (mapping or {}).get("title", "title")
    products: dict[str, Product] = {}
    first: dict[str, int] = {}
    for n, row in read_table(path, required=[c_pid, c_title]):
        product = product_from_row(row, path, n, mapping)
        pid = product.product_id
        if pid in products:
            raise DataError(f"duplicate product_id {pid!r} (first at line {first[pid]})", path, n, c_pid)
        first[pid] = n
        products[pid] = product
    return products


def load_judgments(
    path: str | Path,
    scheme: LabelScheme | str = "esci",
    mapping: Mapping[str, str] | None = None,
    products: Mapping[str, Product] | None = None,
    products_path: str | Path | None = None,
) -> list[Judgment]:
    """Judgments from TSV/CSV/JSONL. The label column may hold a label name ("E") or a grade value ("3")
    when mapped by `mapping={"label": "grade"}`. A separate grade column, when present, must agree with the
    label. Products, when given, must contain every product_id."""
    path = Path(path)
    scheme = get_scheme(scheme)
    mapping = dict(mapping or {})
    c_qid = mapping.get("query_id", "query_id")
    c_q = mapping.get("query", "query")
    c_pid = mapping.get("product_id", "product_id")
    c_label = mapping.get("label", "esci_label" if scheme.name == "esci" else "label")
    c_grade = mapping.get("grade", "grade")
    out: list[Judgment] = []
    seen: dict[tuple[str, str], int] = {}
    for n, row in read_table(path, required=[c_qid, c_q, c_pid, c_label]):
        qid, pid = _id(row[c_qid], path, n, c_qid), _id(row[c_pid], path, n, c_pid)
        query = _text(row[c_q], path, n, c_q)
        raw = row[c_label]
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise DataError(f"expected a label or a grade, got {json_kind(raw)} {show(raw)}", path, n, c_label)
        raw = str(raw).strip()
        try:
            idx = scheme.index(raw)
        except LabelError:
            idx = _index_by_value(scheme, raw, path, n, c_label)
            if idx is None:
                raise DataError(
                    f"unknown label {raw!r} (scheme {scheme.name}: {scheme.labels})", path, n, c_label
                ) from None
        g = scheme.grades[idx]
        if c_grade != c_label and row.get(c_grade) not in (None, ""):
            given = scheme.grades[_index_by_value(scheme, row[c_grade], path, n, c_grade, required=True)]
            if given.value != g.value:
                pairs = ", ".join(f"{x.label}={x.value}" for x in scheme.grades)
                raise DataError(
                    f"grade {given.value} disagrees with label {g.label!r} ({scheme.name}: {pairs})", path, n, c_grade
                )
        if products is not None and pid not in products:
            where = f" in {products_path}" if products_path else ""
            raise DataError(f"product {pid!r} not found{where}", path, n, c_pid)
        if (qid, pid) in seen:
            raise DataError(
                f"duplicate judgment for query {qid!r} and product {pid!r} (first at line {seen[qid, pid]})", path, n
            )
        seen[qid, pid] = n
        out.append(Judgment(qid, query, pid, g.label, g.value))
    return out


def _index_by_value(scheme: LabelScheme, raw, path, line, name, required: bool = False) -> int | None:
    """Position of the grade with this numeric value. None for text that is not a number (unless `required`);
    DataError for a number that is not an integer or not a grade of the scheme."""
    if is_json(path) and isinstance(raw, str) and required:
        raise DataError(f"expected an integer grade, got text {show(raw)}", path, line, name)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise DataError(f"expected an integer grade, got {json_kind(raw)} {show(raw)}", path, line, name)
    text = str(raw).strip()
    try:
        value = int(text)
    except ValueError:
        try:
            float(text)
        except ValueError:
            if not required:
                return None
        raise DataError(f"grade {show(raw)} is not an integer", path, line, name) from None
    for i, g in enumerate(scheme.grades):
        if g.value == value:
            return i
    raise DataError(
        f"grade {value} is outside the {scheme.name} scheme's range {scheme.min_value}..{scheme.max_value}",
        path,
        line,
        name,
    )


def load_dir(data_dir: str | Path, judgments: str | Path | None = None, scheme: LabelScheme | str = "esci") -> Corpus:
    """The esci150 layout: `products.jsonl`, `judgments.tsv` and optional `queries.tsv` in one folder.

    `judgments` points at another judgments file to evaluate against this folder's products.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError("data folder not found", data_dir)
    products_path = data_dir / "products.jsonl"
    products = load_products(products_path)
    jpath = Path(judgments) if judgments else data_dir / "judgments.tsv"
    js = load_judgments(jpath, scheme, products=products, products_path=products_path)
    queries = {j.query_id: j.query for j in js}
    qpath = data_dir / "queries.tsv"
    if qpath.exists() and not judgments:
        first: dict[str, int] = {}
        for n, row in read_table(qpath, required=["query_id", "query"]):
            qid = _id(row["query_id"], qpath, n, "query_id")
            if qid in first:
                raise DataError(f"duplicate query_id {qid!r} (first at line {first[qid]})", qpath, n, "query_id")
            first[qid] = n
            queries.setdefault(qid, _text(row["query"], qpath, n, "query"))
    log.info(
        "loaded %d judgments over %d queries and %d products", len(js), len({j.query_id for j in js}), len(products)
    )
    return Corpus(js, products, get_scheme(scheme), queries)


# ---------------------------------------------------------------------------------------------- rendering


def render_product(product: Product, max_tokens: int = 256, tokenizer=None) -> str:
    """Product text for prompts and students: title, brand, colour, category path, bullets, description.

    Cut to `max_tokens` tokens of `tokenizer` (or whitespace words when none is given), keeping whole
    fields first so the title and brand always survive.
    """
    parts = [f"Title: {product.title.strip()}"]
    if product.brand:
        parts.append(f"Brand: {product.brand.strip()}")
    if product.color:
        parts.append(f"Colour: {product.color.strip()}")
    if product.category:
        parts.append("Category: " + " > ".join(product.category))
    if product.bullet_points:
        bullets = [b.strip() for b in product.bullet_points.replace(";", "\n").splitlines() if b.strip()]
        if bullets:
            parts.append("Features: " + "; ".join(bullets))
    if product.description:
        parts.append(f"Description: {product.description.strip()}")
    text = "\n".join(parts)
    return truncate(text, max_tokens, tokenizer)


def truncate(text: str, max_tokens: int, tokenizer=None) -> str:
    if tokenizer is None:
        words = text.split(" ")
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------- splits


def split_by_query(query_ids: Iterable[str], fractions: Mapping[str, float], seed: int = 0) -> dict[str, list[str]]:
    """Assign whole queries to splits, seeded and independent of input order.

    Queries are ordered by a seeded hash, then cut by the fractions (the last split takes the rest),
    so adding queries later does not move the ones already placed to another split much.
    """
    qs = sorted(set(query_ids), key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total}")
    out: dict[str, list[str]] = {}
    start = 0
    names = list(fractions)
    for i, name in enumerate(names):
        end = len(qs) if i == len(names) - 1 else start + round(fractions[name] * len(qs))
        out[name] = sorted(qs[start:end])
        start = end
    return out


def kfold_by_query(query_ids: Iterable[str], k: int, seed: int = 0) -> list[list[str]]:
    """K folds of whole queries (seeded hash order, dealt round-robin): every query in exactly one fold."""
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    qs = sorted(set(query_ids), key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    if len(qs) < k:
        raise ValueError(f"{len(qs)} queries cannot make {k} folds")
    return [sorted(qs[i::k]) for i in range(k)]


def sample_rows(rows: list, n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return rng.sample(rows, min(n, len(rows)))


# ---------------------------------------------------------------------------------------------- datasets


def to_records(corpus: Corpus, max_product_tokens: int = 256, tokenizer=None) -> list[dict]:
    """One flat dict per judgment, with the rendered product text."""
    return [
        {
            "query_id": j.query_id,
            "query": j.query,
            "product_id": j.product_id,
            "product_text": render_product(corpus.products[j.product_id], max_product_tokens, tokenizer),
            "label": j.label,
            "grade": j.grade,
        }
        for j in corpus.judgments
    ]


def to_dataset(corpus: Corpus, max_product_tokens: int = 256, tokenizer=None):
    """A `datasets.Dataset` with columns query_id, query, product_id, product_text, label, grade."""
    import datasets

    return datasets.Dataset.from_list(to_records(corpus, max_product_tokens, tokenizer))


# ---------------------------------------------------------------------------------------------- JSONL


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line (UTF-8, non-ASCII kept), creating the parent folder; replaces the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSONL file, skipping blank lines, through the same located checks as `read_table`."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:  # an output that was started but holds nothing yet
        return []
    return [parse_json_object(text, path, n) for n, text in read_lines(path) if text.strip()]
