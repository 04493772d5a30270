"""`lref distill weak`: student training pairs from catalogue products alone (weak supervision)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lref.commands.args import Command, arg, fill


@dataclass(kw_only=True)
class WeakArgs:
    data: str = arg("folder with products.jsonl (only the products are read: no judgments, no queries)")
    out: str = arg("pairs JSONL to write (replaced)")
    per_product: int = arg("pseudo-queries made per product", 2)
    max_products: int | None = arg("use a seeded sample of this many products (default: all)", None)
    category_negatives: int = arg("negatives per pseudo-query from its category path, another brand", 1)
    bm25_negatives: int = arg("negatives per pseudo-query from its BM25 neighbours, another category or brand", 2)
    near_duplicates: bool = arg("also add near-duplicates (same brand and category path) as positives", False)
    seed: int = arg("seed of the sample and the pseudo-queries", 0)


def cmd_weak(args: WeakArgs) -> int:
    from lref.data import load_products
    from lref.distill.weak import WeakConfig, weak_pairs, write_pairs

    products = load_products(Path(args.data) / "products.jsonl")
    rows = weak_pairs(products, fill(WeakConfig, args))
    write_pairs(args.out, rows)
    n_queries = len({r["query_id"] for r in rows})
    n_pos = sum(r["target"] >= 0.75 for r in rows)
    print(f"weak: {len(rows)} pairs, {n_queries} pseudo-queries, {n_pos} positives -> {args.out}")
    return 0


COMMANDS = [
    Command(
        "distill weak",
        WeakArgs,
        cmd_weak,
        "training pairs from catalogue products alone (pseudo-queries, hard negatives) for student pretraining",
    ),
]
