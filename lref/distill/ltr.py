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
from lref.distill.features import FEATURES, BM25Index, load_tags, rating_features, tag_features

log = logging.getLogger(__name__)


def fit_lambdarank(
    X: np.ndarray,
    y: np.ndarray,
    groups: list[int],
    feature_names: list[str],
    num_leaves: int = 15,
    rounds: int = 200,
    learning_rate: float = 0.05,
    seed: int = 0,
):
    """A LightGBM lambdarank booster; rows of one query must be contiguous, `groups` gives their counts."""
    import lightgbm as lgb

    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": num_leaves,
        "learning_rate": learning_rate,
        "min_data_in_leaf": 5,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
    }
    data = lgb.Dataset(X, label=y, group=groups, feature_name=feature_names, free_raw_data=False)
    return lgb.train(params, data, num_boost_round=rounds)


class FeatureBuilder:
    """Computes the LTR feature matrix for the judged pairs of a corpus."""

    def __init__(self, ranker: str | None = None, recall: str | None = None, tags: str | None = None):
        from lref.distill.recall import BiEncoderStudent

        self.ranker_dir, self.recall_dir, self.tags_path = ranker, recall, tags
        self.bi = BiEncoderStudent(recall)
        self.ce = None
        if ranker:
            from lref.distill.ranker import CrossEncoderStudent

            self.ce = CrossEncoderStudent(ranker)
        self.tags = load_tags(tags) if tags else None

    def matrix(self, corpus: Corpus, progress: bool = False) -> np.ndarray:
        js = corpus.judgments
        queries = [j.query for j in js]
        prods = [corpus.products[j.product_id] for j in js]
        bm25 = BM25Index(corpus.products)
        ranks = {q: bm25.rank_of(q) for q in set(queries)}
        bi = self.bi.score_pairs(queries, prods, progress)
        ce = self.ce.score_pairs(queries, prods, progress) if self.ce else [float("nan")] * len(js)
        rows = []
        for i, (q, p) in enumerate(zip(queries, prods, strict=True)):
            f = {
                "bm25": float(bm25.scores(q)[bm25.row_of[p.product_id]]),
                "bm25_rank": float(np.log1p(ranks[q][p.product_id])),
                "bi_cosine": bi[i],
                "ce_score": ce[i],
                **tag_features(q, p, self.tags),
                **rating_features(p),
            }
            rows.append([f[name] for name in FEATURES])
        return np.asarray(rows, dtype=np.float64).reshape(len(js), len(FEATURES))


def _grouped(corpus: Corpus) -> tuple[list[int], list[int]]:
    """Row order that makes each query contiguous, and the group sizes."""
    order = sorted(range(len(corpus.judgments)), key=lambda i: corpus.judgments[i].query_id)
    sizes: dict[str, int] = {}
    for i in order:
        q = corpus.judgments[i].query_id
        sizes[q] = sizes.get(q, 0) + 1
    return order, list(sizes.values())


def train_ltr(
    corpus: Corpus,
    out_dir: str | Path,
    ranker: str | None = None,
    recall: str | None = None,
    tags: str | None = None,
    num_leaves: int = 15,
    rounds: int = 200,
    learning_rate: float = 0.05,
    seed: int = 0,
) -> dict:
    """Compute features for the corpus's judged pairs, fit lambdarank on the gold grades, save and report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fb = FeatureBuilder(ranker, recall, tags)
    X = fb.matrix(corpus, progress=True)
    y = np.asarray([j.grade for j in corpus.judgments])
    order, groups = _grouped(corpus)
    booster = fit_lambdarank(X[order], y[order], groups, FEATURES, num_leaves, rounds, learning_rate, seed)
    booster.save_model(str(out_dir / "model.txt"))
    gain = dict(zip(FEATURES, booster.feature_importance("gain").tolist(), strict=True))
    split = dict(zip(FEATURES, booster.feature_importance("split").tolist(), strict=True))
    meta = {
        "kind": "ltr",
        "features": FEATURES,
        "ranker": str(Path(ranker).resolve()) if ranker else None,
        "recall": str(Path(recall).resolve()) if recall else None,
        "tags": str(Path(tags).resolve()) if tags else None,
        "params": {"num_leaves": num_leaves, "rounds": rounds, "learning_rate": learning_rate, "seed": seed},
        "n_rows": len(y),
        "n_queries": len(groups),
        "importance_gain": gain,
        "importance_split": split,
    }
    (out_dir / "ltr.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    _write_importance(out_dir, gain, split)
    return meta


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
    """A saved lambdarank model with the feature builder it was trained with."""

    def __init__(self, booster, meta: dict):
        self.booster, self.meta = booster, meta
        self.features = FeatureBuilder(meta.get("ranker"), meta.get("recall"), meta.get("tags"))

    @classmethod
    def load(cls, model_dir: str | Path) -> LTRModel:
        import lightgbm as lgb

        model_dir = Path(model_dir)
        if not (model_dir / "model.txt").exists():
            raise FileNotFoundError(f"no LTR model (model.txt) in {model_dir}")
        meta = json.loads((model_dir / "ltr.json").read_text(encoding="utf-8"))
        if meta.get("features") != FEATURES:
            raise ValueError(
                f"{model_dir}: trained on features {meta.get('features')}, this version computes {FEATURES}"
            )
        return cls(lgb.Booster(model_file=str(model_dir / "model.txt")), meta)

    def score_corpus(self, corpus: Corpus, progress: bool = False) -> np.ndarray:
        return self.booster.predict(self.features.matrix(corpus, progress), num_threads=1)
