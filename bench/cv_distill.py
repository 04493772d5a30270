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
        "--rows", choices=["all", "cheap"], default="all", help="cheap: no student training, LTR without students"
    )
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
    oof = {k: np.full(len(js), np.nan) for k in kinds}
    for kind, (cfg, train, student_cls) in kinds.items():
        if args.rows == "cheap":
            break
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

    names = feature_names(GROUP_NAMES)
    X = FeatureBuilder(None, None, None, groups=GROUP_NAMES).matrix(corpus, progress=True, ce_scores=list(oof["ce"]))
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
    if args.rows == "all":
        scorers |= {
            "cross-encoder (out of fold)": oof["ce"],
            "bi-encoder (out of fold)": oof["bi"],
            "z(bi) + z(bm25)": z(oof["bi"]) + z(bm25),
            "z(ce) + z(bi) + z(bm25)": z(oof["ce"]) + z(oof["bi"]) + z(bm25),
        }
    scorers[ref] = ltr_oof(X_zero, no_ce, ref)
    new = "LTR, no students + attribute groups"
    scorers[new] = ltr_oof(X_zero, no_ce + cols_of(GROUP_NAMES), new)
    candidates = {"no groups": no_ce, "all groups": no_ce + cols_of(GROUP_NAMES)}
    for g in GROUP_NAMES:
        cols = no_ce + cols_of([x for x in GROUP_NAMES if x != g])
        scorers[f"{new} - {g}"] = ltr_oof(X_zero, cols)
        candidates[f"all - {g}"] = cols
    nested_name = "LTR, no students + attribute groups chosen on inner folds (nested CV)"
    scorers[nested_name] = nested(X_zero, candidates)
    if args.rows == "all":
        scorers["LTR, no cross-encoder"] = ltr_oof(X, no_ce)
        scorers["LTR, all features (the pipeline)"] = ltr_oof(X, everything)
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
