"""Weak supervision from the catalogue: training pairs made from product text alone, no human label.

With ~100 judged queries the students see ~4k pairs; the catalogue has thousands of products whose titles,
brands, colours and category paths say what they are. Each product becomes a few short, query-like
pseudo-queries (a few title words, brand + type, colour + type, brand + title words, title words + type; the
type is the category path's last specific level), with the product itself as the positive and hard negatives
that do not satisfy the pseudo-query: category neighbours of another brand, and BM25 neighbours
(`lref.rag.bm25`) of another category or brand. Targets are in [0, 1] in the students' training-row format
(`lref.distill.student.build_examples`), so `train_ranker` / `train_recall` pretrain on them as they are; the
gold pairs then train on top (`lref distill ranker|recall --base PRETRAINED`).

The functions here take products only, never judgments or query text, so no pseudo-query can come from a
judged query. Everything is seeded per product (`random.Random(f"{seed}:{product_id}")`): the same catalogue
and settings give the same file.
"""

from __future__ import annotations

import logging
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lref.data import DataError, Product, write_jsonl
from lref.distill.attributes import brand_key, colours, content, tokens
from lref.rag.bm25 import BM25Index
from lref.tables import parse_json_object, read_lines

log = logging.getLogger(__name__)

POSITIVE = 1.0  # the product the pseudo-query was made from
NEAR_DUPLICATE = 0.8  # same brand and category path, and it has every word of the pseudo-query
SAME_CATEGORY = 0.33  # a negative in the same category path; less the further apart in the category tree
TEMPLATES = ("title", "brand_type", "colour_type", "brand_title", "title_type")
# category levels that name who or what section, not what the product is
_NOT_A_TYPE = {
    "women", "men", "girls", "boys", "baby", "baby girls", "baby boys", "clothing", "shoes", "accessories",
    "novelty & more", "clothing, shoes & jewelry", "uniforms, work & safety", "costumes & accessories",
}  # fmt: skip
_GENDERS = {"Women": "women", "Men": "men", "Girls": "girls", "Boys": "boys", "Baby": "baby"}
_WORD = re.compile(r"[a-z0-9]+(?:[.'/][a-z0-9]+)*")
_STOP = {
    "a", "an", "and", "the", "for", "of", "with", "to", "in", "on", "by", "or", "w", "is", "are", "be", "your", "my",
    "from", "this", "that", "it", "you", "our", "at", "as",
}  # fmt: skip
REQUIRED = ("query_id", "query", "product_id", "target")


@dataclass
class WeakConfig:
    """How many pairs: `per_product` pseudo-queries for each of `max_products` products (None: all), each
    with one positive and up to `category_negatives` + `bm25_negatives` negatives."""

    per_product: int = 2
    max_products: int | None = None
    category_negatives: int = 1
    bm25_negatives: int = 2
    bm25_depth: int = 30  # BM25 neighbours looked at per pseudo-query
    near_duplicates: bool = False  # add near-duplicates of the product as positives (target NEAR_DUPLICATE)
    seed: int = 0


def words(text: str) -> list[str]:
    """Lower-case words as a shopper types them (accents dropped, no plural strip), stop words dropped."""
    plain = unicodedata.normalize("NFKD", text.lower().replace("’", "'")).encode("ascii", "ignore").decode()
    return [w for w in _WORD.findall(plain) if w not in _STOP]


def product_type(product: Product) -> str:
    """What the product is, from its category path: the last level that is not a section (Women, Clothing);
    one part of a level like "Tops, Tees & Blouses". Empty when the path has none."""
    for level in reversed(product.category):
        if level.lower() in _NOT_A_TYPE:
            continue
        parts = [p.strip() for p in re.split(r",|&| and ", level) if p.strip()]
        return " ".join(words(parts[-1])[-3:]) if parts else ""
    return ""


def brand_words(product: Product) -> str:
    """The brand as query words ('' for missing, generic or long brands)."""
    if not brand_key(product.brand):
        return ""
    w = words(product.brand)
    return " ".join(w) if 0 < len(w) <= 3 else ""


