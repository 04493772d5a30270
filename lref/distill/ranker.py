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

import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lref.data import Corpus, Product
from lref.distill.features import STUDENT_PRODUCT_WORDS, minilm_path, student_text

log = logging.getLogger(__name__)
LOSSES = ("mse", "bce", "margin-mse", "lambda")


@dataclass
class StudentConfig:
    """Training settings shared by the students (small defaults: they train on CPU)."""

    base: str | None = None  # model folder; None = the local MiniLM weights
    loss: str = "mse"
    gold_weight: float = 1.0  # weight of the gold grade in the target of judged pairs
    include_augmented: bool = True  # train on teacher-scored pairs that have no gold grade
    max_length: int = 64
    max_words: int = STUDENT_PRODUCT_WORDS
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    pairs_per_query: int = 32  # margin-mse / triplet pairs sampled per query
    list_size: int = 16  # products per list for the listwise `lambda` loss (batch_size counts lists)
    pooling: str = (
        "mean"  # ranker head on "mean" of the token vectors or on "cls" (BERT pooler); see new_cross_encoder
    )
    extra: dict = field(default_factory=dict)


def read_teacher(path: str | Path) -> list[dict]:
    """Rows of a teacher scores file (see `lref.distill.teacher`); each needs query_id, product_id, score."""
    from lref.data import read_table

    return [r for _, r in read_table(path, required=("query_id", "query", "product_id", "score"))]


def build_examples(
    corpus: Corpus,
    teacher: Iterable[dict] | None = None,
    gold_weight: float = 1.0,
    include_augmented: bool = True,
) -> list[dict]:
    """Training rows {query_id, query, product_id, target, gold} for the corpus's queries only.

    Teacher rows for other queries are ignored, so a test split never leaks into training.
    """
    if not 0.0 <= gold_weight <= 1.0:
        raise ValueError(f"gold_weight must be in [0, 1], got {gold_weight}")
    teach = {}
    qids = {j.query_id for j in corpus.judgments}
    for r in teacher or ():
        if str(r["query_id"]) in qids:
            teach[(str(r["query_id"]), str(r["product_id"]))] = r
    out = []
    judged = set()
    for j in corpus.judgments:
        gold = corpus.scheme.normalise(j.grade)
        t = teach.get((j.query_id, j.product_id))
        target = gold if t is None else gold_weight * gold + (1 - gold_weight) * float(t["score"])
        out.append(
            {"query_id": j.query_id, "query": j.query, "product_id": j.product_id, "target": target, "gold": gold}
        )
        judged.add((j.query_id, j.product_id))
    if include_augmented and gold_weight < 1.0:
        for key, t in teach.items():
            if key not in judged and key[1] in corpus.products:
                out.append(
                    {
                        "query_id": key[0],
                        "query": t["query"],
                        "product_id": key[1],
                        "target": float(t["score"]),
                        "gold": None,
                    }
                )
    return out


def by_query(examples: list[dict]) -> list[list[dict]]:
    """The examples grouped by query_id, queries in sorted order (so seeded sampling repeats)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for e in examples:
        groups[e["query_id"]].append(e)
    return [groups[q] for q in sorted(groups)]


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


def _loss_history(trainer) -> list[float]:
    return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]


def _training_args(cfg: StudentConfig, out_dir: Path, n_rows: int, cls):
    return cls(
        output_dir=str(out_dir / "_checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=int(cfg.warmup_ratio * max(1, cfg.max_steps if cfg.max_steps > 0 else n_rows // cfg.batch_size)),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=cfg.seed,
        dataloader_drop_last=False,
        disable_tqdm=False,
    )


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
    torch.manual_seed(cfg.seed)
    model = new_cross_encoder(cfg.base or minilm_path(), cfg.max_length, cfg.pooling)
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
    args = _training_args(cfg, out_dir, len(ds), CrossEncoderTrainingArguments)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=loss)
    trainer.train()
    history = _loss_history(trainer)
    model.save_pretrained(str(out_dir))
    meta = {
        "kind": "cross-encoder",
        "config": asdict(cfg),
        "n_train_rows": len(ds),
        "n_examples": len(examples),
        "n_augmented": sum(e["gold"] is None for e in examples),
        "train_query_ids": sorted({e["query_id"] for e in examples}),
        "loss_history": history,
    }
    (out_dir / "distill.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    log.info("ranker saved to %s (%d rows, loss %.4f -> %.4f)", out_dir, len(ds), history[0], history[-1])
    return {**meta, "model": model}


def read_meta(model_dir: str | Path) -> dict:
    p = Path(model_dir) / "distill.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


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


class CrossEncoderStudent:
    """A saved cross-encoder student: score (query, product) pairs (sigmoid of its logit, in [0, 1]).

    `int8=True` quantizes its linear layers (`quantize_int8`) after loading, for CPU serving.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 64, int8: bool = False):
        from sentence_transformers.cross_encoder import CrossEncoder

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"cross-encoder model folder not found: {model_dir}")
        self.model = CrossEncoder(str(model_dir), device="cpu")
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
