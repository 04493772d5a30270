"""The `--rows weak` rows of bench/cv_distill.py: MiniLM students pretrained on weak catalogue pairs.

`pretrain_weak` makes the pairs (`lref.distill.weak`, products only), pretrains one student per kind on them and
scores every judged pair; `weak_rows` turns those weak-only scores into scorer rows (each student alone and the
LTR with each). Kept apart from cv_distill.py so that the script stays one page per experiment family.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np


def pretrain_weak(args, corpus, kinds: dict, out: Path) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Weak pairs from the catalogue alone, one student per kind pretrained on them (cached in OUT/weak/), their
    scores on every judged pair, and `kinds` with the pretrained students as the fold students' base.

    The pairs and the pretraining see products only, never a judged query or label, so one pretrained student
    serves every fold and its scores need no folds. Checked here: no pseudo-query is a judged query's text.
    """
    import dataclasses
    import time

    from lref.distill.attributes import content
    from lref.distill.weak import WeakConfig, read_pairs, weak_pairs, write_pairs

    wdir = out / "weak"
    wdir.mkdir(parents=True, exist_ok=True)
    path = wdir / "pairs.jsonl"
    if not path.exists():
        cfg = WeakConfig(per_product=args.weak_per_product, max_products=args.weak_products, seed=args.seed)
        write_pairs(path, weak_pairs(corpus.products, cfg))
    rows = read_pairs(path, corpus.products)
    js = corpus.judgments
    judged = {j.query.strip().lower() for j in js}
    made = {r["query"] for r in rows}
    # made from product text alone, a few short pseudo-queries ("fitbit charge 3") can still equal a judged
    # query (or have its word set) by coincidence: they are dropped, so no training query is a judged query
    judged_words = {frozenset(content(q)) for q in judged}
    equal = sorted(made & judged)
    same_words = sorted(q for q in made - judged if frozenset(content(q)) in judged_words)
    rows = [r for r in rows if r["query"] not in judged and r["query"] not in same_words]
    made = {r["query"] for r in rows}
    judged_products = {j.product_id for j in js}
    info = {
        "pairs": len(rows),
        "pseudo_queries": len(made),
        "positives": sum(r["source"] == "self" for r in rows),
        "pseudo_queries_equal_to_a_judged_query_dropped": equal,
        "pseudo_queries_with_the_word_set_of_a_judged_query_dropped": same_words,
        "positives_that_are_judged_products": sum(r["source"] == "self" and r["product_id"] in judged_products
                                                  for r in rows),
        "targets": {s: sum(r["source"] == s for r in rows) for s in ("self", "category", "bm25", "near-duplicate")},
    }  # fmt: skip
    weak_only, new_kinds = {}, {}
    for kind, (cfg, train, student_cls) in kinds.items():
        pre, score_path, time_path = wdir / kind, wdir / f"scores_{kind}.npy", wdir / f"time_{kind}.json"
        if kind in args.kinds and not (pre / "distill.json").exists():
            wall, cpu = time.time(), time.process_time()
            pcfg = dataclasses.replace(
                cfg, epochs=1.0, pairs_per_query=args.weak_triplets, max_steps=args.weak_max_steps
            )
            train(rows, corpus.products, pcfg, pre)
            took = {"wall_s": round(time.time() - wall), "cpu_s": round(time.process_time() - cpu)}
            time_path.write_text(json.dumps(took), encoding="utf-8")
        if kind in args.kinds and not score_path.exists():
            s = student_cls(pre).score_pairs([j.query for j in js], [corpus.products[j.product_id] for j in js])
            np.save(score_path, np.asarray(s))
        weak_only[kind] = np.load(score_path) if score_path.exists() else np.full(len(js), np.nan)
        if time_path.exists():
            info[f"pretrain_{kind}"] = json.loads(time_path.read_text(encoding="utf-8"))
        new_kinds[kind] = (dataclasses.replace(cfg, base=str(pre)), train, student_cls)
    logging.info("weak pairs: %s", info)
    return new_kinds, weak_only, {"weak": info}


def weak_rows(weak_only: dict[str, np.ndarray], X, X_zero, qid, ltr_oof, cols: dict) -> dict:
    """The pretrained students alone (no gold), and the LTR on their scores. `cols`: the column lists `no_ce` and
    `everything` of X; `ltr_oof(M, cols)` is the script's out-of-fold LTR."""
    from lref.distill.features import FEATURES, per_query_z

    z = lambda v: per_query_z(v, qid)  # noqa: E731
    rows = {}
    for kind, label in (("ce", "cross-encoder"), ("bi", "bi-encoder")):
        rows[f"{label}, weak pairs only (no gold)"] = weak_only[kind]
    X_weak = X.copy()
    X_weak[:, FEATURES.index("bi_cosine")] = weak_only["bi"]
    X_weak[:, FEATURES.index("bi_cosine_qz")] = z(weak_only["bi"])
    X_weak[:, FEATURES.index("ce_score")] = weak_only["ce"]
    X_weak[:, FEATURES.index("ce_score_qz")] = z(weak_only["ce"])
    X_zero_weak_ce = X_zero.copy()
    X_zero_weak_ce[:, FEATURES.index("ce_score")] = weak_only["ce"]
    X_zero_weak_ce[:, FEATURES.index("ce_score_qz")] = z(weak_only["ce"])
    rows["LTR, zero-shot cosine + weak-only cross-encoder"] = ltr_oof(X_zero_weak_ce, cols["everything"])
    rows["LTR, weak-only bi-encoder (no cross-encoder)"] = ltr_oof(X_weak, cols["no_ce"])
    rows["LTR, weak-only bi-encoder + cross-encoder"] = ltr_oof(X_weak, cols["everything"])
    return rows
