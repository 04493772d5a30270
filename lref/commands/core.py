"""Core subcommands: init-tiny, score, eval, compare, run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser("init-tiny", help="train a local tokenizer and save a tiny random Qwen2 model")
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--data", required=True, help="data folder with products.jsonl (and queries.tsv)")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init_tiny)

    p = sub.add_parser("score", help="score query-product pairs with a causal LM (one forward pass each)")
    p.add_argument("--config", help="YAML file of these flags")
    _data_args(p)
    _model_args(p, required=True)
    p.add_argument("--out", required=True, help="scores.jsonl to write")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("eval", help="evaluate a scorer on graded judgments and write a report")
    p.add_argument("--config", help="YAML file of these flags")
    _data_args(p)
    p.add_argument(
        "--scorer",
        choices=["bm25", "llm", "llm-cot", "cross-encoder", "bi-encoder", "ltr"],
        default="bm25",
        help="llm-cot: rationale, then the answer slot; cross-encoder/bi-encoder/ltr: students from lref distill",
    )
    p.add_argument("--max-new-tokens", type=int, default=96, help="rationale length for --scorer llm-cot")
    _model_args(p, required=False)
    p.add_argument("--name", help="run name shown in comparisons (default: the scorer)")
    p.add_argument(
        "--int8", action="store_true", help="cross-encoder / ltr: run the cross-encoder with int8 linear layers (CPU)"
    )
    p.add_argument("--out", required=True, help="run folder for metrics.json, scores.jsonl, report.md, plots")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="put several eval runs side by side")
    p.add_argument("runs", nargs="+", help="run folders holding metrics.json")
    p.add_argument("--out", help="write the table here (markdown) and a PNG beside it")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("run", help="run a multi-stage YAML recipe")
    p.add_argument("recipe", help="recipe YAML")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    p.set_defaults(func=cmd_run)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder with products.jsonl and judgments.tsv (esci150 layout)")
    p.add_argument("--judgments", help="another judgments file to use with the folder's products")
    p.add_argument("--scheme", default="esci", help="label scheme: esci, lref5 or binary")
    p.add_argument("--queries", type=int, help="use only the first N queries (by id), for quick runs")
    p.add_argument("--query-ids", help="file of query ids (one per line): evaluate only these, e.g. a held-out split")


def _model_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--model", required=required, help="model folder or Hub id (with --endpoint: the served model name)"
    )
    p.add_argument("--adapter", help="LoRA adapter folder")
    p.add_argument("--endpoint", help="score through an OpenAI-compatible server at this URL (vLLM or `lref serve`)")
    p.add_argument("--api-key", help="the server's API key (default: $OPENAI_API_KEY)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-product-tokens", type=int, default=256)


def _corpus(args):
    from lref.data import load_dir

    corpus = load_dir(args.data, args.judgments, args.scheme)
    if args.query_ids:
        from lref.commands.train import read_query_ids

        corpus = corpus.subset(read_query_ids(args.query_ids))
    if args.queries:
        corpus = corpus.subset(corpus.query_ids[: args.queries])
    return corpus


def _engine(args):
    from lref.engines.factory import make_engine

    endpoint = getattr(args, "endpoint", None)
    return make_engine(args.model, endpoint, args.adapter, args.scheme, args.batch_size, api_key=args.api_key)


def cmd_init_tiny(args) -> int:
    from lref.models import init_tiny

    out = init_tiny(
        args.out,
        args.data,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads,
        seed=args.seed,
    )
    print(f"tiny model saved to {out}")
    return 0


def cmd_score(args) -> int:
    from lref.data import write_jsonl
    from lref.engines.judge import LLMScorer

    corpus = _corpus(args)
    scorer = LLMScorer(_engine(args), args.max_product_tokens)
    results = scorer.score(corpus, progress=True)
    rows = [
        {"query_id": j.query_id, "product_id": j.product_id, "gold_label": j.label, "grade": j.grade, **r}
        for j, r in zip(corpus.judgments, results, strict=True)
    ]
    write_jsonl(Path(args.out), rows)
    print(f"scored {len(rows)} pairs -> {args.out}")
    return 0


def cmd_eval(args) -> int:
    from lref.eval.harness import evaluate

    corpus = _corpus(args)
    if args.scorer == "bm25":
        from lref.rag.bm25 import BM25Scorer

        scorer = BM25Scorer()
    elif args.scorer in ("cross-encoder", "ltr"):  # students from `lref distill`
        if not args.model:
            raise FileNotFoundError(f"--scorer {args.scorer} needs --model (a folder from lref distill)")
        if args.scorer == "cross-encoder":
            from lref.distill.ranker import CrossEncoderStudent

            scorer = CrossEncoderStudent(args.model, int8=args.int8)
        else:
            from lref.distill.ltr import LTRModel

            scorer = LTRModel.load(args.model, int8=args.int8)
    elif args.scorer == "bi-encoder":  # no --model: zero-shot MiniLM
        from lref.distill.recall import BiEncoderStudent

        scorer = BiEncoderStudent(args.model)
    else:
        if not args.model:
            raise FileNotFoundError("--scorer llm needs --model (a model folder or Hub id)")
        from lref.engines.judge import LLMScorer

        scorer = LLMScorer(_engine(args), args.max_product_tokens)
        if args.scorer == "llm-cot":
            from lref.train.mcot import CoTScorer

            scorer = CoTScorer(scorer.engine, args.max_product_tokens, args.max_new_tokens)
    m = evaluate(corpus, scorer, args.out, name=args.name)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"{m['name']}: nDCG@10 {fmt(m['ndcg@10'])} (random {fmt(m.get('ndcg@10_random'))}), "
        f"accuracy {fmt(m['accuracy'])}, macro-F1 {fmt(m['macro_f1'])}, "
        f"over-grading {fmt(m['over_grading_rate'])} over {m['n_pairs']} pairs, {m['n_queries']} queries -> {args.out}"
    )
    return 0


def cmd_compare(args) -> int:
    from lref.eval.report import compare_runs, plot_comparison

    table = compare_runs([Path(r) for r in args.runs])
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n", encoding="utf-8")
        plot_comparison([Path(r) for r in args.runs], out.with_suffix(".png"))
    return 0


def cmd_run(args) -> int:
    from lref.recipe import run_recipe

    run_recipe(args.recipe, args.out, args.set)
    return 0


if __name__ == "__main__":
    from lref.cli import main

    sys.exit(main())
