"""The recall student: a MiniLM bi-encoder fine-tuned on teacher positives and hard negatives.

Training rows come from the same targets as the ranker (`ranker.build_examples`): a product whose
target is at least `pos_threshold` is a positive for its query; products of the same query at or
below `neg_threshold` are its hard negatives (judged irrelevant pairs, or teacher-scored BM25/MiniLM
neighbours that the teacher rejects). Losses: MultipleNegativesRanking (in-batch and hard negatives),
MarginMSE on the teacher's target margins, or both (multi-dataset training, one loss each).

`build_index` stores the student's catalogue embeddings in a `lref.rag.store.Store` (collection
`lref_products`), the same vector store that serves tagging. `recall_at_k` measures, over the whole
catalogue, how many relevant products appear in the top k of that approximate index, of exact search on
the same embeddings, and of BM25.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lref.data import Corpus, Product
from lref.distill.augment import augment_attacks
from lref.distill.features import STUDENT_PRODUCT_WORDS, student_text
from lref.distill.student import PairStudent, StudentConfig, by_query, fit_and_save, read_meta, student_folder
from lref.rag.bm25 import BM25Index
from lref.rag.embedder import DEFAULT_MODEL, Embedder, load_sentence_transformer

if TYPE_CHECKING:  # chromadb loads only when an index is built or read
    from lref.rag.store import Store

log = logging.getLogger(__name__)
LOSSES = ("mnrl", "margin-mse", "both")


class BiEncoderStudent(PairStudent):
    """A sentence-transformers bi-encoder: normalised embeddings, cosine scores. None = zero-shot MiniLM.

    It embeds through `lref.rag.embedder.Embedder`, so its vectors come from (and go to) the on-disk
    embedding cache. As an eval scorer (`score(corpus)`) it is `lref eval --scorer bi-encoder`.
    """

    name = "bi-encoder"

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64):
        spec = str(student_folder(model_dir, "bi-encoder")) if model_dir else DEFAULT_MODEL
        self.embedder = Embedder(spec, batch_size)
        self.max_words = read_meta(model_dir).get("config", {}).get("max_words", STUDENT_PRODUCT_WORDS)
        self.batch_size = batch_size

    @property
    def model(self):
        return self.embedder.model

    def embed_texts(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self.embedder.encode(texts, progress)

    def embed_products(self, products: list[Product], progress: bool = False) -> np.ndarray:
        return self.embed_texts([student_text(p, self.max_words) for p in products], progress)

    def score_pairs(self, queries: list[str], products: list[Product], progress: bool = False) -> list[float]:
        uq = sorted(set(queries))
        qe = dict(zip(uq, self.embed_texts(uq), strict=True))
        uniq = {p.product_id: p for p in products}
        pe = dict(zip(uniq, self.embed_products(list(uniq.values()), progress), strict=True))
        return [float(qe[q] @ pe[p.product_id]) for q, p in zip(queries, products, strict=True)]

    def score_texts(self, queries: list[str], texts: list[str]) -> list[float]:
        """Cosine of (query, product text) pairs, for texts rendered elsewhere (the server's text documents)."""
        uq, ut = sorted(set(queries)), sorted(set(texts))
        qe = dict(zip(uq, self.embed_texts(uq), strict=True))
        te = dict(zip(ut, self.embed_texts(ut), strict=True))
        return [float(qe[q] @ te[t]) for q, t in zip(queries, texts, strict=True)]


def triplets(
    examples: list[dict], pos_threshold: float = 0.75, neg_threshold: float = 0.4, per_query: int = 32, seed: int = 0
) -> list[dict]:
    """(query, positive, negative, margin) rows: a positive paired with a hard negative of the same query."""
    rng = random.Random(seed)
    out = []
    for rows in by_query(examples):
        pos = [e for e in rows if e["target"] >= pos_threshold]
        neg = [e for e in rows if e["target"] <= neg_threshold]
        pairs = [(p, n) for p in pos for n in neg]
        for p, n in rng.sample(pairs, min(per_query, len(pairs))):
            out.append(
                {
                    "query": p["query"],
                    "pos": p["product_id"],
                    "neg": n["product_id"],
                    "margin": p["target"] - n["target"],
                }
            )
    return out


def train_recall(
    examples: list[dict],
    products: Mapping[str, Product],
    cfg: StudentConfig,
    out_dir: str | Path,
    pos_threshold: float = 0.75,
    neg_threshold: float = 0.4,
) -> dict:
    """Fine-tune the bi-encoder and save it to `out_dir` with `distill.json`; returns its metadata and the `model`."""
    import datasets
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    loss_name = cfg.loss if cfg.loss in LOSSES else "mnrl"
    out_dir = Path(out_dir)
    if cfg.augment_attacks > 0:
        examples, products = augment_attacks(examples, products, cfg.augment_attacks, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = load_sentence_transformer(cfg.base or DEFAULT_MODEL, shared=False)
    model.max_seq_length = cfg.max_length
    trip = triplets(examples, pos_threshold, neg_threshold, cfg.pairs_per_query, cfg.seed)
    if not trip:
        raise ValueError(f"no (positive >= {pos_threshold}, negative <= {neg_threshold}) pairs in the training data")
    text = {pid: student_text(products[pid], cfg.max_words) for t in trip for pid in (t["pos"], t["neg"])}
    cols = {
        "anchor": [t["query"] for t in trip],
        "positive": [text[t["pos"]] for t in trip],
        "negative": [text[t["neg"]] for t in trip],
    }
    mnrl_ds = datasets.Dataset.from_dict(cols).shuffle(seed=cfg.seed)
    margin_ds = datasets.Dataset.from_dict({**cols, "label": [float(t["margin"]) for t in trip]}).shuffle(
        seed=cfg.seed
    )
    if loss_name == "mnrl":
        train, loss = mnrl_ds, losses.MultipleNegativesRankingLoss(model)
    elif loss_name == "margin-mse":
        train, loss = margin_ds, losses.MarginMSELoss(model)
    else:
        train = datasets.DatasetDict({"mnrl": mnrl_ds, "margin": margin_ds})
        loss = {"mnrl": losses.MultipleNegativesRankingLoss(model), "margin": losses.MarginMSELoss(model)}
    meta = {
        "kind": "bi-encoder",
        "config": {**asdict(cfg), "loss": loss_name},
        "n_triplets": len(trip),
        "pos_threshold": pos_threshold,
        "neg_threshold": neg_threshold,
    }
    meta = fit_and_save(
        model,
        train,
        loss,
        cfg,
        out_dir,
        len(trip),
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        meta,
        examples,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    log.info("recall student saved to %s (%d triplets)", out_dir, len(trip))
    return meta


def build_index(
    student: BiEncoderStudent,
    products: Mapping[str, Product],
    path: str | Path,
    progress: bool = True,
    embeddings: np.ndarray | None = None,
) -> tuple[Store, list[str], np.ndarray]:
    """Store the catalogue's student embeddings in a vector store at `path`; returns (store, ids, matrix).

    `embeddings` (one row per product, in `products` order) are used as they are; without them the student
    embeds the catalogue. The folder also keeps `embeddings.npy` and `ids.json` for exact search.
    """
    from lref.rag.store import CATALOGUE, Store

    ids = list(products)
    emb = student.embed_products([products[p] for p in ids], progress) if embeddings is None else embeddings
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape[0] != len(ids):
        raise ValueError(f"{emb.shape[0]} embeddings for {len(ids)} products")
    store = Store(path, embedder=student.embedder, collections=[CATALOGUE])
    store.add(CATALOGUE, ids, embeddings=emb, batch=2048)
    log.info("catalogue index %s holds %d vectors", store.path, store.count(CATALOGUE))
    np.save(Path(path) / "embeddings.npy", emb)
    (Path(path) / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
    return store, ids, emb


def open_index(student: BiEncoderStudent, path: str | Path) -> Store:
    """The catalogue index `build_index` wrote at `path`, reopened with the student's embedder."""
    from lref.rag.store import CATALOGUE, Store

    return Store(path, embedder=student.embedder, collections=[CATALOGUE])


def search_index(store: Store, embeddings: np.ndarray, k: int) -> list[list[str]]:
    """The ids of the approximate `k` nearest products of each query vector, nearest first."""
    from lref.rag.store import CATALOGUE

    return [[h.id for h in hits] for hits in store.query(CATALOGUE, embeddings, k)]


def recall_at_k(
    corpus: Corpus,
    student: BiEncoderStudent,
    store: Store | None,
    ids: list[str],
    emb: np.ndarray,
    ks: tuple[int, ...] = (10, 50, 100),
    min_grade: int | None = None,
) -> dict:
    """Mean recall@k of relevant products (grade >= min_grade, default the top grade) over the catalogue.

    For each query: the store's catalogue index (approximate), exact search over the same embeddings, and
    BM25; plus how much of the exact top k the index returns (`ann_overlap@k`). With `store=None` only exact
    search and BM25 are measured.
    """

    top_grade = corpus.scheme.max_value if min_grade is None else min_grade
    relevant: dict[str, set[str]] = defaultdict(set)
    text: dict[str, str] = {}
    for j in corpus.judgments:
        text[j.query_id] = j.query
        if j.grade >= top_grade:
            relevant[j.query_id].add(j.product_id)
    qids = sorted(q for q in relevant if relevant[q])
    kmax = max(ks)
    qe = student.embed_texts([text[q] for q in qids])
    ann = search_index(store, qe, kmax) if store is not None else None
    exact_order = np.argsort(-(qe @ emb.T), axis=1)[:, :kmax]
    bm25 = BM25Index(corpus.products)
    res: dict[str, float] = {}
    for k in ks:
        r_ann, r_exact, r_bm25, overlap = [], [], [], []
        for i, q in enumerate(qids):
            rel = relevant[q]
            exact_k = [ids[x] for x in exact_order[i, :k]]
            r_exact.append(len(rel & set(exact_k)) / len(rel))
            r_bm25.append(len(rel & set(bm25.top(text[q], k))) / len(rel))
            if ann is not None:
                r_ann.append(len(rel & set(ann[i][:k])) / len(rel))
                overlap.append(len(set(ann[i][:k]) & set(exact_k)) / k)
        if ann is not None:
            res[f"recall@{k}_index"] = float(np.mean(r_ann))
        res[f"recall@{k}_exact"] = float(np.mean(r_exact))
        res[f"recall@{k}_bm25"] = float(np.mean(r_bm25))
        if ann is not None:
            res[f"ann_overlap@{k}"] = float(np.mean(overlap))
    res["n_queries"] = len(qids)
    res["catalogue_size"] = len(ids)
    return res
