"""What the two students share: settings, training rows from teacher scores, the training skeleton, metadata.

The ranker (`ranker.py`, a cross-encoder) and the recall student (`recall.py`, a bi-encoder) both train
with sentence-transformers' trainers on rows built here (`build_examples`), through one skeleton
(`fit_and_save`: training arguments, loss history, saved model and `distill.json`), and both score the
judged pairs of a corpus through `PairStudent.score`, so either one is an eval scorer as it is.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lref.data import Corpus, Product
from lref.distill.features import STUDENT_PRODUCT_WORDS

log = logging.getLogger(__name__)
META = "distill.json"


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
    augment_attacks: int = 0  # attacked copies of up to N low-target products per query (lref.distill.augment)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- training rows


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


# ---------------------------------------------------------------------------------------------- training skeleton


def training_args(cfg: StudentConfig, out_dir: Path, n_rows: int, cls):
    """Trainer arguments of either student (`cls`: the cross-encoder's or the bi-encoder's arguments class)."""
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


def loss_history(trainer) -> list[float]:
    return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]


def fit_and_save(
    model,
    train,
    loss,
    cfg: StudentConfig,
    out_dir: str | Path,
    n_rows: int,
    trainer_cls,
    args_cls,
    meta: dict,
    examples: list[dict],
    **arg_overrides,
) -> dict:
    """Train `model` on `train` with `loss`, save it and `distill.json` to `out_dir`, and return the metadata.

    The metadata is `meta` plus the training queries and the loss history (the saved JSON), and the trained
    `model` (not saved in the JSON). `arg_overrides` set extra training arguments (e.g. a batch sampler).
    """
    out_dir = Path(out_dir)
    args = training_args(cfg, out_dir, n_rows, args_cls)
    for key, value in arg_overrides.items():
        setattr(args, key, value)
    trainer = trainer_cls(model=model, args=args, train_dataset=train, loss=loss)
    trainer.train()
    model.save_pretrained(str(out_dir))
    meta = {
        **meta,
        "train_query_ids": sorted({e["query_id"] for e in examples}),
        "loss_history": loss_history(trainer),
    }
    write_meta(out_dir, meta)
    return {**meta, "model": model}


# ---------------------------------------------------------------------------------------------- saved students


def read_meta(model_dir: str | Path | None) -> dict:
    """A student folder's `distill.json` ({} when there is none, as for the zero-shot MiniLM)."""
    p = Path(model_dir) / META if model_dir else None
    return json.loads(p.read_text(encoding="utf-8")) if p is not None and p.exists() else {}


def write_meta(model_dir: str | Path, meta: dict) -> None:
    (Path(model_dir) / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def student_folder(model_dir: str | Path, kind: str) -> Path:
    """`model_dir` as a Path, or FileNotFoundError naming the kind of student that was expected there."""
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{kind} model folder not found: {model_dir}")
    return Path(model_dir)


class PairStudent:
    """A saved student as an eval scorer: `score(corpus)` scores every judged pair with `score_pairs`."""

    name = "student"

    def score_pairs(self, queries: list[str], products: list[Product], progress: bool = False) -> list[float]:
        raise NotImplementedError

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        js = corpus.judgments
        s = self.score_pairs([j.query for j in js], [corpus.products[j.product_id] for j in js], progress)
        return [{"score": x} for x in s]
