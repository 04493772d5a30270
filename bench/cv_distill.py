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

A stronger teacher (issue 14): `--teacher-base DIR` (all-mpnet-base-v2: `dir=$(../shared/models/mpnet.sh)`).
`--rows mpnet` trains nothing: zero-shot mpnet cosine, and the LTR without students with the mpnet cosine in place
of MiniLM's or beside it (and that choice made on inner folds). `--rows mpnet-tuned` adds mpnet fine-tuned out of
fold as a cross-encoder (the teacher) and as a bi-encoder. `--rows mpnet-distil` adds MiniLM students trained on
teacher + gold targets: fold k's teacher (trained on fold k's training queries only) scores those queries' judged
pairs and their unjudged BM25 top-N catalogue products (`--teacher-top-n`), with `lref distill teacher
--student`'s code. Gold-only MiniLM students are scored too when their out-of-fold scores are cached in --out
(`oof_ce.npy`, `oof_bi.npy`: `--rows all` writes them), otherwise their rows are left out. `--teacher-folds N`
trains the mpnet models on the first N folds only (their rows are then read over those folds' queries),
`--skip-teacher-bi` leaves the fine-tuned mpnet bi-encoder out, `--teacher-words` cuts mpnet's product text.
The teacher rows' code is in bench/cv_teacher_rows.py.

`--rows weak` (issue 14, weak supervision): pairs made from the catalogue alone (`lref.distill.weak`: pseudo-queries
from titles, brands, colours and category paths, hard negatives from category and BM25 neighbours) pretrain one
cross-encoder and one bi-encoder from MiniLM. No judged query or label goes into them, so the same pretrained
students serve every fold (the script checks that no pseudo-query equals a judged query). Rows: each pretrained
student alone on all queries (weak only, no gold), the students trained on the gold folds from the pretrained
weights (out of fold, as above), and the LTR with each. `--kinds ce` / `--kinds bi` with `--train-only` trains and
caches one student's scores and stops (two processes can share the work); the last run writes the report.
The weak rows' code is in bench/cv_weak_rows.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
from cv_teacher_rows import mpnet_rows, teacher_rows  # next to this script: bench/ is sys.path[0]
from cv_weak_rows import pretrain_weak, weak_rows

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
        "--rows",
        choices=["all", "cheap", "weak", "mpnet", "mpnet-tuned", "mpnet-distil"],
        default="all",
        help="cheap: no student training, LTR without students; weak: students pretrained on weak catalogue pairs; "
        "mpnet*: the --teacher-base rows (see above)",
    )
    ap.add_argument("--teacher-base", help="teacher model folder (all-mpnet-base-v2) for the mpnet rows")
    ap.add_argument(
        "--teacher-words", type=int, default=40, help="product text words for the zero-shot teacher cosine"
    )
    ap.add_argument("--teacher-epochs", type=float, default=1.0, help="passes of the fine-tuned teacher")
    ap.add_argument("--teacher-max-steps", type=int, default=-1, help="cut each teacher training to this many steps")
    ap.add_argument("--teacher-lr", type=float, default=2e-5, help="peak learning rate of the teacher")
    ap.add_argument("--teacher-top-n", type=int, default=5, help="unjudged BM25 candidates per query it scores")
    ap.add_argument("--teacher-folds", type=int, help="train the mpnet-tuned/distil models on the first N folds only")
    ap.add_argument("--skip-teacher-bi", action="store_true", help="no fine-tuned mpnet bi-encoder rows")
    ap.add_argument("--distil-gold-weight", type=float, default=0.5, help="gold weight of the distilled targets")
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

    def train_corpus_of(held: list[str]):
        return corpus.subset([q for q in corpus.query_ids if q not in set(held)])

    def out_of_fold(name: str, train_score, limit: int | None = None) -> np.ndarray:
        """Scores of every judged pair by models that never saw its query, cached per fold in OUT/oof_NAME.npy:
        `train_score(k, held, rows)` trains on the other folds and scores the judgment rows `rows`. With
        `limit`, only the first `limit` folds (the other rows stay NaN)."""
        path = out / f"oof_{name}.npy"
        scores = np.load(path) if path.exists() else np.full(len(js), np.nan)
        for k, held in enumerate(folds[:limit]):
            rows = np.flatnonzero(np.isin(qid, held))
            if not np.isnan(scores[rows]).any():
                continue  # done in an earlier run
            scores[rows] = train_score(k, held, rows)
            np.save(path, scores)
            logging.info("%s fold %d/%d scored", name, k + 1, len(folds))
        return scores

    def student_fold(kind: str, cfg, train, student_cls, examples_of):
        def train_score(k: int, held: list[str], rows: np.ndarray) -> list[float]:
            if not (out / f"{kind}{k}" / "distill.json").exists():
                train(examples_of(k, held), corpus.products, cfg, out / f"{kind}{k}")
            return student_cls(out / f"{kind}{k}").score_pairs(
                [js[n].query for n in rows], [corpus.products[js[n].product_id] for n in rows]
            )

        return train_score

    gold_examples = lambda k, held: build_examples(train_corpus_of(held))  # noqa: E731
    weak_only: dict[str, np.ndarray] = {}
    report_extra: dict = {}
    if args.rows == "weak":
        kinds, weak_only, report_extra = pretrain_weak(args, corpus, kinds, out)
    oof = {k: np.full(len(js), np.nan) for k in kinds}
    for kind, (cfg, train, student_cls) in kinds.items():
        path = out / f"oof_{kind}.npy"
        gold_folds = args.rows in ("all", "weak") and not args.skip_folds  # weak: from the pretrained students
        if kind in args.kinds and (gold_folds or (args.rows.startswith("mpnet") and path.exists())):
            oof[kind] = out_of_fold(kind, student_fold(kind, cfg, train, student_cls, gold_examples))
        elif path.exists():  # trained by another process (--kinds) or an earlier run
            oof[kind] = np.load(path)
    mp = (
        teacher_rows(args, out, corpus, folds, out_of_fold, student_fold, train_corpus_of, kinds)
        if (args.rows.startswith("mpnet"))
        else {}
    )
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
    if args.rows == "weak":
        scorers |= weak_rows(weak_only, X, X_zero, qid, ltr_oof, {"no_ce": no_ce, "everything": everything})
    new = "LTR, no students + attribute groups"
    if args.rows in ("all", "cheap"):
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
    if args.rows.startswith("mpnet"):
        cols = {"no_ce": no_ce, "everything": everything, "groups": cols_of(GROUP_NAMES)}
        scorers |= mpnet_rows(mp, oof, X, X_zero, names, cols, qid, ltr_oof, nested)
    report = {"n_queries": len(corpus.query_ids), "folds": len(folds), "rows": args.rows, "scorers": {}}
    base = per_query_ndcg(qid, y, bm25)
    ref_q = per_query_ndcg(qid, y, np.nan_to_num(scorers[ref]))
    for name, s in scorers.items():
        m = ~np.isnan(s)  # a row trained on some folds only (--teacher-folds) is reported over their queries
        per_q = per_query_ndcg(qid[m], y[m], s[m])
        qs = sorted(per_q)
        if len(qs) < len(base):
            name = f"{name} [{len(qs)} of {len(base)} queries]"
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
            "per_fold": [float(np.mean([per_q[q] for q in f])) if f[0] in per_q else float("nan") for f in folds],
            "per_query": {q: float(per_q[q]) for q in qs},  # for paired differences between any two rows
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
    lines += ["", f"Nested CV: the set picked on the inner folds of each reported fold: {', '.join(picks)}."]
    new = new if new in gains else list(gains)[-1]
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
