"""K-fold cross-validated nDCG@10 of the distillation scorers over every query of a dataset.

    PYTHONPATH=. python bench/cv_distill.py [--data ../shared/data/esci150] [--folds 5] [--out runs/cv_distill]

24 test queries are too few to rank pipelines (one pipeline's nDCG@10 moves by 0.08 between folds), so
this scores every query out of fold: queries are dealt into K folds, the cross-encoder and bi-encoder
students are trained K times (each without one fold) with the library's trainers, and each query is
scored by the students that never saw it. LTR rows are K-fold CV over those out-of-fold features, with
the LTR defaults of `lref distill ltr`. Gold labels only. Students and scores are cached in --out, so an
interrupted run resumes at the next fold. Writes cv.json and cv.md (mean, standard error, per fold).

`--rows cheap` trains no student (minutes, not an hour): BM25, zero-shot MiniLM and the LTR without students
(BM25, zero-shot cosine, coverage, category/tag match, rating), with the attribute feature groups of
`lref.distill.attributes` added, each group left out in turn (leave-one-group-out), the group set picked on
inner folds of each reported fold (nested CV), plus the LightGBM gain
of every feature summed over the folds. `--rows all` (the default) adds the student rows.

`--rows weak` (issue 14, weak supervision): pairs made from the catalogue alone (`lref.distill.weak`: pseudo-queries
from titles, brands, colours and category paths, hard negatives from category and BM25 neighbours) pretrain one
cross-encoder and one bi-encoder from MiniLM. No judged query or label goes into them, so the same pretrained
students serve every fold (the script checks that no pseudo-query equals a judged query). Rows: each pretrained
student alone on all queries (weak only, no gold), the students trained on the gold folds from the pretrained
weights (out of fold, as above), and the LTR with each. `--kinds ce` / `--kinds bi` with `--train-only` trains and
caches one student's scores and stops (two processes can share the work); the last run writes the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def per_query_ndcg(qid: np.ndarray, y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    from lref.eval.metrics import ndcg_per_query

    return ndcg_per_query(list(qid), list(y), list(s), k=10)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "esci150"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranker-epochs", type=float, default=2.0)
    ap.add_argument("--recall-epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1, help="cut each student (a quick smoke run)")
    ap.add_argument("--base", help="student base model (default: local MiniLM)")
    ap.add_argument("--out", default="runs/cv_distill")
    ap.add_argument(
        "--rows",
        choices=["all", "cheap", "weak"],
        default="all",
        help="cheap: no student training, LTR without students; weak: students pretrained on weak catalogue pairs",
    )
    ap.add_argument("--kinds", nargs="+", choices=["ce", "bi"], default=["ce", "bi"], help="students to train here")
    ap.add_argument("--train-only", action="store_true", help="train and cache the --kinds students, no report")
    ap.add_argument("--weak-products", type=int, default=1500, help="--rows weak: products sampled for pseudo-queries")
    ap.add_argument("--weak-per-product", type=int, default=2, help="--rows weak: pseudo-queries per product")
    ap.add_argument("--weak-triplets", type=int, default=1, help="--rows weak: bi-encoder triplets per pseudo-query")
    ap.add_argument("--weak-max-steps", type=int, default=-1, help="--rows weak: cut the pretraining (1 epoch)")
    ap.add_argument("--skip-folds", action="store_true", help="--rows weak: the weak-only rows, no gold fold training")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from lref.data import load_dir
    from lref.distill.attributes import FEATURE_GROUPS, GROUP_NAMES
    from lref.distill.features import FEATURES, per_query_z
    from lref.distill.ltr import FeatureBuilder, feature_names, fit_lambdarank
    from lref.distill.ranker import CrossEncoderStudent, train_ranker
    from lref.distill.recall import BiEncoderStudent, train_recall
    from lref.distill.student import StudentConfig, build_examples

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_dir(args.data)
    js = corpus.judgments
    qid = np.array([j.query_id for j in js])
    y = np.array([j.grade for j in js])
    perm = np.random.default_rng(args.seed).permutation(corpus.query_ids)  # the folds docs/distill.md reports
    folds = [sorted(str(q) for q in perm[i :: args.folds]) for i in range(args.folds)]
    common = {"base": args.base, "max_steps": args.max_steps, "batch_size": 16, "learning_rate": 5e-5}
    kinds = {
        "ce": (StudentConfig(loss="bce", epochs=args.ranker_epochs, **common), train_ranker, CrossEncoderStudent),
        "bi": (StudentConfig(loss="mnrl", epochs=args.recall_epochs, **common), train_recall, BiEncoderStudent),
    }
    weak_only: dict[str, np.ndarray] = {}
    report_extra: dict = {}
    if args.rows == "weak":
        kinds, weak_only, report_extra = pretrain_weak(args, corpus, kinds, out)
    oof = {k: np.full(len(js), np.nan) for k in kinds}
    for kind, (cfg, train, student_cls) in kinds.items():
        if args.rows == "cheap" or kind not in args.kinds or args.skip_folds:
            oof[kind] = np.load(out / f"oof_{kind}.npy") if (out / f"oof_{kind}.npy").exists() else oof[kind]
            continue
        path = out / f"oof_{kind}.npy"
        scores = np.load(path) if path.exists() else np.full(len(js), np.nan)
        for k, held in enumerate(folds):
            rows = np.flatnonzero(np.isin(qid, held))
            if not np.isnan(scores[rows]).any():
                continue  # done in an earlier run
            train_corpus = corpus.subset([q for q in corpus.query_ids if q not in set(held)])
            train(build_examples(train_corpus), corpus.products, cfg, out / f"{kind}{k}")
            s = student_cls(out / f"{kind}{k}").score_pairs(
                [js[n].query for n in rows], [corpus.products[js[n].product_id] for n in rows]
            )
            scores[rows] = s
            np.save(path, scores)
            logging.info("%s fold %d/%d scored", kind, k + 1, len(folds))
        oof[kind] = scores
    if args.train_only:
        return

    groups = [] if args.rows == "weak" else GROUP_NAMES  # the weak rows compare students, not attribute groups
    names = feature_names(groups)
    X = FeatureBuilder(None, None, None, groups=groups).matrix(corpus, progress=True, ce_scores=list(oof["ce"]))
    zero_shot = X[:, FEATURES.index("bi_cosine")].copy()
    bm25 = X[:, FEATURES.index("bm25")].copy()
    X[:, FEATURES.index("bi_cosine")] = oof["bi"]
    X[:, FEATURES.index("bi_cosine_qz")] = per_query_z(oof["bi"], qid)

    gains: dict[str, np.ndarray] = {}

    def fit_predict(M: np.ndarray, cols: list[int], train_mask: np.ndarray, test_mask: np.ndarray):
        tr = np.flatnonzero(train_mask)
        tr = tr[np.argsort(qid[tr], kind="stable")]
        _, sizes = np.unique(qid[tr], return_counts=True)
        booster = fit_lambdarank(  # the `lref distill ltr` defaults
            M[tr][:, cols], y[tr], list(sizes), [names[c] for c in cols], 3, 300, 0.02, 0, 50
        )
        return booster, booster.predict(M[test_mask][:, cols], num_threads=1)

    def ltr_oof(M: np.ndarray, cols: list[int], name: str | None = None) -> np.ndarray:
        """Out-of-fold LTR scores over the columns `cols`; with `name`, the gain summed over folds is kept."""
        pred = np.zeros(len(js))
        gain = np.zeros(len(cols))
        for held in folds:
            te = np.isin(qid, held)
            booster, pred[te] = fit_predict(M, cols, ~te, te)
            gain += booster.feature_importance("gain")
        if name:
            gains[name] = dict(zip([names[c] for c in cols], gain.tolist(), strict=True))
        return pred

    picks: list[str] = []

    def nested(M: np.ndarray, candidates: dict[str, list[int]], inner: int = 4) -> np.ndarray:
        """Nested CV: for each reported fold, the candidate column set with the best mean nDCG@10 in an
        `inner`-fold CV over the other folds' queries is refit on them and scores the reported fold."""
        pred = np.zeros(len(js))
        for k, held in enumerate(folds):
            te = np.isin(qid, held)
            train_q = np.random.default_rng(args.seed + 1 + k).permutation(sorted(set(qid[~te])))
            inner_folds = [train_q[i::inner] for i in range(inner)]
            best, best_score = None, -1.0
            for cname, cols in candidates.items():
                s = np.zeros(len(js))
                for ih in inner_folds:
                    ite = np.isin(qid, ih)
                    _, s[ite] = fit_predict(M, cols, ~te & ~ite, ite)
                m = ~te
                score = float(np.mean(list(per_query_ndcg(qid[m], y[m], s[m]).values())))
                if score > best_score:
                    best, best_score = cname, score
            picks.append(best)
            _, pred[te] = fit_predict(M, candidates[best], ~te, te)
            logging.info("fold %d: inner CV picked %s (%.4f)", k, best, best_score)
        return pred

    z = lambda v: per_query_z(v, qid)  # noqa: E731
    everything = list(range(len(FEATURES)))
    no_ce = [i for i in everything if "ce_" not in FEATURES[i]]
    cols_of = lambda groups: [names.index(f) for g in groups for f in FEATURE_GROUPS[g]]  # noqa: E731
    X_zero = X.copy()
    X_zero[:, FEATURES.index("bi_cosine")] = zero_shot
    X_zero[:, FEATURES.index("bi_cosine_qz")] = z(zero_shot)
    ref = "LTR, no students (zero-shot cosine)"
    scorers = {"bm25": bm25, "zero-shot MiniLM": zero_shot}
    tag = "weak-pretrained + gold, out of fold" if args.rows == "weak" else "out of fold"
    folds_done = args.rows == "all" or (
        args.rows == "weak" and not np.isnan(oof["ce"]).any() and not np.isnan(oof["bi"]).any()
    )
    if folds_done:
        scorers |= {
            f"cross-encoder ({tag})": oof["ce"],
            f"bi-encoder ({tag})": oof["bi"],
            "z(bi) + z(bm25)": z(oof["bi"]) + z(bm25),
            "z(ce) + z(bi) + z(bm25)": z(oof["ce"]) + z(oof["bi"]) + z(bm25),
        }
    scorers[ref] = ltr_oof(X_zero, no_ce, ref)
    if args.rows == "weak":  # the pretrained students alone (no gold), and the LTR on their scores
        for kind, label in (("ce", "cross-encoder"), ("bi", "bi-encoder")):
            scorers[f"{label}, weak pairs only (no gold)"] = weak_only[kind]
        X_weak = X.copy()
        X_weak[:, FEATURES.index("bi_cosine")] = weak_only["bi"]
        X_weak[:, FEATURES.index("bi_cosine_qz")] = z(weak_only["bi"])
        X_weak[:, FEATURES.index("ce_score")] = weak_only["ce"]
        X_weak[:, FEATURES.index("ce_score_qz")] = z(weak_only["ce"])
        X_zero_weak_ce = X_zero.copy()
        X_zero_weak_ce[:, FEATURES.index("ce_score")] = weak_only["ce"]
        X_zero_weak_ce[:, FEATURES.index("ce_score_qz")] = z(weak_only["ce"])
        scorers["LTR, zero-shot cosine + weak-only cross-encoder"] = ltr_oof(X_zero_weak_ce, everything)
        scorers["LTR, weak-only bi-encoder (no cross-encoder)"] = ltr_oof(X_weak, no_ce)
        scorers["LTR, weak-only bi-encoder + cross-encoder"] = ltr_oof(X_weak, everything)
    new = "LTR, no students + attribute groups"
    if groups:
        scorers[new] = ltr_oof(X_zero, no_ce + cols_of(GROUP_NAMES), new)
        candidates = {"no groups": no_ce, "all groups": no_ce + cols_of(GROUP_NAMES)}
        for g in GROUP_NAMES:
            cols = no_ce + cols_of([x for x in GROUP_NAMES if x != g])
            scorers[f"{new} - {g}"] = ltr_oof(X_zero, cols)
            candidates[f"all - {g}"] = cols
        nested_name = "LTR, no students + attribute groups chosen on inner folds (nested CV)"
        scorers[nested_name] = nested(X_zero, candidates)
    if folds_done:
        students = " (weak-pretrained + gold students)" if args.rows == "weak" else ""
        scorers[f"LTR, no cross-encoder{students}"] = ltr_oof(X, no_ce)
        scorers[f"LTR, all features (the pipeline){students}"] = ltr_oof(X, everything, "pipeline")
    if args.rows == "all":
        scorers["LTR, all features + attribute groups"] = ltr_oof(X, everything + cols_of(GROUP_NAMES))

    report = {"n_queries": len(corpus.query_ids), "folds": len(folds), "rows": args.rows, "scorers": {}}
    base = per_query_ndcg(qid, y, bm25)
    ref_q = per_query_ndcg(qid, y, np.nan_to_num(scorers[ref]))
    for name, s in scorers.items():
        per_q = per_query_ndcg(qid, y, np.nan_to_num(s))
        qs = sorted(per_q)
        v = np.array([per_q[q] for q in qs])
        d = v - np.array([base[q] for q in qs])
        r = v - np.array([ref_q[q] for q in qs])
        report["scorers"][name] = {
            "ndcg@10": float(v.mean()),
            "se": float(v.std(ddof=1) / np.sqrt(len(v))),
            "minus_bm25": float(d.mean()),
            "minus_bm25_se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "minus_ltr_no_students": float(r.mean()),
            "minus_ltr_no_students_se": float(r.std(ddof=1) / np.sqrt(len(r))),
            "per_fold": [float(np.mean([per_q[q] for q in f])) for f in folds],
        }
    report["importance_gain"] = gains
    report["nested_picks"] = picks
    report |= report_extra
    (out / "cv.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    lines = [
        f"# {len(folds)}-fold cross-validated nDCG@10 over {report['n_queries']} queries",
        "",
        "| scorer | nDCG@10 | SE | vs BM25 (paired SE) | vs LTR, no students (paired SE) | per fold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in report["scorers"].items():
        folds_txt = " ".join(f"{x:.3f}" for x in r["per_fold"])
        lines.append(
            f"| {name} | {r['ndcg@10']:.4f} | {r['se']:.4f} | {r['minus_bm25']:+.4f} ({r['minus_bm25_se']:.4f}) "
            f"| {r['minus_ltr_no_students']:+.4f} ({r['minus_ltr_no_students_se']:.4f}) | {folds_txt} |"
        )
    if not groups:
        lines += ["", "```json", json.dumps(report_extra, indent=2), "```"]
        (out / "cv.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print("\n".join(lines))
        return
    lines += ["", f"Nested CV: the group set picked on the inner folds of each reported fold: {', '.join(picks)}."]
    g = gains[new]
    total = sum(g.values()) or 1.0
    lines += ["", f"LightGBM gain of `{new}`, summed over the {len(folds)} folds:", ""]
    lines += ["| feature | group | gain | share |", "| --- | --- | --- | --- |"]
    group_of = {f: grp for grp, fs in FEATURE_GROUPS.items() for f in fs}
    for f in sorted(g, key=lambda k: -g[k]):
        lines.append(f"| {f} | {group_of.get(f, 'base')} | {g[f]:.1f} | {g[f] / total:.1%} |")
    (out / "cv.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