def pseudo_queries(product: Product, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to `n` distinct (template, query) pairs for one product, in a seeded order of the templates."""
    brand = brand_words(product)
    kind = product_type(product)
    own_brand = set(brand.split())
    title = [w for w in words(product.title) if w not in own_brand][:10]
    colour = sorted(colours(f"{product.color} {product.title}"))
    gender = next((g for level, g in _GENDERS.items() if level in product.category), "")

    def span(lo: int, hi: int) -> str:
        if len(title) < lo:
            return ""
        size = rng.randint(lo, min(hi, len(title)))
        start = rng.randint(0, min(len(title) - size, 3))  # the head of a title says what it is
        return " ".join(title[start : start + size])

    made = {
        "title": span(2, 4),
        "brand_type": f"{brand} {kind}" if brand and kind else "",
        "colour_type": f"{rng.choice(colour)} {kind}" if colour and kind else "",
        "brand_title": f"{brand} {span(1, 2)}" if brand and len(title) >= 1 else "",
        "title_type": f"{span(1, 2)} {kind}" if kind and len(title) >= 1 else "",
    }
    order = list(TEMPLATES)
    rng.shuffle(order)
    out: list[tuple[str, str]] = []
    for t in order:
        q = " ".join(made[t].split())
        if gender and q and t != "title" and rng.random() < 0.3:
            q = f"{q} {gender}"
        if q and len(q.split()) >= 2 and q not in {x for _, x in out}:
            out.append((t, q))
        if len(out) == n:
            break
    return out


def satisfies(query: str, product: Product) -> bool:
    """Whether the product's title, brand, colour and category have every content word of the query (then it
    may well be relevant, so it is never a negative)."""
    have = set(tokens(" ".join([product.title, product.brand, product.color or "", *product.category])))
    return set(content(query)) <= have


def category_closeness(a: Product, b: Product) -> float:
    """Share of a's category path that b shares from the root (1: same path, 0: another root)."""
    if not a.category:
        return 0.0
    shared = 0
    for x, y in zip(a.category, b.category, strict=False):
        if x != y:
            break
        shared += 1
    return shared / len(a.category)


def weak_pairs(products: Mapping[str, Product], cfg: WeakConfig | None = None) -> list[dict]:
    """Training rows {query_id, query, product_id, target, gold: None, source, template} from products alone.

    source: `self` (the positive), `near-duplicate`, `category` (same category path, another brand) or `bm25`
    (a BM25 neighbour of another category path or brand). No negative satisfies its pseudo-query. A
    pseudo-query already made from another product is skipped, so each query text has one positive.
    """
    cfg = cfg or WeakConfig()
    ids = sorted(p for p in products if products[p].category and products[p].title.strip())
    if cfg.max_products is not None and cfg.max_products < len(ids):
        ids = sorted(random.Random(cfg.seed).sample(ids, cfg.max_products))
    by_path: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for pid in sorted(products):
        if products[pid].category:
            by_path[tuple(products[pid].category)].append(pid)
    bm25 = BM25Index(products)
    seen: set[str] = set()
    rows: list[dict] = []
    for pid in ids:
        p = products[pid]
        rng = random.Random(f"{cfg.seed}:{pid}")
        own = brand_key(p.brand)
        for k, (template, query) in enumerate(pseudo_queries(p, cfg.per_product, rng)):
            if query in seen:
                continue
            seen.add(query)
            qid = f"weak:{pid}:{k}"

            def row(product_id: str, target: float, source: str, qid=qid, query=query, template=template) -> dict:
                return {
                    "query_id": qid,
                    "query": query,
                    "product_id": product_id,
                    "target": round(target, 4),
                    "gold": None,
                    "source": source,
                    "template": template,
                }

            rows.append(row(pid, POSITIVE, "self"))
            pool = [
                o
                for o in by_path[tuple(p.category)]
                if o != pid and brand_key(products[o].brand) != own and not satisfies(query, products[o])
            ]
            used = {pid}
            for o in rng.sample(pool, min(cfg.category_negatives, len(pool))):
                rows.append(row(o, SAME_CATEGORY, "category"))
                used.add(o)
            found = 0
            for o in bm25.top(query, cfg.bm25_depth):
                if o in used or not products[o].category:
                    continue
                q = products[o]
                same_path, same_brand = q.category == p.category, brand_key(q.brand) == own
                if satisfies(query, q):
                    if cfg.near_duplicates and same_path and same_brand:
                        rows.append(row(o, NEAR_DUPLICATE, "near-duplicate"))
                        used.add(o)
                    continue
                if (same_path and same_brand) or found >= cfg.bm25_negatives:
                    continue
                rows.append(row(o, SAME_CATEGORY * category_closeness(p, q), "bm25"))
                used.add(o)
                found += 1
            bm25.cache.pop(query, None)  # one look-up per pseudo-query: keep memory flat
    log.info("weak pairs: %d rows, %d pseudo-queries from %d products", len(rows), len(seen), len(ids))
    return rows


def write_pairs(path: str | Path, rows: list[dict]) -> None:
    """The rows as JSONL (one pair per line), replacing the file."""
    write_jsonl(path, rows)


def read_pairs(path: str | Path, products: Mapping[str, Product] | None = None) -> list[dict]:
    """Rows of a pairs file, checked: the REQUIRED fields, a target in [0, 1], and (given `products`) a known
    product. A bad row raises DataError naming the file, line and field."""
    path = Path(path)
    rows = []
    for n, text in read_lines(path):
        if not text.strip():
            continue
        r = parse_json_object(text, path, n)
        for key in REQUIRED:
            if key not in r or r[key] is None or r[key] == "":
                raise DataError("missing field", path, n, key)
        t = r["target"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            raise DataError(f"target must be a number in [0, 1], got {t!r}", path, n, "target")
        if products is not None and str(r["product_id"]) not in products:
            raise DataError(f"unknown product {r['product_id']!r}", path, n, "product_id")
        rows.append(
            {**r, "query_id": str(r["query_id"]), "product_id": str(r["product_id"]), "target": float(t), "gold": None}
        )
    if not rows:
        raise DataError("no pairs", path)
    return rows
