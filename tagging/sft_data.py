"""Training rows for a tagger adapter: the tagger's own yes/no question, answered from known tags.

Each known tag of a product gives a "yes" row; `negatives` other tags of the same type give "no" rows
(sibling topics first, they are the hard ones). The rows are conversational prompt/completion data, so
`lref sft --train rows.jsonl` trains on them unchanged, and the adapter serves as the `tagger` LoRA:
it answers exactly the question `Tagger` asks through `Engine.score` with the binary scheme.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping

from lref.data import Product
from lref.rag.kg import TagGraph, split_tag_id, tag_id
from lref.tagging.prompts import tag_question

log = logging.getLogger(__name__)
TAG_TYPES = ("topic", "style")


def _row(messages: list[dict], answer: str, product_id: str, tid: str) -> dict:
    return {
        "prompt": messages,
        "completion": [{"role": "assistant", "content": answer}],
        "product_id": product_id,
        "tag": tid,
    }


def tagger_sft_rows(
    products: Mapping[str, Product],
    tag_rows: Iterable[dict],
    kg: TagGraph,
    negatives: int = 1,
    seed: int = 0,
    max_product_tokens: int = 192,
) -> list[dict]:
    """Yes/no rows from tags.jsonl-style rows ({product_id, topic: [...], style: [...]})."""
    rng = random.Random(seed)
    pools = {t: kg.tags(t) for t in TAG_TYPES}
    rows: list[dict] = []
    skipped = 0
    for r in tag_rows:
        p = products.get(str(r.get("product_id")))
        if p is None:
            skipped += 1
            continue
        positives = [tag_id(t, n) for t in TAG_TYPES for n in r.get(t) or []]
        positives = [t for t in positives if t in kg.g]
        known = set(positives) | {a for t in positives for a in kg.ancestors(t)}  # ancestors apply too
        for t in positives:
            rows.append(_row(tag_question(p, kg, t, max_product_tokens), "yes", p.product_id, t))
            kind = split_tag_id(t)[0]
            siblings = [s for parent in kg.parents(t) for s in kg.children(parent) if s not in known]
            others = [s for s in pools[kind] if s not in known and s not in siblings]
            rng.shuffle(siblings)
            rng.shuffle(others)
            for neg in (siblings + others)[:negatives]:
                rows.append(_row(tag_question(p, kg, neg, max_product_tokens), "no", p.product_id, neg))
    if skipped:
        log.warning("%d tag rows name products that are not in the catalogue; skipped", skipped)
    rng.shuffle(rows)
    return rows
