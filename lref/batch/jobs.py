"""What a batch job does per batch: the single-process job's own function, wrapped for the Ray actors.

A job is a small picklable object: `load()` builds the model once per actor (the tagger, the hf engine),
`process(state, rows)` turns READ_SCHEMA rows into OUTCOME_SCHEMA rows (a JSON result, or a reason), and
`columns` is the output schema. `dedupe` names the key whose later repeats are errors (as in the
single-process job), checked by the driver when it commits a shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TAG_COLUMNS = {
    "product_id": "str",
    "topic": "strlist",
    "style": "strlist",
    "quality": "json",
    "confidence": "json",
    "evidence": "json",
    "model": "str",
    "version": "str",
}
# `lref score` rows (as written by the single-process command) and `lref distill teacher` rows
SCORE_COLUMNS = {
    "query_id": "str",
    "product_id": "str",
    "gold_label": "str",
    "grade": "int",
    "score": "float",
    "probs": "json",
    "pred_label": "str",
}
TEACHER_COLUMNS = {
    "query_id": "str",
    "query": "str",
    "product_id": "str",
    "source": "str",
    "gold_grade": "int",
    "probs": "json",
    "score": "float",
    "label": "str",
    "teacher": "str",
}


def _outcome(row: dict, result: dict | None = None, reason: str | None = None, product_id: str | None = None):
    res = None if result is None else json.dumps(result, ensure_ascii=False)
    return {"shard": row["shard"], "line": row["line"], "result": res, "product_id": product_id, "reason": reason}


@dataclass
class TagJob:
    """Tag products with `tagging.batch.tag_batch`; `make_tagger()` builds the `Tagger` inside each actor."""

    make_tagger: Callable
    columns: dict = field(default_factory=lambda: dict(TAG_COLUMNS))
    dedupe: str | None = "product_id"
    unit: str = "products"

    def load(self):
        return self.make_tagger()

    def process(self, tagger, rows: list[dict]) -> list[dict]:
        from lref.tagging.batch import parse_line, tag_batch

        out, by_shard = [], {}
        for r in rows:
            if r["error"]:
                out.append(_outcome(r, reason=r["error"]))
                continue
            product, reason = parse_line(r["raw"], Path(r["file"]), r["line"])
            if product is None:
                out.append(_outcome(r, reason=reason))
                continue
            by_shard.setdefault(r["shard"], []).append((r, product))
        # lines are unique within a shard only, and a batch may mix shards: tag shard by shard
        for group in by_shard.values():
            row_of = {r["line"]: r for r, _ in group}
            items = [(r["line"], p) for r, p in group]
            tags, failed = tag_batch(tagger, items)
            bad = {n for n, _, _ in failed}
            for n, pid, reason in failed:
                out.append(_outcome(row_of[n], reason=reason, product_id=pid))
            good = [(n, p) for n, p in items if n not in bad]
            for (n, p), row in zip(good, tags, strict=True):
                out.append(_outcome(row_of[n], result=row, product_id=p.product_id))
        return out


@dataclass
class PairJob:
    """Judge query-product pairs with `distill.teacher.score_chunk` over an engine built by `make_engine()`.

    Each input row is a pair (`query_id`, `query`, `product_id`, ...) with its product inline (`product`,
    a `Product.to_dict()`), so no actor holds the catalogue. `style` is `score` (the `lref score` row) or
    `teacher` (the `lref distill teacher` row).
    """

    make_engine: Callable
    style: str = "teacher"
    max_product_tokens: int = 256
    dedupe: str | None = None
    unit: str = "pairs"

    @property
    def columns(self) -> dict:
        return dict(SCORE_COLUMNS if self.style == "score" else TEACHER_COLUMNS)

    def load(self):
        return self.make_engine()

    def process(self, engine, rows: list[dict]) -> list[dict]:
        from lref.data import DataError, Product
        from lref.distill.teacher import score_chunk

        out, pairs, products, by_index = [], [], {}, {}
        for r in rows:
            if r["error"]:
                out.append(_outcome(r, reason=r["error"]))
                continue
            try:
                pair = json.loads(r["raw"])
                if not isinstance(pair, dict) or not all(pair.get(k) for k in ("query", "product_id")):
                    raise DataError("a pair needs query and product_id", r["file"], r["line"])
                product = pair.pop("product", None)
                if product is not None:
                    products[str(pair["product_id"])] = Product(**product)
            except (json.JSONDecodeError, TypeError, DataError) as e:
                out.append(_outcome(r, reason=str(e) if isinstance(e, DataError) else f"bad pair: {e}"))
                continue
            pair["product_id"] = str(pair["product_id"])
            by_index[len(pairs)] = r
            pairs.append({**pair, "_index": len(pairs)})
        scored, bad = score_chunk(engine, products, pairs, self.max_product_tokens) if pairs else ([], [])
        for b in bad:
            out.append(_outcome(by_index[b.pop("_index")], reason=b["error"], product_id=b["product_id"]))
        for row in scored:
            r = by_index[row.pop("_index")]
            if self.style == "score":
                row = {
                    "query_id": row["query_id"],
                    "product_id": row["product_id"],
                    "gold_label": row.get("gold_label"),
                    "grade": row.get("grade"),
                    "score": row["score"],
                    "probs": row["probs"],
                    "pred_label": row["label"],
                }
            out.append(_outcome(r, result=row, product_id=row["product_id"]))
        return out
