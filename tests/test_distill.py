"""Distillation: teacher scoring with resume, the ranking and recall students, the chroma index, LTR."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lref.data import load_dir

# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def corpus(esci_slice):
    """The 4-query slice cut to 6 judged products per query (3 best, 3 worst) and 8 unjudged products.

    Small on purpose: every MiniLM forward pass in these tests runs over a few dozen products only.
    """
    from lref.data import Corpus

    full = load_dir(esci_slice)
    js = []
    for q in full.query_ids:
        rows = sorted((j for j in full.judgments if j.query_id == q), key=lambda j: (-j.grade, j.product_id))
        js += rows[:3] + rows[-3:]
    judged = {j.product_id for j in js}
    extra = [p for p in full.products if p not in judged][:8]
    products = {p: full.products[p] for p in [*sorted(judged), *extra]}
    return Corpus(js, products, full.scheme, {q: t for q, t in full.queries.items() if q in full.query_ids})


def _tiny_examples(corpus, n_per_query=4):
    """A handful of gold examples per query, with both relevant and irrelevant products."""
    from lref.distill.student import build_examples

    ex = build_examples(corpus)
    out = []
    for q in corpus.query_ids:
        rows = sorted((e for e in ex if e["query_id"] == q), key=lambda e: -e["target"])
        out += rows[: n_per_query // 2] + rows[-(n_per_query // 2) :]
    return out


def _small_cfg(base, **kw):
    from lref.distill.student import StudentConfig

    base = {
        "base": base,
        "max_steps": 3,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "max_length": 32,
    }
    return StudentConfig(**{**base, **kw})


def _pairs(corpus, n=6):
    js = corpus.judgments[:n]
    return [j.query for j in js], [corpus.products[j.product_id] for j in js]


# ---------------------------------------------------------------------------------------------- targets


def test_build_examples_mixes_gold_and_teacher_and_ignores_other_queries(corpus):
    from lref.distill.student import build_examples

    j = corpus.judgments[0]
    top = corpus.scheme.max_value
    unjudged = next(
        p for p in corpus.products if p not in {x.product_id for x in corpus.judgments if x.query_id == j.query_id}
    )
    teacher = [
        {"query_id": j.query_id, "query": j.query, "product_id": j.product_id, "score": 0.4},
        {"query_id": j.query_id, "query": j.query, "product_id": unjudged, "score": 0.9},
        {"query_id": "not-in-train", "query": "x", "product_id": unjudged, "score": 1.0},
    ]
    ex = build_examples(corpus, teacher, gold_weight=0.25)
    first = next(e for e in ex if (e["query_id"], e["product_id"]) == (j.query_id, j.product_id))
    assert first["target"] == pytest.approx(0.25 * j.grade / top + 0.75 * 0.4)
    aug = [e for e in ex if e["gold"] is None]
    assert [(e["query_id"], e["product_id"], e["target"]) for e in aug] == [(j.query_id, unjudged, 0.9)]
    assert len(ex) == len(corpus.judgments) + 1
    gold_only = build_examples(corpus, teacher, gold_weight=1.0)
    assert len(gold_only) == len(corpus.judgments)
    assert all(e["target"] == e["gold"] for e in gold_only)


# ---------------------------------------------------------------------------------------------- ranker


@pytest.mark.parametrize(
    ("loss", "pooling"), [("mse", "mean"), ("bce", "mean"), ("bce", "cls"), ("margin-mse", "mean"), ("lambda", "mean")]
)
def test_ranker_loss_falls_and_reload_gives_same_scores(corpus, tiny_bert, tmp_path, loss, pooling):
    from lref.distill.features import student_text
    from lref.distill.ranker import CrossEncoderStudent, train_ranker

    ex = _tiny_examples(corpus, n_per_query=2)  # 8 examples = one batch, so the steps see the same data
    cfg = _small_cfg(tiny_bert, loss=loss, pairs_per_query=2, pooling=pooling)
    meta = train_ranker(ex, corpus.products, cfg, tmp_path / "ce")
    h = meta["loss_history"]
    assert len(h) == 3 and h[-1] < h[0]
    queries, prods = _pairs(corpus)
    pairs = [(q, student_text(p)) for q, p in zip(queries, prods, strict=True)]
    trained = meta["model"].predict(pairs, show_progress_bar=False)
    reloaded = CrossEncoderStudent(tmp_path / "ce").score_pairs(queries, prods)
    assert len(reloaded) == 6 and all(0.0 <= x <= 1.0 for x in reloaded)
    np.testing.assert_allclose(reloaded, trained, rtol=0, atol=1e-5)
    saved = json.loads((tmp_path / "ce" / "distill.json").read_text())
    assert saved["config"]["loss"] == loss and saved["train_query_ids"] == corpus.query_ids
    assert saved["config"]["pooling"] == pooling
    assert (tmp_path / "ce" / "1_Pooling").is_dir() == (pooling == "mean")  # the mean head is saved as modules


# ---------------------------------------------------------------------------------------------- recall + index


def test_recall_student_trains_indexes_and_measures_recall(corpus, tiny_bert, tmp_path, monkeypatch):
    import chromadb.utils.embedding_functions as efs

    from lref.distill.features import student_text
    from lref.distill.recall import BiEncoderStudent, build_index, recall_at_k, train_recall
    from lref.rag.store import CATALOGUE, Store

    def boom(*a, **k):
        raise AssertionError("chroma's default embedding function must never run")

    monkeypatch.setattr(efs.DefaultEmbeddingFunction, "__call__", boom)
    ex = _tiny_examples(corpus, n_per_query=4)
    meta = train_recall(ex, corpus.products, _small_cfg(tiny_bert, pairs_per_query=2), tmp_path / "bi")
    h = meta["loss_history"]
    assert h[-1] < h[0]
    student = BiEncoderStudent(tmp_path / "bi")
    prods = [corpus.products[p] for p in list(corpus.products)[:5]]
    trained = meta["model"].encode([student_text(p) for p in prods], normalize_embeddings=True)
    np.testing.assert_allclose(student.embed_products(prods), trained, atol=1e-5)

    index, ids, emb = build_index(student, corpus.products, tmp_path / "index", progress=False)
    reopened = Store(tmp_path / "index")  # a fresh client reads the persisted collection
    assert reopened.names == [CATALOGUE] and reopened.count(CATALOGUE) == len(corpus.products)
    assert [hits[0].id for hits in reopened.query(CATALOGUE, emb[:3], 1)] == ids[:3]

    res = recall_at_k(corpus, student, reopened, ids, emb, ks=(5, len(ids)))
    assert res["n_queries"] == 4 and res["catalogue_size"] == len(ids)
    for k in (5, len(ids)):
        for m in ("index", "exact", "bm25"):
            assert 0.0 <= res[f"recall@{k}_{m}"] <= 1.0
    assert res[f"recall@{len(ids)}_exact"] == 1.0  # the whole catalogue holds every relevant product
    assert res[f"recall@{len(ids)}_index"] == 1.0


# ---------------------------------------------------------------------------------------------- LTR


def test_query_lists_keep_queries_apart_and_every_example_once(corpus):
    from lref.distill.ranker import query_lists
    from lref.distill.student import build_examples

    ex = build_examples(corpus)
    lists = query_lists(ex, size=4)
    assert all(2 <= len(rows) <= 4 and len({e["query_id"] for e in rows}) == 1 for rows in lists)
    assert sorted((e["query_id"], e["product_id"]) for rows in lists for e in rows) == sorted(
        (e["query_id"], e["product_id"]) for e in ex
    )


def test_lambdarank_learns_the_deciding_feature():
    from lref.distill.ltr import fit_lambdarank
    from lref.eval.metrics import mean_ndcg

    rng = np.random.default_rng(0)

    def make(n_groups, size=12):
        X = rng.normal(size=(n_groups * size, 4))
        y = np.digitize(X[:, 2], [-0.7, 0.0, 0.7])  # feature 2 alone decides the grade (0..3)
        qids = [str(g) for g in range(n_groups) for _ in range(size)]
        return X, y, qids, [size] * n_groups

    X, y, _, groups = make(60)
    booster = fit_lambdarank(X, y, groups, ["noise_a", "noise_b", "decider", "noise_c"], rounds=50)
    Xt, yt, qt, _ = make(20)
    assert mean_ndcg(qt, yt.tolist(), booster.predict(Xt).tolist(), 10) > 0.98
    gain = booster.feature_importance("gain")
    assert gain.argmax() == 2 and gain[2] / gain.sum() > 0.8


def test_ltr_saves_reloads_and_scores_the_same(corpus, tiny_bert, tmp_path):
    from lref.distill.features import FEATURES
    from lref.distill.ltr import LTRModel, train_ltr

    tags = tmp_path / "tags.jsonl"
    rows = [
        {
            "product_id": pid,
            "topic": [p.category[-1]] if p.category else [],
            "style": ["classic"],
            "quality": {"text": {"level": 2}},
        }
        for pid, p in list(corpus.products.items())[::2]
    ]
    tags.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    meta = train_ltr(corpus, tmp_path / "ltr", recall=tiny_bert, tags=str(tags), rounds=20, min_data_in_leaf=2)
    assert set(meta["importance_gain"]) >= {"bm25", "bi_cosine", "ce_score", "topic_match", "rating"}
    assert (tmp_path / "ltr" / "importance.md").exists() and (tmp_path / "ltr" / "importance.png").exists()
    m = LTRModel.load(tmp_path / "ltr")
    X = m.features.matrix(corpus)
    assert X.shape == (len(corpus.judgments), len(FEATURES)) and np.isnan(X[:, FEATURES.index("ce_score")]).all()
    scores = m.score_corpus(corpus)  # reloaded model, features computed from scratch
    np.testing.assert_allclose(scores, meta["booster"].predict(X))
    assert len(set(np.round(scores, 6))) > 1  # it learned something from the features


def test_tag_features_from_tags_and_category_fallback(corpus):
    from lref.data import Product
    from lref.distill.features import coverage_features, tag_features

    p = Product("p1", "Leather belt", category=["Clothing", "Men", "Belts"])
    f = tag_features("brown leather belts", p, None)
    assert f["topic_match"] == 1.0 and f["style_match"] == 0.0 and np.isnan(f["quality_mean"])
    tags = {
        "p1": {"topic": ["dress shoes"], "style": ["brown leather"], "quality": {"a": {"level": 1}, "b": {"level": 3}}}
    }
    f = tag_features("brown leather belts", p, tags)
    assert f["topic_match"] == 0.0 and f["style_match"] == 1.0
    assert f["quality_mean"] == 2.0 and f["quality_min"] == 1.0
    cov = coverage_features("brown leather belts", p)  # "belts" ~ "belt"; "brown" is nowhere
    assert cov["title_coverage"] == pytest.approx(2 / 3) and cov["text_coverage"] == pytest.approx(2 / 3)


def test_per_query_z_standardises_within_each_query():
    from lref.distill.features import per_query_z

    z = per_query_z([1.0, 3.0, 10.0, 10.0, 20.0, float("nan")], ["a", "a", "b", "b", "b", "c"])
    np.testing.assert_allclose(z[:2], [-1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(z[2:5], [-1 / np.sqrt(2), -1 / np.sqrt(2), np.sqrt(2)], atol=1e-6)
    assert np.isnan(z[5])


# ---------------------------------------------------------------------------------------------- teacher


class _Interrupting:
    """An engine that is killed (KeyboardInterrupt) on its n-th call."""

    def __init__(self, engine, fail_on: int):
        self.engine, self.fail_on, self.calls = engine, fail_on, 0
        self.scheme, self.tokenizer = engine.scheme, engine.tokenizer

    def score(self, prompts, progress=False):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        return self.engine.score(prompts)


def test_teacher_scoring_resumes_each_pair_exactly_once(corpus, tiny_model, tiny_bert, tmp_path):
    from lref.distill.recall import BiEncoderStudent
    from lref.distill.teacher import candidate_pairs, score_pairs
    from lref.engines.factory import make_engine

    engine = make_engine(str(tiny_model), None, batch_size=8)
    engine.name = "tiny"
    pairs = candidate_pairs(corpus, top_bm25=2, top_dense=2, embedder=BiEncoderStudent(tiny_bert))
    judged = {(j.query_id, j.product_id) for j in corpus.judgments}
    aug = [p for p in pairs if p["source"] != "judged"]
    assert not any((p["query_id"], p["product_id"]) in judged for p in aug)
    for q in corpus.query_ids:  # at most N per source and query; BM25 only returns products with a match
        assert 1 <= sum(p["query_id"] == q and p["source"] == "dense" for p in aug) <= 2
        assert sum(p["query_id"] == q and p["source"] == "bm25" for p in aug) <= 2
    assert any(p["source"] == "bm25" for p in aug) and any(p["source"] == "dense" for p in aug)
    keys = [(p["query_id"], p["product_id"]) for p in pairs]
    assert len(set(keys)) == len(keys)
    assert len(pairs) > 16

    ref = tmp_path / "ref.jsonl"
    score_pairs(engine, corpus, pairs, ref, chunk_size=8, progress=False)
    out = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_pairs(_Interrupting(engine, 3), corpus, pairs, out, chunk_size=8, progress=False)
    assert len(out.read_text().splitlines()) == 16
    with out.open("a") as f:
        f.write('{"query_id": "torn')  # a kill in the middle of a write
    stats = score_pairs(engine, corpus, pairs, out, chunk_size=8, progress=False)
    assert stats["skipped"] == 16 and stats["scored"] == len(pairs) - 16

    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = {(r["query_id"], r["product_id"]): r for r in map(json.loads, ref.read_text().splitlines())}
    assert sorted((r["query_id"], r["product_id"]) for r in got) == sorted(want)
    for r in got:
        w = want[(r["query_id"], r["product_id"])]
        assert r["source"] == w["source"] and set(r["probs"]) == set(corpus.scheme.labels)
        assert sum(r["probs"].values()) == pytest.approx(1.0)
        assert r["score"] == pytest.approx(w["score"], abs=1e-5)
    assert score_pairs(engine, corpus, pairs, out, progress=False)["scored"] == 0  # a finished job stays finished


def test_teacher_bad_pairs_go_to_the_errors_file(corpus, tiny_model, tmp_path):
    from lref.distill.teacher import score_pairs
    from lref.engines.factory import make_engine

    engine = make_engine(str(tiny_model), None)
    j = corpus.judgments[0]
    pairs = [
        {
            "query_id": j.query_id,
            "query": j.query,
            "product_id": j.product_id,
            "source": "judged",
            "gold_grade": j.grade,
        },
        {"query_id": j.query_id, "query": j.query, "product_id": "NOPE", "source": "bm25", "gold_grade": None},
    ]
    stats = score_pairs(engine, corpus, pairs, tmp_path / "t.jsonl", progress=False)
    assert stats["scored"] == 1 and stats["errors"] == 1
    err = json.loads((tmp_path / "t.errors.jsonl").read_text())
    assert err["product_id"] == "NOPE" and "not in the catalogue" in err["error"]


def test_cli_teacher_from_a_student_folder_scores_resumes_and_feeds_the_students(esci_slice, tiny_bert, tmp_path):
    """`lref distill teacher --student DIR`: a trained cross-encoder (or a bi-encoder folder) scores the judged and
    the BM25 candidate pairs into the same teacher file an LLM judge writes, resumably."""
    from lref.cli import main
    from lref.distill.ranker import CrossEncoderStudent
    from lref.distill.recall import BiEncoderStudent
    from lref.distill.student import build_examples, read_teacher
    from lref.distill.teacher import student_kind

    corpus = load_dir(esci_slice)
    ce = tmp_path / "ce"
    argv = ["distill", "ranker", "--data", str(esci_slice), "--base", tiny_bert, "--max-steps", "2"]
    assert main([*argv, "--batch-size", "4", "--max-length", "32", "--out", str(ce)]) == 0
    (ce / "distill.json").unlink()  # the kind is read from sentence-transformers' config without it
    assert student_kind(ce) == "cross-encoder" and student_kind(tiny_bert) == "bi-encoder"
    out = tmp_path / "t" / "scores.jsonl"
    teach = ["distill", "teacher", "--data", str(esci_slice), "--top-bm25", "2", "--top-dense", "0"]
    assert main([*teach, "--student", str(ce), "--out", str(out)]) == 0
    rows = read_teacher(out)
    judged = {(j.query_id, j.product_id) for j in corpus.judgments}
    assert {(r["query_id"], r["product_id"]) for r in rows if r["source"] == "judged"} == judged
    aug = [r for r in rows if r["source"] == "bm25"]
    assert aug and all(r["gold_grade"] is None and (r["query_id"], r["product_id"]) not in judged for r in aug)
    want = CrossEncoderStudent(ce).score_pairs(
        [r["query"] for r in rows], [corpus.products[r["product_id"]] for r in rows]
    )
    np.testing.assert_allclose([r["score"] for r in rows], want, atol=1e-6)
    for r in rows:
        assert r["probs"] is None and r["teacher"] == "cross-encoder:ce"
        assert r["label"] == corpus.scheme.label_of_value(round(r["score"] * 3))  # esci grades 0..3, nearest
    n = len(rows)
    with out.open("r+b") as f:  # a kill after 5 rows and half of the 6th
        lines = f.read().splitlines(keepends=True)
        f.seek(0)
        f.truncate()
        f.write(b"".join(lines[:5]) + lines[5][:20])
    assert main([*teach, "--student", str(ce), "--out", str(out)]) == 0
    again = read_teacher(out)
    assert sorted((r["query_id"], r["product_id"]) for r in again) == sorted(
        (r["query_id"], r["product_id"]) for r in rows
    )
    assert len(again) == n
    ex = build_examples(corpus, again, gold_weight=0.5)
    assert sum(e["gold"] is None for e in ex) == len(aug)  # the augmented pairs train the students

    bi_out = tmp_path / "bi.jsonl"  # a plain (untrained) model folder: a bi-encoder, cosine clipped to [0, 1]
    assert main([*teach, "--top-bm25", "0", "--student", tiny_bert, "--out", str(bi_out)]) == 0
    bi = read_teacher(bi_out)
    cos = BiEncoderStudent(tiny_bert).score_pairs(
        [r["query"] for r in bi], [corpus.products[r["product_id"]] for r in bi]
    )
    np.testing.assert_allclose([r["score"] for r in bi], np.clip(cos, 0, 1), atol=1e-6)
    with pytest.raises(SystemExit):  # one source only
        main([*teach, "--student", str(ce), "--model", tiny_bert, "--out", str(bi_out)])


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_split_and_eval_with_a_student(esci_slice, tmp_path, capsys):
    from lref.cli import main

    assert (
        main(["distill", "split", "--data", str(esci_slice), "--test-fraction", "0.25", "--out", str(tmp_path / "s")])
        == 0
    )
    split = json.loads((tmp_path / "s" / "split.json").read_text())
    assert len(split["train"]) == 3 and len(split["test"]) == 1 and not set(split["train"]) & set(split["test"])
    test_rows = (tmp_path / "s" / "test.tsv").read_text().splitlines()[1:]
    assert {r.split("\t")[0] for r in test_rows} == set(split["test"])
    code = main(
        [
            "eval",
            "--scorer",
            "bi-encoder",
            "--data",
            str(esci_slice),
            "--judgments",
            str(tmp_path / "s" / "test.tsv"),
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["scorer"] == "bi-encoder" and m["n_queries"] == 1 and 0.0 < m["ndcg@10"] <= 1.0


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cli_ranker_pooling_flag_reaches_the_saved_student(esci_slice, tiny_bert, tmp_path, pooling):
    from lref.cli import main
    from lref.distill.ranker import CrossEncoderStudent

    argv = ["distill", "ranker", "--data", str(esci_slice), "--base", tiny_bert, "--max-steps", "2"]
    assert main([*argv, "--batch-size", "4", "--max-length", "32", "--pooling", pooling, "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "distill.json").read_text())
    assert meta["config"]["pooling"] == pooling and len(meta["loss_history"]) == 2
    head = [type(m).__name__ for m in CrossEncoderStudent(tmp_path).model]
    assert head == (["Transformer", "Pooling", "Dense"] if pooling == "mean" else ["Transformer"])


# ---------------------------------------------------------------------------------------------- cross-fitting, int8


def test_kfold_by_query_puts_every_query_in_one_fold():
    from lref.data import kfold_by_query

    qs = [f"q{i}" for i in range(10)]
    folds = kfold_by_query(qs * 2, 3, seed=1)
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert sorted(q for f in folds for q in f) == sorted(qs)
    assert folds == kfold_by_query(list(reversed(qs)), 3, seed=1)  # input order does not matter
    with pytest.raises(ValueError, match="folds"):
        kfold_by_query(qs, 1)


def test_out_of_fold_scores_use_a_student_that_never_saw_the_query(corpus, tiny_bert, tmp_path):
    from lref.distill.ltr import out_of_fold_scores, train_ltr
    from lref.distill.ranker import CrossEncoderStudent, train_ranker
    from lref.distill.student import build_examples

    q = corpus.query_ids  # 4 queries, 2 folds
    folds = [q[:2], q[2:]]
    dirs = []
    for k, held in enumerate(folds):
        train = corpus.subset([x for x in q if x not in held])
        train_ranker(build_examples(train), corpus.products, _small_cfg(tiny_bert, max_steps=1), tmp_path / f"f{k}")
        dirs.append(str(tmp_path / f"f{k}"))
    oof = out_of_fold_scores(corpus, dirs, "ranker")
    for k, held in enumerate(folds):  # fold k's queries are scored by the student trained without them
        idx = [n for n, j in enumerate(corpus.judgments) if j.query_id in held]
        js = [corpus.judgments[n] for n in idx]
        own = CrossEncoderStudent(dirs[k]).score_pairs(
            [j.query for j in js], [corpus.products[j.product_id] for j in js]
        )
        np.testing.assert_allclose([oof[n] for n in idx], own, atol=1e-6)
    with pytest.raises(ValueError, match="every ranker fold student trained on it"):
        out_of_fold_scores(corpus, [dirs[0], dirs[0]], "ranker")
    meta = train_ltr(corpus, tmp_path / "ltr", ranker=dirs[0], recall=tiny_bert, ranker_folds=dirs, rounds=5,
                     min_data_in_leaf=2, valid_fraction=0)  # fmt: skip
    assert meta["ranker_folds"] == [str(tmp_path / "f0"), str(tmp_path / "f1")]


def test_int8_cross_encoder_scores_close_to_fp32_and_is_quantized(corpus, tiny_bert, tmp_path):
    import torch

    from lref.distill.ranker import CrossEncoderStudent, train_ranker

    train_ranker(_tiny_examples(corpus, 2), corpus.products, _small_cfg(tiny_bert, max_steps=2), tmp_path / "ce")
    queries, prods = _pairs(corpus)
    fp32 = CrossEncoderStudent(tmp_path / "ce").score_pairs(queries, prods)
    q8 = CrossEncoderStudent(tmp_path / "ce", int8=True)
    kinds = {type(m).__module__ for m in q8.model.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in k for k in kinds) and not any(type(m) is torch.nn.Linear for m in q8.model.modules())
    np.testing.assert_allclose(q8.score_pairs(queries, prods), fp32, atol=0.05)


def test_cli_split_folds_and_fixed_test_queries(esci_slice, tmp_path):
    from lref.cli import main

    assert main(["distill", "split", "--data", str(esci_slice), "--folds", "2", "--out", str(tmp_path / "k")]) == 0
    tests = [{r.split("\t")[0] for r in (tmp_path / "k" / f"fold{k}" / "test.tsv").read_text().splitlines()[1:]}
             for k in range(2)]  # fmt: skip
    trains = [{r.split("\t")[0] for r in (tmp_path / "k" / f"fold{k}" / "train.tsv").read_text().splitlines()[1:]}
              for k in range(2)]  # fmt: skip
    assert tests[0] == trains[1] and tests[1] == trains[0] and len(tests[0] | tests[1]) == 4
    ids = tmp_path / "ids.txt"
    one = sorted(tests[0])[0]
    ids.write_text(one + "\n")
    assert (
        main(
            ["distill", "split", "--data", str(esci_slice), "--test-query-ids", str(ids), "--out", str(tmp_path / "s")]
        )
        == 0
    )
    split = json.loads((tmp_path / "s" / "split.json").read_text())
    assert split["test"] == [one] and len(split["train"]) == 3
    ids.write_text("nope\n")
    assert (
        main(
            ["distill", "split", "--data", str(esci_slice), "--test-query-ids", str(ids), "--out", str(tmp_path / "x")]
        )
        == 2
    )


def test_ltr_with_attribute_groups_saves_them_and_reloads(corpus, tiny_bert, tmp_path):
    from lref.distill.attributes import FEATURE_GROUPS
    from lref.distill.features import FEATURES
    from lref.distill.ltr import LTRModel, train_ltr

    meta = train_ltr(
        corpus, tmp_path / "ltr", recall=tiny_bert, rounds=20, min_data_in_leaf=2, feature_groups=["colour", "units"]
    )
    assert meta["features"] == FEATURES + FEATURE_GROUPS["colour"] + FEATURE_GROUPS["units"]
    assert meta["feature_groups"] == ["colour", "units"] and "colour_match" in meta["importance_gain"]
    m = LTRModel.load(tmp_path / "ltr")
    X = m.features.matrix(corpus)
    assert X.shape == (len(corpus.judgments), len(meta["features"]))
    np.testing.assert_allclose(m.score_corpus(corpus), meta["booster"].predict(X))
    saved = json.loads((tmp_path / "ltr" / "ltr.json").read_text())
    saved["feature_groups"] = ["colour"]  # a model whose columns this version would compute differently
    (tmp_path / "ltr" / "ltr.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="trained on features"):
        LTRModel.load(tmp_path / "ltr")


def test_cli_ltr_feature_group_flags(capsys):
    from lref.cli import main, parse

    base = ["distill", "ltr", "--data", "d", "--out", "o"]
    assert parse(base)[1].groups() == []  # the base features only, as before the groups existed
    _, args, _, _ = parse([*base, "--feature-groups", "all"])
    assert args.groups() == ["brand", "colour", "units", "negation", "accessory", "category"]
    _, args, _, _ = parse([*base, "--feature-groups", "all", "--drop-feature-groups", "units", "brand"])
    assert args.groups() == ["colour", "negation", "accessory", "category"]
    _, args, _, _ = parse([*base, "--feature-groups", "units", "colour"])
    assert args.groups() == ["colour", "units"]
    assert main([*base, "--feature-groups", "size"]) != 0
    assert "unknown feature group 'size'" in capsys.readouterr().err
