"""Records, loaders and validation for query-product judgments.

Loaders read the esci150 layout (queries.tsv, judgments.tsv, products.jsonl) and generic
JSONL/CSV/TSV files with a column mapping. Every error names the file, the line and the field, so
a user can fix the row; `DataError` is what the CLI turns into a one-line message.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lref.labels import LabelError, LabelScheme, get_scheme

log = logging.getLogger(__name__)

PRODUCT_FIELDS = ("title", "description", "bullet_points", "brand", "color", "category", "rating", "rating_count")


class DataError(ValueError):
    """Bad input data, located by file, line and field."""

    def __init__(
        self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None
    ):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


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


# ---------------------------------------------------------------------------------------------- readers


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", path)
    if path.stat().st_size == 0:
        raise DataError("file is empty", path)


def read_table(path: str | Path, required: Iterable[str] = ()) -> list[tuple[int, dict]]:
    """Rows of a TSV/CSV (by suffix) or JSONL file as (line number, dict), checking required columns."""
    path = Path(path)
    _check_exists(path)
    required = list(required)
    rows: list[tuple[int, dict]] = []
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise DataError(f"bad JSON ({e.msg} at column {e.colno})", path, n) from None
                if not isinstance(obj, dict):
                    raise DataError("expected a JSON object", path, n)
                for col in required:
                    if col not in obj or obj[col] is None or obj[col] == "":
                        raise DataError("missing value", path, n, col)
                rows.append((n, obj))
    else:
        delim = "\t" if path.suffix in (".tsv", ".tab") else ","
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=delim)
            header = reader.fieldnames or []
            if not header:
                raise DataError("file has no header row", path, 1)
            for col in required:
                if col not in header:
                    raise DataError(f"missing column (header has {header})", path, 1, col)
            for n, row in enumerate(reader, start=2):
                if None in row:
                    raise DataError(
                        f"row has {len(header) + len(row[None])} fields, header has {len(header)}", path, n
                    )
                for col in required:
                    if row.get(col) is None or row[col].strip() == "":
                        raise DataError("missing value", path, n, col)
                rows.append((n, row))
    if not rows:
        raise DataError("file has no data rows", path)
    return rows


def as_str_list(value) -> list[str]:
    """A list field (category path) from a JSON list or a string joined by " > ", "|" or ">"."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None and str(v) != ""]
    text = str(value)
    for sep in (" > ", "|", ">"):
        if sep in text:
            return [p.strip() for p in text.split(sep) if p.strip()]
    return [text] if text else []


def as_number(value, kind, path, line, name):
    """`value` as `kind` (int or float), None when empty; a `DataError` at (path, line, name) otherwise."""
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise DataError(f"not a number: {value!r}", path, line, name) from None


def load_products(path: str | Path, mapping: Mapping[str, str] | None = None) -> dict[str, Product]:
    """Products from JSONL/CSV/TSV. `mapping` renames file columns to Product fields ({field: column})."""
    path = Path(path)
    mapping = dict(mapping or {})
    col = {f: mapping.get(f, f) for f in ("product_id", *PRODUCT_FIELDS)}
    products: dict[str, Product] = {}
    for n, row in read_table(path, required=[col["product_id"], col["title"]]):
        pid = str(row[col["product_id"]]).strip()
        if pid in products:
            raise DataError(f"duplicate product_id {pid!r}", path, n, col["product_id"])
        known = set(col.values())
        products[pid] = Product(
            product_id=pid,
            title=str(row[col["title"]]),
            description=str(row.get(col["description"]) or ""),
            bullet_points=str(row.get(col["bullet_points"]) or ""),
            brand=str(row.get(col["brand"]) or ""),
            color=str(row.get(col["color"]) or ""),
            category=as_str_list(row.get(col["category"])),
            rating=as_number(row.get(col["rating"]), float, path, n, col["rating"]),
            rating_count=as_number(row.get(col["rating_count"]), int, path, n, col["rating_count"]),
            extra={k: v for k, v in row.items() if k not in known},
        )
    return products


def load_judgments(
    path: str | Path,
    scheme: LabelScheme | str = "esci",
    mapping: Mapping[str, str] | None = None,
    products: Mapping[str, Product] | None = None,
    products_path: str | Path | None = None,
) -> list[Judgment]:
    """Judgments from TSV/CSV/JSONL. The label column may hold a label name ("E") or a grade value ("3")
    when mapped by `mapping={"label": "grade"}`. Products, when given, must contain every product_id."""
    path = Path(path)
    scheme = get_scheme(scheme)
    mapping = dict(mapping or {})
    c_qid = mapping.get("query_id", "query_id")
    c_q = mapping.get("query", "query")
    c_pid = mapping.get("product_id", "product_id")
    c_label = mapping.get("label", "esci_label" if scheme.name == "esci" else "label")
    out: list[Judgment] = []
    seen: set[tuple[str, str]] = set()
    for n, row in read_table(path, required=[c_qid, c_q, c_pid, c_label]):
        qid, pid = str(row[c_qid]).strip(), str(row[c_pid]).strip()
        raw = str(row[c_label]).strip()
        try:
            idx = scheme.index(raw)
        except LabelError:
            idx = _index_by_value(scheme, raw)
            if idx is None:
                raise DataError(
                    f"unknown label {raw!r} (scheme {scheme.name}: {scheme.labels})", path, n, c_label
                ) from None
        if products is not None and pid not in products:
            where = f" in {products_path}" if products_path else ""
            raise DataError(f"product {pid!r} not found{where}", path, n, c_pid)
        if (qid, pid) in seen:
            raise DataError(f"duplicate judgment for query {qid!r} and product {pid!r}", path, n)
        seen.add((qid, pid))
        g = scheme.grades[idx]
        out.append(Judgment(qid, str(row[c_q]), pid, g.label, g.value))
    return out


def _index_by_value(scheme: LabelScheme, raw: str) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    for i, g in enumerate(scheme.grades):
        if g.value == value:
            return i
    return None


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
        for _, row in read_table(qpath, required=["query_id", "query"]):
            queries.setdefault(str(row["query_id"]), row["query"])
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
    """The objects of a JSONL file, skipping blank lines; a line that is not JSON is a `DataError` naming it."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"bad JSON ({e.msg} at column {e.colno})", path, n) from None
    return out
