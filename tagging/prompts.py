"""The tagging question: "does tag T apply to this product?", answered yes/no in one forward pass.

The static instruction comes first, then the product, then the tag, so the prompts for all candidate
tags of one product share the longest possible cached prefix on a serving engine.
"""

from __future__ import annotations

from dataclasses import replace

from lref.data import Product, render_product
from lref.labels import BINARY
from lref.prompts import sanitize
from lref.rag.kg import TagGraph, split_tag_id

INSTRUCTION = (
    "You are an e-commerce content tagger. Given a product and a candidate tag with its definition, "
    "decide whether the tag correctly describes the product."
)


def system_text() -> str:
    defs = "\n".join(f"- {g.verbalizer}: {g.definition}" for g in BINARY.grades)
    return f"{INSTRUCTION}\n\nAnswers:\n{defs}\n\nAnswer with exactly one of: {', '.join(BINARY.verbalizers)}."


def tag_question(product: Product, kg: TagGraph, tid: str, max_product_tokens: int = 192) -> list[dict]:
    """Chat messages asking whether tag `tid` applies to `product` (its category path is left out, so the
    answer cannot be copied from the catalogue)."""
    kind, name = split_tag_id(tid)
    d = kg.node(tid) if tid in kg.g else {}
    definition = d.get("definition") or ""
    syn = d.get("synonyms") or []
    tag = f"{kind} tag: {name}" + (f"\nDefinition: {definition}" if definition else "")
    if syn:
        tag += f"\nAlso called: {', '.join(syn)}"
    user = (
        f"Product:\n{sanitize(render_product(replace(product, category=[]), max_product_tokens))}\n\n{tag}\n\n"
        "Does this tag apply to the product?"
    )
    return [{"role": "system", "content": system_text()}, {"role": "user", "content": user}]
