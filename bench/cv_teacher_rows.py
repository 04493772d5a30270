"""The `--rows mpnet|mpnet-tuned|mpnet-distil` rows of bench/cv_distill.py: a stronger teacher (`--teacher-base`).

`teacher_rows` computes the teacher's scores of every judged pair (zero-shot cosine; fine-tuned out of fold; the
MiniLM students distilled from each fold's teacher), `mpnet_rows` turns them into scorer rows. Kept apart from
cv_distill.py so that the script stays one page per experiment family.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


def teacher_rows(args, out: Path, corpus, folds, out_of_fold, student_fold, train_corpus_of, kinds) -> dict:
    """The `--teacher-base` scores of every judged pair, out of fold where trained: `zs` (zero-shot cosine),
    `tce` / `tbi` (fine-tuned as a cross-encoder / bi-encoder, gold only), `dce` / `dbi` (the MiniLM students
    trained on the fold teacher's scores + gold)."""
    from dataclasses import replace

    from lref.distill.recall import BiEncoderStudent
    from lref.distill.student import StudentConfig, build_examples, read_teacher
    from lref.distill.teacher import StudentTeacher, candidate_pairs, score_pairs

    if not args.teacher_base:
        raise SystemExit("--rows mpnet* needs --teacher-base DIR (dir=$(../shared/models/mpnet.sh))")
    js = corpus.judgments

    def zero_shot() -> np.ndarray:
        """One pass over the judged products (the embedding cache keeps it); last, so that a job training the
        teacher can run beside the `--rows mpnet` job that computes it."""
        path = out / f"zero_shot_teacher_w{args.teacher_words}.npy"
        if not path.exists():
            st = BiEncoderStudent(args.teacher_base)
            st.max_words = args.teacher_words
            pids = sorted({j.product_id for j in js})
            vec = {}
            for i in range(0, len(pids), 256):  # each chunk lands in the embedding cache: a killed run resumes
                chunk = pids[i : i + 256]
                vec |= dict(zip(chunk, st.embed_products([corpus.products[p] for p in chunk]), strict=True))
                logging.info("teacher zero-shot: %d of %d products embedded", len(vec), len(pids))
            qs = sorted({j.query for j in js})
            qv = dict(zip(qs, st.embed_texts(qs), strict=True))
            np.save(path, np.array([float(qv[j.query] @ vec[j.product_id]) for j in js]))
        return np.load(path)

    res = {}
    if args.rows == "mpnet":
        return {"zs": zero_shot()}
    ce_cfg, train_ce, ce_cls = kinds["ce"]
    bi_cfg, train_bi, bi_cls = kinds["bi"]
    lim = args.teacher_folds
    teach = {"base": args.teacher_base, "epochs": args.teacher_epochs, "max_steps": args.teacher_max_steps}
    teach |= {"learning_rate": args.teacher_lr, "batch_size": 16}
    gold = lambda k, held: build_examples(train_corpus_of(held))  # noqa: E731
    res["tce"] = out_of_fold(
        "tce", student_fold("tce", StudentConfig(loss="bce", **teach), train_ce, ce_cls, gold), lim
    )
    if not args.skip_teacher_bi:
        res["tbi"] = out_of_fold(
            "tbi", student_fold("tbi", StudentConfig(loss="mnrl", **teach), train_bi, bi_cls, gold), lim
        )
    if args.rows == "mpnet-tuned":
        return res | {"zs": zero_shot()}

    def distilled(k: int, held: list[str]) -> list[dict]:
        """Fold k's training queries: gold + the scores of fold k's teacher (trained on these queries only) on
        their judged pairs and unjudged BM25 top-N products."""
        train_c = train_corpus_of(held)
        tpath = out / f"teacher{k}.jsonl"
        pairs = candidate_pairs(train_c, top_bm25=args.teacher_top_n, top_dense=0)
        score_pairs(StudentTeacher(out / f"tce{k}", corpus.scheme), train_c, pairs, tpath, chunk_size=256)
        return build_examples(train_c, read_teacher(tpath), gold_weight=args.distil_gold_weight)

    dce_cfg, dbi_cfg = (replace(c, gold_weight=args.distil_gold_weight) for c in (ce_cfg, bi_cfg))
    res["dce"] = out_of_fold("dce", student_fold("dce", dce_cfg, train_ce, ce_cls, distilled), lim)
    res["dbi"] = out_of_fold("dbi", student_fold("dbi", dbi_cfg, train_bi, bi_cls, distilled), lim)
    return res | {"zs": zero_shot()}


def mpnet_rows(mp: dict, oof: dict, X, X_zero, names: list[str], cols: dict, qid, ltr_oof, nested) -> dict:
    """The `--rows mpnet*` scorers from the teacher's scores `mp` (see `teacher_rows`); LTR rows only for scores
    of every fold. `cols`: column lists `no_ce`, `everything`, `groups` of X. Adds the teacher cosine columns to
    `names`."""
    from lref.distill.features import FEATURES, per_query_z

    z = lambda v: per_query_z(v, qid)  # noqa: E731
    done = lambda v: v is not None and not np.isnan(v).any()  # noqa: E731
    bi, bi_qz, ce, ce_qz = (FEATURES.index(f) for f in ("bi_cosine", "bi_cosine_qz", "ce_score", "ce_score_qz"))
    no_ce, everything = cols["no_ce"], cols["everything"]

    def with_students(M, bi_s=None, ce_s=None):
        M = M.copy()
        for s, c, cz in ((bi_s, bi, bi_qz), (ce_s, ce, ce_qz)):
            if s is not None:
                M[:, c], M[:, cz] = s, z(s)
        return M

    rows = {}
    if done(oof["ce"]) and done(oof["bi"]):  # the gold-only MiniLM students, when cached in --out
        rows["cross-encoder (out of fold)"], rows["bi-encoder (out of fold)"] = oof["ce"], oof["bi"]
        rows["LTR, all features (the pipeline)"] = ltr_oof(with_students(X_zero, oof["bi"], oof["ce"]), everything)
    zs = mp["zs"]
    rows["zero-shot mpnet"] = zs
    names += ["teacher_cosine", "teacher_cosine_qz"]
    M = np.column_stack([X_zero, zs, z(zs)])
    t = [len(names) - 2, len(names) - 1]
    cands = {"MiniLM cosine": no_ce, "mpnet cosine": [c for c in no_ce if c not in (bi, bi_qz)] + t}
    cands["both"] = no_ce + t
    rows["LTR, no students, mpnet cosine instead of MiniLM's"] = ltr_oof(M, cands["mpnet cosine"])
    rows["LTR, no students + mpnet cosine"] = ltr_oof(M, cands["both"], "LTR, no students + mpnet cosine")
    rows["LTR, no students, cosine(s) chosen on inner folds (nested CV)"] = nested(M, cands)
    rows["LTR, no students + attribute groups (no mpnet)"] = ltr_oof(M, no_ce + cols["groups"])
    rows["LTR, no students + mpnet cosine + attribute groups"] = ltr_oof(M, cands["both"] + cols["groups"])
    if "tce" in mp:
        rows["mpnet cross-encoder (out of fold)"] = mp["tce"]
        if done(mp["tce"]):
            rows["LTR, no students + mpnet cosine + mpnet cross-encoder"] = ltr_oof(
                with_students(M, None, mp["tce"]), cands["both"] + [ce, ce_qz]
            )
    if "tbi" in mp:
        rows["mpnet bi-encoder (out of fold)"] = mp["tbi"]
        if done(mp["tbi"]) and done(mp["tce"]):
            rows["LTR + mpnet bi-encoder + mpnet cross-encoder"] = ltr_oof(
                with_students(X_zero, mp["tbi"], mp["tce"]), everything
            )
    if "dce" in mp:
        rows["cross-encoder, mpnet teacher + gold (out of fold)"] = mp["dce"]
        rows["bi-encoder, mpnet teacher + gold (out of fold)"] = mp["dbi"]
        if done(mp["dce"]) and done(mp["dbi"]):
            D = with_students(X_zero, mp["dbi"], mp["dce"])
            rows["LTR, distilled students, no cross-encoder"] = ltr_oof(D, no_ce)
            rows["LTR, distilled students (the pipeline, teacher + gold)"] = ltr_oof(D, everything)
    return rows
