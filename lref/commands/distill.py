"""`lref distill ...`: split, teacher scoring, ranking and recall students, learning to rank."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def add_parsers(sub) -> None:
    d = sub.add_parser("distill", help="distil LLM scores and tags into small recall and ranking students")
    dsub = d.add_subparsers(dest="distill_command", metavar="STEP", required=True)

    p = dsub.add_parser("split", help="split judgments by query into train.tsv / test.tsv (whole queries)")
    p.add_argument("--config", help="YAML file of these flags")
    _data(p)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--test-query-ids",
        help="file of query ids (one per line) to use as the test split instead of a random --test-fraction",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        help="K > 1: K query folds instead: OUT/fold<k>/train.tsv (K-1 folds), test.tsv (fold k); for cross-fitting",
    )
    p.add_argument("--out", required=True, help="folder for train.tsv and test.tsv")
    p.set_defaults(func=cmd_split)

    p = dsub.add_parser("teacher", help="teacher scores (probabilities per grade) for judged and augmented pairs")
    p.add_argument("--config", help="YAML file of these flags")
    _data(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="teacher model folder or Hub id (transformers backend)")
    src.add_argument("--endpoint", help="OpenAI-compatible server URL (needs lref.engines.openai)")
    p.add_argument("--adapter", help="LoRA adapter folder for --model")
    p.add_argument("--served-model", help="model name on the --endpoint server")
    p.add_argument("--top-bm25", type=int, default=10, help="unjudged BM25 top-N products added per query")
    p.add_argument("--top-dense", type=int, default=10, help="unjudged MiniLM top-N products added per query")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chunk-size", type=int, default=64, help="pairs scored and appended per write")
    p.add_argument("--max-product-tokens", type=int, default=256)
    p.add_argument("--out", required=True, help="scores JSONL (appended to; a rerun resumes)")
    p.set_defaults(func=cmd_teacher)

    for name, helptext, losses in (
        ("ranker", "train the cross-encoder ranking student", ["mse", "bce", "margin-mse", "lambda"]),
        (
            "recall",
            "train the bi-encoder recall student, index the catalogue, measure recall@k",
            ["mnrl", "margin-mse", "both"],
        ),
    ):
        p = dsub.add_parser(name, help=helptext)
        p.add_argument("--config", help="YAML file of these flags")
        _data(p)
        p.add_argument("--teacher", help="teacher scores JSONL from `lref distill teacher` (default: gold only)")
        p.add_argument(
            "--gold-weight",
            type=float,
            help="weight of gold grades in judged targets (default 1 without a teacher, 0.5 with one)",
        )
        p.add_argument("--loss", choices=losses, default=losses[0])
        p.add_argument("--no-augmented", action="store_true", help="ignore teacher pairs without gold grades")
        p.add_argument("--epochs", type=float, default=1.0)
        p.add_argument("--max-steps", type=int, default=-1)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--learning-rate", type=float, default=5e-5)
        p.add_argument("--max-length", type=int, default=64)
        p.add_argument("--pairs-per-query", type=int, default=32)
        p.add_argument("--list-size", type=int, default=16, help="products per list for --loss lambda")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--base", help="initial model folder (default: the local MiniLM weights)")
        p.add_argument("--out", required=True, help="model folder to write")
        if name == "recall":
            p.add_argument("--pos-threshold", type=float, default=0.75)
            p.add_argument("--neg-threshold", type=float, default=0.4)
            p.add_argument("--eval-judgments", help="judgments for recall@k (e.g. a held-out test.tsv)")
            p.add_argument(
                "--no-index",
                action="store_true",
                help="train and save only: no catalogue index, no recall@k (for cross-fitting fold students)",
            )
            p.add_argument("--k", type=int, action="append", help="cut-offs for recall@k (default 10 50 100)")
        else:
            p.add_argument(
                "--pooling",
                choices=["mean", "cls"],
                default="mean",
                help="head on the mean token vector (MiniLM's own pooling) or on the BERT [CLS] pooler",
            )
        p.set_defaults(func=cmd_ranker if name == "ranker" else cmd_recall)

    p = dsub.add_parser("ltr", help="LightGBM lambdarank over BM25, student, tag and rating features")
    p.add_argument("--config", help="YAML file of these flags")
    _data(p)
    p.add_argument("--ranker", help="cross-encoder student folder (the ce_score feature)")
    p.add_argument("--recall", help="bi-encoder student folder (default: zero-shot MiniLM)")
    p.add_argument(
        "--ranker-folds",
        nargs="+",
        action="extend",
        help="cross-fitting: cross-encoders trained on K-1 of K folds of these judgments (lref distill split --folds)",
    )
    p.add_argument(
        "--recall-folds", nargs="+", action="extend", help="cross-fitting: bi-encoders trained the same way"
    )
    p.add_argument("--tags", help="tags.jsonl (default: topic match from the category path)")
    p.add_argument("--num-leaves", type=int, default=3)
    p.add_argument("--rounds", type=int, default=300, help="boosting rounds (the most, with early stopping)")
    p.add_argument("--learning-rate", type=float, default=0.02)
    p.add_argument("--min-data-in-leaf", type=int, default=50)
    p.add_argument(
        "--valid-fraction", type=float, default=0.0, help="share of queries held out to early-stop (0: none)"
    )
    p.add_argument("--early-stopping", type=int, default=30, help="rounds without validation gain before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="model folder to write")
    p.set_defaults(func=cmd_ltr)


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder with products.jsonl and judgments.tsv (esci150 layout)")
    p.add_argument("--judgments", help="judgments file to train on (e.g. train.tsv from `lref distill split`)")
    p.add_argument("--scheme", default="esci", help="label scheme: esci, lref5 or binary")


def _corpus(args):
    from lref.data import load_dir

    return load_dir(args.data, args.judgments, args.scheme)


def cmd_split(args) -> int:
    from lref.data import split_by_query

    corpus = _corpus(args)
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


def cmd_teacher(args) -> int:
    from lref.distill.teacher import candidate_pairs, score_pairs
    from lref.engines.factory import make_engine

    corpus = _corpus(args)
    engine = make_engine(args.model, args.endpoint, args.adapter, args.scheme, args.batch_size, args.served_model)
    pairs = candidate_pairs(corpus, args.top_bm25, args.top_dense)
    stats = score_pairs(engine, corpus, pairs, args.out, args.chunk_size, args.max_product_tokens)
    print(
        f"teacher: {stats['scored']} pairs scored now, {stats['skipped']} already done, {stats['errors']} errors "
        f"({stats['judged']} judged + {stats['augmented']} augmented pairs in all) -> {args.out}"
    )
    return 0


def _student_cfg(args):
    from lref.distill.student import StudentConfig

    gold_weight = args.gold_weight if args.gold_weight is not None else (0.5 if args.teacher else 1.0)
    return StudentConfig(
        base=args.base,
        loss=args.loss,
        gold_weight=gold_weight,
        include_augmented=not args.no_augmented,
        max_length=args.max_length,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        pairs_per_query=args.pairs_per_query,
        list_size=args.list_size,
        **({"pooling": args.pooling} if hasattr(args, "pooling") else {}),
    )


def _examples(args, cfg):
    from lref.distill.student import build_examples, read_teacher

    corpus = _corpus(args)
    teacher = read_teacher(args.teacher) if args.teacher else None
    return corpus, build_examples(corpus, teacher, cfg.gold_weight, cfg.include_augmented)


def cmd_ranker(args) -> int:
    from lref.distill.ranker import train_ranker

    cfg = _student_cfg(args)
    corpus, examples = _examples(args, cfg)
    meta = train_ranker(examples, corpus.products, cfg, args.out)
    h = meta["loss_history"]
    print(
        f"ranker: {meta['n_train_rows']} rows ({meta['n_augmented']} augmented), "
        f"loss {h[0]:.4f} -> {h[-1]:.4f} -> {args.out}"
    )
    return 0


def cmd_recall(args) -> int:
    from lref.data import load_dir
    from lref.distill.recall import BiEncoderStudent, build_index, recall_at_k, train_recall

    cfg = _student_cfg(args)
    corpus, examples = _examples(args, cfg)
    meta = train_recall(examples, corpus.products, cfg, args.out, args.pos_threshold, args.neg_threshold)
    h = meta["loss_history"]
    if args.no_index:
        print(f"recall: {meta['n_triplets']} triplets, loss {h[0]:.4f} -> {h[-1]:.4f} (not indexed) -> {args.out}")
        return 0
    student = BiEncoderStudent(args.out)
    index, ids, emb = build_index(student, corpus.products, Path(args.out) / "index")
    if args.eval_judgments:
        ev = load_dir(args.data, args.eval_judgments, args.scheme)
        ks = tuple(args.k or (10, 50, 100))
        res = {"student": recall_at_k(ev, student, index, ids, emb, ks)}
        zs = BiEncoderStudent(None)
        zemb = zs.embed_products([corpus.products[p] for p in ids])
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


def cmd_ltr(args) -> int:
    from lref.distill.ltr import train_ltr

    corpus = _corpus(args)
    meta = train_ltr(
        corpus,
        args.out,
        ranker=args.ranker,
        recall=args.recall,
        tags=args.tags,
        num_leaves=args.num_leaves,
        rounds=args.rounds,
        learning_rate=args.learning_rate,
        seed=args.seed,
        min_data_in_leaf=args.min_data_in_leaf,
        valid_fraction=args.valid_fraction,
        early_stopping=args.early_stopping,
        ranker_folds=args.ranker_folds,
        recall_folds=args.recall_folds,
    )
    imp = ", ".join(f"{k} {v:.0f}" for k, v in sorted(meta["importance_gain"].items(), key=lambda kv: -kv[1])[:6])
    print(
        f"ltr: {meta['n_rows']} rows, {meta['n_queries']} queries, {meta['params']['rounds']} rounds; "
        f"gain importance: {imp} -> {args.out}"
    )
    return 0
