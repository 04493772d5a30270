"""Learning to rank: LightGBM lambdarank over BM25, student scores, tag features and product rating.

Features (see `features.FEATURES`): the BM25 score and catalogue rank of the product for the query,
the bi-encoder cosine (recall student, or zero-shot MiniLM), the cross-encoder student's score (when
a ranker is given), tag features (query-topic match, style match, quality levels; topic from the
category path when there is no tags file) and the product's rating. The saved model folder holds the
booster and `ltr.json`, which names the student folders and tags file it needs to compute features.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lref.data import Corpus
from lref.distill.attributes import AttributeContext, group_features
from lref.distill.features import (
    FEATURES,
    coverage_features,
    load_tags,
    per_query_z,
    rating_features,
    tag_features,
)
from lref.distill.student import read_meta
from lref.rag.bm25 import BM25Index

log = logging.getLogger(__name__)


def fit_lambdarank(
    X: np.ndarray,
    y: np.ndarray,
    groups: list[int],
    feature_names: list[str],
    num_leaves: int = 7,
    rounds: int = 200,
    learning_rate: float = 0.05,
    seed: int = 0,
    min_data_in_leaf: int = 20,
    valid: tuple[np.ndarray, np.ndarray, list[int]] | None = None,
    early_stopping: int = 0,
):
    """A LightGBM lambdarank booster; rows of one query must be contiguous, `groups` gives their counts.

    With `valid` (X, y, groups of held-out queries) and `early_stopping` > 0, training stops when
    validation nDCG@10 has not improved for that many rounds; `booster.best_iteration` is the best round.
    """
    import lightgbm as lgb

    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": num_leaves,
        "learning_rate": learning_rate,
        "min_data_in_leaf": min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
    }
    data = lgb.Dataset(X, label=y, group=groups, feature_name=feature_names, free_raw_data=False)
    kw = {}
    if valid is not None and early_stopping > 0:
        vdata = lgb.Dataset(valid[0], label=valid[1], group=valid[2], reference=data, free_raw_data=False)
        kw = {"valid_sets": [vdata], "callbacks": [lgb.early_stopping(early_stopping, verbose=False)]}
    return lgb.train(params, data, num_boost_round=rounds, **kw)


class FeatureBuilder:
    """Computes the LTR feature matrix for the judged pairs of a corpus (students load on first use)."""

    def __init__(
        self,
        ranker: str | None = None,
        recall: str | None = None,
        tags: str | None = None,
        int8: bool = False,
        groups: list[str] | None = None,
    ):
        """`groups`: the attribute feature groups (`lref.distill.attributes.FEATURE_GROUPS`) added after
        `FEATURES`; none by default."""
        self.ranker_dir, self.recall_dir, self.tags_path, self.int8 = ranker, recall, tags, int8
        self._bi = self._ce = None
        self.tags = load_tags(tags) if tags else None
        self.groups = list(groups or [])
        self.names = feature_names(self.groups)

    @property
    def bi(self):
        from lref.distill.recall import BiEncoderStudent

        if self._bi is None:
            self._bi = BiEncoderStudent(self.recall_dir)
        return self._bi

    @property
    def ce(self):
        from lref.distill.ranker import CrossEncoderStudent

        if self._ce is None and self.ranker_dir:
            self._ce = CrossEncoderStudent(self.ranker_dir, int8=self.int8)
        return self._ce

    def matrix(
        self,
        corpus: Corpus,
        progress: bool = False,
        ce_scores: list[float] | None = None,
        bi_scores: list[float] | None = None,
        bm25: BM25Index | None = None,
    ) -> np.ndarray:
        """Rows in judgment order; `ce_scores` / `bi_scores` replace the students' own (out-of-fold scores).

        `bm25` reuses an index built over `corpus.products` (a server builds it once per catalogue).
        """
        js = corpus.judgments
        queries = [j.query for j in js]
        prods = [corpus.products[j.product_id] for j in js]
        bm25 = bm25 if bm25 is not None else BM25Index(corpus.products)
        ranks = {q: bm25.rank_of(q) for q in set(queries)}
        bi = bi_scores if bi_scores is not None else self.bi.score_pairs(queries, prods, progress)
        if ce_scores is not None:
            ce = ce_scores
        else:
            ce = self.ce.score_pairs(queries, prods, progress) if self.ce else [float("nan")] * len(js)
        qids = [j.query_id for j in js]
        bm = [float(bm25.scores(q)[bm25.row_of[p.product_id]]) for q, p in zip(queries, prods, strict=True)]
        z = {
            "bm25_qz": per_query_z(bm, qids),
            "bi_cosine_qz": per_query_z(bi, qids),
            "ce_score_qz": per_query_z(ce, qids),
        }
        ctx = AttributeContext.build(corpus.products, self.tags, bm25, queries) if self.groups else None
        rows = []
        for i, (q, p) in enumerate(zip(queries, prods, strict=True)):
            f = {
                "bm25": bm[i],
                "bm25_rank": float(np.log1p(ranks[q][p.product_id])),
                "bi_cosine": bi[i],
                "ce_score": ce[i],
                **{k: float(v[i]) for k, v in z.items()},
                **coverage_features(q, p),
                **tag_features(q, p, self.tags),
                **rating_features(p),
                **(ctx.features(q, p, self.groups) if ctx else {}),
            }
            rows.append([f[name] for name in self.names])
        return np.asarray(rows, dtype=np.float64).reshape(len(js), len(self.names))


def feature_names(groups: list[str] | None = None) -> list[str]:
    """The LTR's columns: the base `FEATURES`, then those of the attribute groups."""
    return FEATURES + group_features(groups or [])


