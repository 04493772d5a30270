"""`lref distill ...`: split, teacher scoring, ranking and recall students, learning to rank."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lref.batch.config import RayResumeArgs
from lref.commands.args import Command, Group, arg, fill
from lref.commands.core import CorpusArgs

OUT_MODEL = "model folder to write"
DISTILL = Group(
    "distill", "distil LLM scores and tags into small recall and ranking students", "distill_command", "STEP"
)


@dataclass(kw_only=True)
class DistillCorpusArgs(CorpusArgs):
    judgments: str | None = arg("judgments file to train on (e.g. train.tsv from `lref distill split`)", None)


@dataclass(kw_only=True)
class SplitArgs(DistillCorpusArgs):
    test_fraction: float = arg("share of queries in test.tsv", 0.2)
    seed: int = arg("seed of the split", 0)
    test_query_ids: str | None = arg(
        "file of query ids (one per line) to use as the test split instead of a random --test-fraction", None
    )
    folds: int = arg(
        "K > 1: K query folds instead: OUT/fold<k>/train.tsv (K-1 folds), test.tsv (fold k); for cross-fitting", 0
    )
    out: str = arg("folder for train.tsv and test.tsv")


@dataclass(kw_only=True)
class TeacherArgs(RayResumeArgs, DistillCorpusArgs):
    model: str | None = arg("teacher model folder or Hub id (transformers backend)", None, exclusive="source")
    endpoint: str | None = arg("OpenAI-compatible server URL (needs lref.engines.openai)", None, exclusive="source")
    student: str | None = arg(
        "a trained cross-encoder or bi-encoder folder as the teacher instead of an LLM judge (e.g. lref distill "
        "ranker --base all-mpnet-base-v2): its scores in [0, 1]",
        None,
        exclusive="source",
    )
    adapter: str | None = arg("LoRA adapter folder for --model", None)
    batch_size: int = arg("prompts (pairs for --student) per forward pass (local model)", 16)
    max_product_tokens: int = arg("product text is cut to this many tokens in the prompt", 256)
    served_model: str | None = arg("model name on the --endpoint server", None)
    top_bm25: int = arg("unjudged BM25 top-N products added per query", 10)
    top_dense: int = arg("unjudged MiniLM top-N products added per query", 10)
    out: str = arg("scores JSONL (appended to; a rerun resumes); with --ray: a folder of Parquet shards")
    chunk_size: int = arg("pairs scored and appended per write (with --ray: per actor call)", 64)


@dataclass(kw_only=True)
class StudentArgs(DistillCorpusArgs):
    """What the ranking and the recall student share."""

    teacher: str | None = arg("teacher scores JSONL from `lref distill teacher` (default: gold only)", None)
    gold_weight: float | None = arg(
        "weight of gold grades in judged targets (default 1 without a teacher, 0.5 with one)", None
    )
    no_augmented: bool = arg("ignore teacher pairs without gold grades", False)
    epochs: float = arg("passes over the student pairs", 1.0)
    max_steps: int = arg("stop after this many steps (-1: run the epochs)", -1)
    batch_size: int = arg("pairs (lists for --loss lambda) per step", 16)
    learning_rate: float = arg("peak learning rate", 5e-5)
    max_length: int = arg("longest query + product input in tokens", 64)
    pairs_per_query: int = arg("margin-mse / triplet pairs sampled per query", 32)
    list_size: int = arg("products per list for --loss lambda", 16)
    seed: int = arg("training seed", 0)
    base: str | None = arg(
        "initial model folder (default: the local MiniLM weights); a student folder continues that student", None
    )
    augment_attacks: int = arg(
        "robustness: keyword-stuffed and injected copies of up to N low-target products per query, target kept", 0
    )
    pairs: str | None = arg(
        "train on these pairs from `lref distill weak` instead of the judgments (weak pretraining; then train on "
        "the judgments with --base OUT)",
        None,
    )
    out: str = arg(OUT_MODEL)

    def student_config(self, **extra):
        from lref.distill.student import StudentConfig

        gold_weight = self.gold_weight if self.gold_weight is not None else (0.5 if self.teacher else 1.0)
        return fill(StudentConfig, self, gold_weight=gold_weight, include_augmented=not self.no_augmented, **extra)


@dataclass(kw_only=True)
class RankerArgs(StudentArgs):
    loss: Literal["mse", "bce", "margin-mse", "lambda"] = arg("training loss of the cross-encoder", "mse")
    pooling: Literal["mean", "cls"] = arg(
        "head on the mean token vector (MiniLM's own pooling) or on the BERT [CLS] pooler", "mean"
    )


@dataclass(kw_only=True)
class RecallArgs(StudentArgs):
    loss: Literal["mnrl", "margin-mse", "both"] = arg("training loss of the bi-encoder", "mnrl")
    pos_threshold: float = arg("target at or above which a pair is a positive", 0.75)
    neg_threshold: float = arg("target at or below which a pair is a negative", 0.4)
    eval_judgments: str | None = arg("judgments for recall@k (e.g. a held-out test.tsv)", None)
    no_index: bool = arg(
        "train and save only: no catalogue index, no recall@k (for cross-fitting fold students)", False
    )
    k: list[int] | None = arg("cut-offs for recall@k, repeatable (default 10 50 100)", None, action="append")


# the fields of LtrArgs that are train_ltr's keywords, under the same names
LTR_KEYWORDS = (
    *("ranker", "recall", "tags", "ranker_folds", "recall_folds", "num_leaves", "rounds", "learning_rate"),
    *("seed", "min_data_in_leaf", "valid_fraction", "early_stopping"),
)
GROUPS_HELP = "brand, colour, units, negation, accessory, category"


@dataclass(kw_only=True)
class LtrArgs(DistillCorpusArgs):
    ranker: str | None = arg("cross-encoder student folder (the ce_score feature)", None)
    recall: str | None = arg("bi-encoder student folder (default: zero-shot MiniLM)", None)
    ranker_folds: list[str] | None = arg(
        "cross-fitting: cross-encoders trained on K-1 of K folds of these judgments (lref distill split --folds)",
        None,
        nargs="+",
        action="extend",
    )
    recall_folds: list[str] | None = arg(
        "cross-fitting: bi-encoders trained the same way", None, nargs="+", action="extend"
    )
    tags: str | None = arg("tags.jsonl (default: topic match from the category path)", None)
    num_leaves: int = arg("leaves per tree", 3)
    rounds: int = arg("boosting rounds (the most, with early stopping)", 300)
    learning_rate: float = arg("boosting learning rate", 0.02)
    min_data_in_leaf: int = arg("fewest judged pairs in a leaf", 50)
    valid_fraction: float = arg("share of queries held out to early-stop (0: none)", 0.0)
    early_stopping: int = arg("rounds without validation gain before stopping", 30)
    seed: int = arg("seed of the validation split and the trees", 0)
    feature_groups: list[str] | None = arg(
        f"attribute feature groups to add to the base features ({GROUPS_HELP}, or all; default: none)",
        None,
        nargs="+",
        action="extend",
    )
    drop_feature_groups: list[str] | None = arg(
        "attribute feature groups to leave out of --feature-groups (e.g. --feature-groups all --drop-feature-groups "
        "units)",
        None,
        nargs="+",
        action="extend",
    )
    out: str = arg(OUT_MODEL)

    def groups(self) -> list[str]:
        """The attribute groups in use: --feature-groups ('all': every group; default none) minus
        --drop-feature-groups."""
        from lref.config import ConfigError
        from lref.distill.attributes import GROUP_NAMES, select_groups

        keep = self.feature_groups or []
        if "all" in keep:
            keep = GROUP_NAMES
        try:
            return select_groups(keep, self.drop_feature_groups or [])
        except ValueError as e:
            raise ConfigError(str(e)) from None


def cmd_split(args: SplitArgs) -> int:
    from lref.data import split_by_query

    corpus = args.load()
    if args.folds > 1:
        return _kfold(corpus, args)
    if args.test_query_ids:
        wanted = Path(args.test_query_ids).read_text(encoding="utf-8").split()
        unknown = sorted(set(wanted) - set(corpus.query_ids))
        if unknown or not wanted:
            from lref.config import ConfigError

            raise ConfigError(
                f"{args.test_query_ids}: {len(unknown)} query ids are not in the judgments (first: {unknown[:3]})"
                if unknown
                else f"{args.test_query_ids}: no query ids"
            )
        test = sorted(set(wanted))
        parts = {"train": [q for q in corpus.query_ids if q not in set(test)], "test": test}
    else:
        parts = split_by_query(
            corpus.query_ids, {"train": 1 - args.test_fraction, "test": args.test_fraction}, args.seed
        )
    out = Path(args.out)
    _write_parts(corpus, parts, out)
    print(f"split {len(corpus.query_ids)} queries: {len(parts['train'])} train, {len(parts['test'])} test -> {out}")
    return 0


def _write_parts(corpus, parts: dict[str, list[str]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    label_col = "esci_label" if corpus.scheme.name == "esci" else "label"
    for name, qids in parts.items():
        keep = set(qids)
        with (out / f"{name}.tsv").open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["query_id", "query", "product_id", label_col, "grade"])
            w.writerows(
                [j.query_id, j.query, j.product_id, j.label, j.grade] for j in corpus.judgments if j.query_id in keep
            )
    (out / "split.json").write_text(json.dumps(parts, indent=2), encoding="utf-8")


def _kfold(corpus, args) -> int:
    from lref.data import kfold_by_query

    folds = kfold_by_query(corpus.query_ids, args.folds, args.seed)
    out = Path(args.out)
    for k, test in enumerate(folds):
        held = set(test)
        _write_parts(corpus, {"train": [q for q in corpus.query_ids if q not in held], "test": test}, out / f"fold{k}")
    (out / "folds.json").write_text(json.dumps(folds, indent=2), encoding="utf-8")
    print(f"{args.folds} folds of {len(corpus.query_ids)} queries ({[len(f) for f in folds]}) -> {out}/fold*/")
    return 0


def cmd_teacher(args: TeacherArgs) -> int:
    from lref.distill.teacher import StudentTeacher, candidate_pairs, score_pairs
    from lref.engines.factory import make_engine

    if args.student and args.ray:
        from lref.config import ConfigError

        raise ConfigError("--student scores in this process; --ray runs LLM judges (--model or --endpoint)")
    corpus = args.load()
    pairs = candidate_pairs(corpus, args.top_bm25, args.top_dense)
    if args.ray:  # chunks of --chunk-size pairs per engine call, as below, in Ray actors
        import functools

        from lref.batch.config import RayConfig
        from lref.batch.ray_job import run_pairs

        make = functools.partial(
            make_engine, args.model, args.endpoint, args.adapter, args.scheme, args.batch_size, args.served_model
        )
        cfg = RayConfig.from_args(args, batch_size=args.chunk_size)
        s = run_pairs(make, pairs, corpus.products, args.out, cfg, "teacher", args.max_product_tokens)
        print(
            f"teacher: {s['rows']} pairs scored, {s['errors']} errors -> {s['errors_dir']}, "
            f"in {s['seconds']} s -> {args.out}"
        )
        return 0
    if args.student:
        engine = StudentTeacher(args.student, corpus.scheme, args.batch_size)
    else:
        engine = make_engine(args.model, args.endpoint, args.adapter, args.scheme, args.batch_size, args.served_model)
    stats = score_pairs(engine, corpus, pairs, args.out, args.chunk_size, args.max_product_tokens)
    print(
        f"teacher: {stats['scored']} pairs scored now, {stats['skipped']} already done, {stats['errors']} errors "
        f"({stats['judged']} judged + {stats['augmented']} augmented pairs in all) -> {args.out}"
    )
    return 0


def _examples(args, cfg):
    """(products, training rows): the judgments' (with teacher scores), or the --pairs file's."""
    from lref.distill.student import build_examples, read_teacher

    if args.pairs:
        from lref.config import ConfigError
        from lref.data import load_products
        from lref.distill.weak import read_pairs

        if args.teacher or args.judgments:
            raise ConfigError("--pairs trains on the pairs file alone: drop --teacher and --judgments")
        products = load_products(Path(args.data) / "products.jsonl")
        return products, read_pairs(args.pairs, products)
    corpus = args.load()
    teacher = read_teacher(args.teacher) if args.teacher else None
    return corpus.products, build_examples(corpus, teacher, cfg.gold_weight, cfg.include_augmented)


def _train(args: StudentArgs, train, *extra):
    """Train one student with `train(examples, products, cfg, out, *extra)`: (products, meta, loss history)."""
    cfg = args.student_config()
    products, examples = _examples(args, cfg)
    meta = train(examples, products, cfg, args.out, *extra)
    return products, meta, meta["loss_history"]


def cmd_ranker(args: RankerArgs) -> int:
    from lref.distill.ranker import train_ranker

    _, meta, h = _train(args, train_ranker)
    print(
        f"ranker: {meta['n_train_rows']} rows ({meta['n_augmented']} augmented), "
        f"loss {h[0]:.4f} -> {h[-1]:.4f} -> {args.out}"
    )
    return 0


def cmd_recall(args: RecallArgs) -> int:
    from lref.data import load_dir
    from lref.distill.recall import BiEncoderStudent, build_index, recall_at_k, train_recall

    products, meta, h = _train(args, train_recall, args.pos_threshold, args.neg_threshold)
    if args.no_index:
        print(f"recall: {meta['n_triplets']} triplets, loss {h[0]:.4f} -> {h[-1]:.4f} (not indexed) -> {args.out}")
        return 0
    student = BiEncoderStudent(args.out)
    index, ids, emb = build_index(student, products, Path(args.out) / "index")
    if args.eval_judgments:
        ev = load_dir(args.data, args.eval_judgments, args.scheme)
        ks = tuple(args.k or (10, 50, 100))
        res = {"student": recall_at_k(ev, student, index, ids, emb, ks)}
        zs = BiEncoderStudent(None)
        zemb = zs.embed_products([products[p] for p in ids])
        res["zero_shot_minilm_exact"] = {
            k: v for k, v in recall_at_k(ev, zs, None, ids, zemb, ks).items() if "index" not in k
        }
        meta["recall"] = res
        (Path(args.out) / "recall.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
        s = res["student"]
        print(
            " ".join(
                f"recall@{k}: index {s[f'recall@{k}_index']:.3f} exact {s[f'recall@{k}_exact']:.3f} "
                f"bm25 {s[f'recall@{k}_bm25']:.3f} zero-shot {res['zero_shot_minilm_exact'][f'recall@{k}_exact']:.3f};"
                for k in ks
            )
        )
    print(
        f"recall: {meta['n_triplets']} triplets, loss {h[0]:.4f} -> {h[-1]:.4f}, "
        f"{len(ids)} products indexed -> {args.out}"
    )
    return 0


def cmd_ltr(args: LtrArgs) -> int:
    from lref.distill.ltr import train_ltr

    groups = args.groups()  # a bad group name fails before any data is read
    corpus = args.load()
    meta = train_ltr(corpus, args.out, feature_groups=groups, **{name: getattr(args, name) for name in LTR_KEYWORDS})
    imp = ", ".join(f"{k} {v:.0f}" for k, v in sorted(meta["importance_gain"].items(), key=lambda kv: -kv[1])[:6])
    print(
        f"ltr: {meta['n_rows']} rows, {meta['n_queries']} queries, {meta['params']['rounds']} rounds; "
        f"gain importance: {imp} -> {args.out}"
    )
    return 0


COMMANDS = [
    DISTILL,
    Command(
        "distill split", SplitArgs, cmd_split, "split judgments by query into train.tsv / test.tsv (whole queries)"
    ),
    Command(
        "distill teacher",
        TeacherArgs,
        cmd_teacher,
        "teacher scores (probabilities per grade) for judged and augmented pairs",
    ),
    Command("distill ranker", RankerArgs, cmd_ranker, "train the cross-encoder ranking student"),
    Command(
        "distill recall",
        RecallArgs,
        cmd_recall,
        "train the bi-encoder recall student, index the catalogue, measure recall@k",
    ),
    Command("distill ltr", LtrArgs, cmd_ltr, "LightGBM lambdarank over BM25, student, tag and rating features"),
]
