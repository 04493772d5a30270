"""The ranking student: a cross-encoder (MiniLM with a fresh one-logit head) distilled from teacher scores.

Targets are in [0, 1]: the teacher's expected grade (normalised), mixed with the gold grade on judged
pairs by `gold_weight` (1 = gold only, 0 = teacher only); augmented pairs that have no gold grade keep
the teacher target. Losses: `mse` (sigmoid output against the soft target), `bce` (BCE with soft
targets), `margin-mse` (the student's score margin between two products of one query against the
target margin, as in Hofstätter et al. and Walmart's distillation) and `lambda` (listwise LambdaLoss,
NDCG-Loss2++ weighting, over lists of `list_size` products of one query: it only learns the order
within a query, which is what the ranking is judged on).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from lref.data import Product
from lref.distill.augment import augment_attacks
from lref.distill.features import STUDENT_PRODUCT_WORDS, student_text
from lref.distill.student import PairStudent, StudentConfig, by_query, fit_and_save, read_meta, student_folder
from lref.rag.embedder import DEFAULT_MODEL, resolve_model_path

log = logging.getLogger(__name__)
LOSSES = ("mse", "bce", "margin-mse", "lambda")


def margin_triplets(examples: list[dict], per_query: int, seed: int = 0, min_margin: float = 0.1) -> list[dict]:
    """(query, a, b, margin) from products of one query whose targets differ by at least `min_margin`."""
    rng = random.Random(seed)
    out = []
    for rows in by_query(examples):
        pairs = [(a, b) for a in rows for b in rows if a["target"] - b["target"] >= min_margin]
        for a, b in rng.sample(pairs, min(per_query, len(pairs))):
            out.append(
                {"query": a["query"], "a": a["product_id"], "b": b["product_id"], "margin": a["target"] - b["target"]}
            )
    return out


def query_lists(examples: list[dict], size: int, seed: int = 0) -> list[list[dict]]:
    """The examples of each query, shuffled and cut into lists of at most `size` (listwise losses)."""
    rng = random.Random(seed)
    out = []
    for rows in by_query(examples):
        rows = rows[:]
        rng.shuffle(rows)
        n = -(-len(rows) // size)  # lists of near-equal length
        out += [rows[i::n] for i in range(n) if len(rows[i::n]) > 1]
    return out


def new_cross_encoder(base: str, max_length: int, pooling: str = "cls"):
    """A cross-encoder from `base` with a fresh one-logit head.

    `cls` is the usual BertForSequenceClassification head on the pooled [CLS] vector. `mean` puts the
    head on the mean of the token vectors instead, the pooling MiniLM was trained with as a sentence
    encoder, so the head starts from features the encoder already makes meaningful.
    """
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling

    if pooling == "cls":
        return CrossEncoder(base, num_labels=1, max_length=max_length, device="cpu")
    if pooling != "mean":
        raise ValueError(f"unknown ranker pooling {pooling!r} (choose cls or mean)")
    enc = Transformer(base, transformer_task="feature-extraction", processor_kwargs={"model_max_length": max_length})
    dim = enc.get_embedding_dimension()
    head = Dense(dim, 1, activation_function=None, module_output_name="scores")
    return CrossEncoder(modules=[enc, Pooling(dim, "mean"), head], device="cpu")


def base_cross_encoder(base: str, max_length: int, pooling: str):
    """The model a ranker starts from. A saved cross-encoder student (e.g. one pretrained on weak pairs,
    `lref.distill.weak`) is trained on as it is, head and pooling included; any other model folder gets a fresh
    head (`new_cross_encoder`)."""
    if read_meta(base).get("kind") == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoder

        log.info("ranker continues the cross-encoder student %s (its head and pooling)", base)
        return CrossEncoder(base, max_length=max_length, device="cpu")
    return new_cross_encoder(base, max_length, pooling)


def train_ranker(
    examples: list[dict], products: Mapping[str, Product], cfg: StudentConfig, out_dir: str | Path
) -> dict:
    """Train the cross-encoder student and save it to `out_dir` with `distill.json` (config, losses).

    Returns the metadata written to `distill.json` plus the trained `model` (not saved in the JSON).
    """
    import datasets
    import torch
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )

    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown ranker loss {cfg.loss!r} (choose from {LOSSES})")
    if not examples:
        raise ValueError("no training examples")
    out_dir = Path(out_dir)
    if cfg.augment_attacks > 0:
        examples, products = augment_attacks(examples, products, cfg.augment_attacks, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = base_cross_encoder(resolve_model_path(cfg.base or DEFAULT_MODEL), cfg.max_length, cfg.pooling)
    text = {pid: student_text(products[pid], cfg.max_words) for pid in {e["product_id"] for e in examples}}
    if cfg.loss == "margin-mse":
        trip = margin_triplets(examples, cfg.pairs_per_query, cfg.seed)
        if not trip:
            raise ValueError("margin-mse needs queries with products of different targets")
        for t in trip:  # ranker margin-mse needs product texts for both sides
            text.setdefault(t["a"], student_text(products[t["a"]], cfg.max_words))
        ds = datasets.Dataset.from_dict(
            {
                "query": [t["query"] for t in trip],
                "a": [text[t["a"]] for t in trip],
                "b": [text[t["b"]] for t in trip],
                "label": [float(t["margin"]) for t in trip],
            }
        )
        loss = losses.MarginMSELoss(model, activation_fn=torch.nn.Sigmoid())
    elif cfg.loss == "lambda":
        lists = query_lists(examples, cfg.list_size, cfg.seed)
        ds = datasets.Dataset.from_dict(
            {
                "query": [rows[0]["query"] for rows in lists],
                "docs": [[text[e["product_id"]] for e in rows] for rows in lists],
                "labels": [[float(e["target"]) for e in rows] for rows in lists],
            }
        )
        loss = losses.LambdaLoss(model, mini_batch_size=cfg.batch_size * cfg.list_size)
    else:
        ds = datasets.Dataset.from_dict(
            {
                "query": [e["query"] for e in examples],
                "text": [text[e["product_id"]] for e in examples],
                "label": [float(e["target"]) for e in examples],
            }
        )
        if cfg.loss == "mse":
            loss = losses.MSELoss(model, activation_fn=torch.nn.Sigmoid())
        else:
            loss = losses.BinaryCrossEntropyLoss(model)
    ds = ds.shuffle(seed=cfg.seed)
    meta = {
        "kind": "cross-encoder",
        "config": asdict(cfg),
        "n_train_rows": len(ds),
        "n_examples": len(examples),
        "n_augmented": sum(e["gold"] is None for e in examples),
    }
    meta = fit_and_save(
        model, ds, loss, cfg, out_dir, len(ds), CrossEncoderTrainer, CrossEncoderTrainingArguments, meta, examples
    )
    h = meta["loss_history"]
    log.info("ranker saved to %s (%d rows, loss %.4f -> %.4f)", out_dir, len(ds), h[0], h[-1])
    return meta


def quantize_int8(model):
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per batch), in place.

    The serving form of a student on CPU: about 2x the pairs/s of fp32 at 64 tokens (bench/bench_students.py).
    torch marks eager-mode `torch.ao.quantization` deprecated in favour of torchao (not in this stack); it still
    works in torch 2.13, and its deprecation warnings are silenced here.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


class CrossEncoderStudent(PairStudent):
    """A saved cross-encoder student: score (query, product) pairs (sigmoid of its logit, in [0, 1]).

    `int8=True` quantizes its linear layers (`quantize_int8`) after loading, for CPU serving. As an eval
    scorer (`score(corpus)`) it is `lref eval --scorer cross-encoder`.
    """

    name = "cross-encoder"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, int8: bool = False):
        from sentence_transformers.cross_encoder import CrossEncoder

        self.model = CrossEncoder(str(student_folder(model_dir, "cross-encoder")), device="cpu")
        self.int8 = int8
        if int8:
            quantize_int8(self.model)
        self.max_words = read_meta(model_dir).get("config", {}).get("max_words", STUDENT_PRODUCT_WORDS)
        self.batch_size = batch_size

    def score_pairs(self, queries: list[str], products: list[Product], progress: bool = False) -> list[float]:
        return self.score_texts(queries, [student_text(p, self.max_words) for p in products], progress)

    def score_texts(self, queries: list[str], texts: list[str], progress: bool = False) -> list[float]:
        """Scores of (query, product text) pairs, for texts rendered elsewhere (the server's text documents).

        int8 quantizes activations per batch (one scale for the whole tensor), so a pair's int8 score
        depends on the other pairs in its batch: int8 batches never mix queries, and a query's pairs are
        cut into batches in their order, so the server and `lref eval` score a query's candidates alike.
        """
        pairs = list(zip(queries, texts, strict=True))
        if not pairs:
            return []
        if not self.int8:
            s = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=progress)
            return [float(x) for x in s]
        out: list[float] = []
        start = 0
        for end in range(1, len(pairs) + 1):
            if end == len(pairs) or pairs[end][0] != pairs[start][0]:
                s = self.model.predict(pairs[start:end], batch_size=self.batch_size, show_progress_bar=False)
                out += [float(x) for x in s]
                start = end
        return out