def _grouped(corpus: Corpus, keep: set[str] | None = None) -> tuple[list[int], list[int]]:
    """Row order that makes each query contiguous (only queries in `keep`, if given), and the group sizes."""
    js = corpus.judgments
    order = sorted((i for i in range(len(js)) if keep is None or js[i].query_id in keep), key=lambda i: js[i].query_id)
    sizes: dict[str, int] = {}
    for i in order:
        sizes[js[i].query_id] = sizes.get(js[i].query_id, 0) + 1
    return order, list(sizes.values())


def _student_queries(model_dir: str | None) -> set[str]:
    return set(read_meta(model_dir).get("train_query_ids", []))


def out_of_fold_scores(corpus: Corpus, fold_dirs: list[str], kind: str, progress: bool = False) -> list[float]:
    """Each judged pair scored by a fold student that never trained on its query (cross-fitting).

    The fold students come from `lref distill split --folds K` + one student per fold; each records its
    training queries in `distill.json`. A query that every fold student has seen is an error, so the LTR
    never learns to trust over-fit scores.
    """
    from lref.distill.ranker import CrossEncoderStudent
    from lref.distill.recall import BiEncoderStudent

    seen = [_student_queries(d) for d in fold_dirs]
    for d, qs in zip(fold_dirs, seen, strict=True):
        if not qs:
            raise FileNotFoundError(f"{d}: no distill.json with train_query_ids (not a student from lref distill)")
    owner: dict[str, int] = {}
    for q in corpus.query_ids:
        free = [i for i, qs in enumerate(seen) if q not in qs]
        if not free:
            from lref.config import ConfigError

            raise ConfigError(f"query {q}: every {kind} fold student trained on it, so it has no out-of-fold score")
        owner[q] = free[0]
    js = corpus.judgments
    out = [float("nan")] * len(js)
    for i, d in enumerate(fold_dirs):
        rows = [n for n, j in enumerate(js) if owner[j.query_id] == i]
        if not rows:
            continue
        student = CrossEncoderStudent(d) if kind == "ranker" else BiEncoderStudent(d)
        s = student.score_pairs(
            [js[n].query for n in rows], [corpus.products[js[n].product_id] for n in rows], progress
        )
        for n, x in zip(rows, s, strict=True):
            out[n] = x
        log.info("%s fold %d (%s): out-of-fold scores for %d pairs", kind, i, d, len(rows))
    return out


def train_ltr(
    corpus: Corpus,
    out_dir: str | Path,
    ranker: str | None = None,
    recall: str | None = None,
    tags: str | None = None,
    num_leaves: int = 3,
    rounds: int = 300,
    learning_rate: float = 0.02,
    seed: int = 0,
    min_data_in_leaf: int = 50,
    valid_fraction: float = 0.0,
    early_stopping: int = 30,
    X: np.ndarray | None = None,
    ranker_folds: list[str] | None = None,
    recall_folds: list[str] | None = None,
    feature_groups: list[str] | None = None,
) -> dict:
    """Compute features for the corpus's judged pairs, fit lambdarank on the gold grades, save and report.

    With `valid_fraction` > 0, a share of the queries is held out to pick the number of rounds by early
    stopping on nDCG@10; the model is then refit on all queries with that many rounds. The defaults (small
    trees, slow rate, fixed 300 rounds, no early stopping) won in 5-fold cross-validation over esci150's
    120 queries (docs/distill.md): with ~100 training queries, a 25% validation split is too noisy to stop on.
    Student scores are only honest features on queries the students never trained on: a warning names the
    overlap, unless fold students give out-of-fold scores (below).
    `X` reuses a feature matrix already computed for `corpus` (rows in judgment order).
    `feature_groups`: attribute feature groups (brand, colour, units, negation, accessory, category) added to
    the base features; recorded in `ltr.json` so the saved model computes the same columns.
    `ranker_folds` / `recall_folds` (cross-fitting): student folders trained on K-1 of K query folds of
    the LTR's own queries; the LTR then trains on every query with out-of-fold student scores, and
    scores new queries with the full `ranker` / `recall` students.
    Returns the metadata written to `ltr.json` plus the trained `booster`.
    """
    from lref.data import split_by_query

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, path, folds in (("ranker", ranker, ranker_folds), ("recall", recall, recall_folds)):
        seen = _student_queries(path) & set(corpus.query_ids)
        if seen and not folds:
            log.warning(
                "the %s student was trained on %d of the %d LTR queries: its scores on them are optimistic features",
                kind,
                len(seen),
                len(corpus.query_ids),
            )
    if X is None:
        ce = out_of_fold_scores(corpus, ranker_folds, "ranker", True) if ranker_folds else None
        bi = out_of_fold_scores(corpus, recall_folds, "recall", True) if recall_folds else None
        X = FeatureBuilder(ranker, recall, tags, groups=feature_groups).matrix(
            corpus, progress=True, ce_scores=ce, bi_scores=bi
        )
    names = feature_names(feature_groups)
    y = np.asarray([j.grade for j in corpus.judgments])
    best = rounds
    qids = corpus.query_ids
    if valid_fraction > 0 and early_stopping > 0 and len(qids) >= 5:
        parts = split_by_query(qids, {"fit": 1 - valid_fraction, "valid": valid_fraction}, seed)
        fi, fg = _grouped(corpus, set(parts["fit"]))
        vi, vg = _grouped(corpus, set(parts["valid"]))
        probe = fit_lambdarank(
            X[fi], y[fi], fg, names, num_leaves, rounds, learning_rate, seed, min_data_in_leaf,
            valid=(X[vi], y[vi], vg), early_stopping=early_stopping,
        )  # fmt: skip
        best = max(1, probe.best_iteration or rounds)
        log.info("LTR: early stopping on %d validation queries picked %d rounds", len(parts["valid"]), best)
    order, groups = _grouped(corpus)
    booster = fit_lambdarank(
        X[order], y[order], groups, names, num_leaves, best, learning_rate, seed, min_data_in_leaf
    )
    booster.save_model(str(out_dir / "model.txt"))
    gain = dict(zip(names, booster.feature_importance("gain").tolist(), strict=True))
    split = dict(zip(names, booster.feature_importance("split").tolist(), strict=True))
    meta = {
        "kind": "ltr",
        "features": names,
        "feature_groups": list(feature_groups or []),
        "ranker": str(Path(ranker).resolve()) if ranker else None,
        "recall": str(Path(recall).resolve()) if recall else None,
        "tags": str(Path(tags).resolve()) if tags else None,
        "ranker_folds": [str(Path(d).resolve()) for d in ranker_folds or []],
        "recall_folds": [str(Path(d).resolve()) for d in recall_folds or []],
        "params": {
            "num_leaves": num_leaves,
            "max_rounds": rounds,
            "rounds": best,
            "learning_rate": learning_rate,
            "min_data_in_leaf": min_data_in_leaf,
            "valid_fraction": valid_fraction,
            "early_stopping": early_stopping,
            "seed": seed,
        },
        "n_rows": len(y),
        "n_queries": len(groups),
        "train_query_ids": qids,
        "importance_gain": gain,
        "importance_split": split,
    }
    (out_dir / "ltr.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    _write_importance(out_dir, gain, split)
    return {**meta, "booster": booster}


def _write_importance(out_dir: Path, gain: dict, split: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = sum(gain.values()) or 1.0
    names = sorted(gain, key=lambda k: -gain[k])
    lines = ["# LTR feature importance", "", "| feature | gain | gain share | splits |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {gain[n]:.1f} | {gain[n] / total:.1%} | {split[n]} |" for n in names]
    (out_dir / "importance.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh(names[::-1], [gain[n] / total for n in names[::-1]])
    ax.set_xlabel("share of total gain")
    ax.set_title("LightGBM lambdarank feature importance")
    fig.tight_layout()
    fig.savefig(out_dir / "importance.png", dpi=120)
    plt.close(fig)


class LTRModel:
    """A saved lambdarank model with the feature builder it was trained with; an eval scorer (`lref eval --scorer
    ltr`) through `score(corpus)`."""

    name = "ltr"

    def __init__(self, booster, meta: dict, int8: bool = False):
        self.booster, self.meta = booster, meta
        groups = meta.get("feature_groups") or []
        self.features = FeatureBuilder(meta.get("ranker"), meta.get("recall"), meta.get("tags"), int8, groups)

    @classmethod
    def load(cls, model_dir: str | Path, int8: bool = False) -> LTRModel:
        import lightgbm as lgb

        model_dir = Path(model_dir)
        if not (model_dir / "model.txt").exists():
            raise FileNotFoundError(f"no LTR model (model.txt) in {model_dir}")
        meta = json.loads((model_dir / "ltr.json").read_text(encoding="utf-8"))
        expected = feature_names(meta.get("feature_groups") or [])
        if meta.get("features") != expected:
            raise ValueError(
                f"{model_dir}: trained on features {meta.get('features')}, this version computes {expected}"
            )
        return cls(lgb.Booster(model_file=str(model_dir / "model.txt")), meta, int8)

    def score_corpus(self, corpus: Corpus, progress: bool = False, bm25=None) -> np.ndarray:
        """One score per judged pair; `bm25` reuses a `BM25Index` already built over `corpus.products`."""
        return self.booster.predict(self.features.matrix(corpus, progress, bm25=bm25), num_threads=1)

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        return [{"score": float(x)} for x in self.score_corpus(corpus, progress)]
