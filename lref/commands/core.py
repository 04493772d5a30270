"""Core subcommands: init-tiny, score, eval, compare, summary, run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lref.batch.config import RayResumeArgs
from lref.commands.args import Command, arg
from lref.engines.factory import EngineArgs

MODEL_HELP = "model folder or Hub id (with --endpoint: the served model name)"


@dataclass(kw_only=True)
class CorpusArgs:
    """Which judged data a command reads."""

    data: str = arg("folder with products.jsonl and judgments.tsv (esci150 layout)")
    judgments: str | None = arg("another judgments file to use with the folder's products", None)
    scheme: str = arg("label scheme: esci, lref5 or binary", "esci")

    def load(self):
        from lref.data import load_dir

        return load_dir(self.data, self.judgments, self.scheme)


@dataclass(kw_only=True)
class QueryArgs(CorpusArgs):
    """A corpus cut to some queries, for quick runs and held-out splits."""

    queries: int | None = arg("use only the first N queries (by id), for quick runs", None)
    query_ids: str | None = arg("file of query ids (one per line): evaluate only these, e.g. a held-out split", None)

    def load(self):
        corpus = super().load()
        if self.query_ids:
            corpus = corpus.subset(read_query_ids(self.query_ids))
        if self.queries:
            corpus = corpus.subset(corpus.query_ids[: self.queries])
        return corpus


@dataclass(kw_only=True)
class InitTinyArgs:
    out: str = arg("output model folder")
    data: str = arg("data folder with products.jsonl (and queries.tsv)")
    vocab_size: int = arg("tokenizer vocabulary size", 2048)
    hidden_size: int = arg("hidden size (head_dim = hidden / heads stays >= 64)", 64)
    layers: int = arg("transformer layers", 2)
    heads: int = arg("attention heads", 1)
    seed: int = arg("seed of the random weights", 0)


@dataclass(kw_only=True)
class ScoreArgs(RayResumeArgs, QueryArgs, EngineArgs):
    model: str = arg(MODEL_HELP)
    out: str = arg("scores.jsonl to write (with --ray: a folder of Parquet shards)")


@dataclass(kw_only=True)
class EvalArgs(QueryArgs, EngineArgs):
    scorer: Literal["bm25", "llm", "llm-cot", "cross-encoder", "bi-encoder", "ltr"] = arg(
        "llm-cot: rationale, then the answer slot; cross-encoder/bi-encoder/ltr: students from lref distill", "bm25"
    )
    max_new_tokens: int = arg("rationale length for --scorer llm-cot", 96)
    name: str | None = arg("run name shown in comparisons (default: the scorer)", None)
    int8: bool = arg("cross-encoder / ltr: run the cross-encoder with int8 linear layers (CPU)", False)
    perturb: Literal["stuffing", "injection", "chat-template"] | None = arg(
        "also score with seller-written attacks on irrelevant products: the query's words appended to the title "
        "(stuffing), an 'exact match' instruction in the description (injection), or a chat-template answer in "
        "the title; the report adds the nDCG@10 change and the share of attacked products moved into the top 10",
        None,
    )
    perturb_seed: int = arg("seed that picks the attacked products (the same for every scorer)", 0)
    perturb_per_query: int = arg("irrelevant products attacked per query", 1)
    out: str = arg("run folder for metrics.json, scores.jsonl, report.md, plots")


@dataclass(kw_only=True)
class CompareArgs:
    runs: list[str] = arg("run folders holding metrics.json", nargs="+", positional=True)
    out: str | None = arg("write the table here (markdown) and a PNG beside it", None)


@dataclass(kw_only=True)
class SummaryArgs:
    runs: list[str] = arg("eval run folders holding metrics.json, in table order", nargs="+", positional=True)
    out: str = arg("the pipeline's run folder: summary.md and summary.png go here, its PNG reports are listed")
    judge: str | None = arg("the judge's base model (a tiny `lref init-tiny` model is flagged as random)", None)
    data: str = arg("data folder, spelt into the real-model commands", "DATA")
    query_ids: str = arg("held-out query ids file, spelt into the real-model commands", "HOLDOUT")


@dataclass(kw_only=True)
class RunArgs:
    recipe: str = arg("recipe YAML", positional=True)
    out: str = arg("run folder")
    set: list[str] = arg("override a recipe value (repeatable)", [], action="append", metavar="KEY=VALUE")


def read_query_ids(path: str | Path) -> list[str]:
    from lref.data import DataError

    path = Path(path)
    if not path.exists():
        raise DataError("query id file not found", path)
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError("query id file is empty", path)
    return ids


def _engine(args: EngineArgs):
    return args.engine(args.scheme)


def cmd_init_tiny(args: InitTinyArgs) -> int:
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


def cmd_score(args: ScoreArgs) -> int:
    from lref.data import write_jsonl
    from lref.engines.judge import LLMScorer

    corpus = args.load()
    if args.ray:
        return cmd_score_ray(args, corpus)
    scorer = LLMScorer(_engine(args), args.max_product_tokens)
    results = scorer.score(corpus, progress=True)
    rows = [
        {"query_id": j.query_id, "product_id": j.product_id, "gold_label": j.label, "grade": j.grade, **r}
        for j, r in zip(corpus.judgments, results, strict=True)
    ]
    write_jsonl(Path(args.out), rows)
    print(f"scored {len(rows)} pairs -> {args.out}")
    return 0


def cmd_score_ray(args: ScoreArgs, corpus) -> int:
    """`lref score --ray`: the judged pairs through the same engine in Ray actors, into a folder of Parquet shards."""
    import functools

    from lref.batch.config import RayConfig
    from lref.batch.ray_job import run_pairs

    pairs = [
        {"query_id": j.query_id, "query": j.query, "product_id": j.product_id, "gold_label": j.label, "grade": j.grade}
        for j in corpus.judgments
    ]
    make = functools.partial(_engine, args)
    s = run_pairs(make, pairs, corpus.products, args.out, RayConfig.from_args(args), "score", args.max_product_tokens)
    print(f"scored {s['rows']} pairs ({s['errors']} errors -> {s['errors_dir']}) in {s['seconds']} s -> {args.out}")
    return 0


def cmd_eval(args: EvalArgs) -> int:
    from lref.eval.harness import evaluate

    corpus = args.load()
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
    m = evaluate(
        corpus,
        scorer,
        args.out,
        name=args.name,
        perturb=args.perturb,
        perturb_seed=args.perturb_seed,
        perturb_per_query=args.perturb_per_query,
    )
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"{m['name']}: nDCG@10 {fmt(m['ndcg@10'])} (random {fmt(m.get('ndcg@10_random'))}), "
        f"accuracy {fmt(m['accuracy'])}, macro-F1 {fmt(m['macro_f1'])}, "
        f"over-grading {fmt(m['over_grading_rate'])} over {m['n_pairs']} pairs, {m['n_queries']} queries -> {args.out}"
    )
    if args.perturb:
        r = m["robustness"]
        share = "n/a" if r["share_into_top10"] is None else f"{r['share_into_top10']:.1%}"
        print(
            f"{args.perturb}: nDCG@10 {fmt(r['ndcg@10_clean'])} -> {fmt(r['ndcg@10_perturbed'])} "
            f"({r['ndcg@10_change']:+.4f}); {r['moved_into_top10']} of {r['n_outside_top10_clean']} attacked "
            f"irrelevant products moved into the top 10 ({share})"
        )
    return 0


def cmd_compare(args: CompareArgs) -> int:
    from lref.eval.report import compare_runs, plot_comparison

    table = compare_runs([Path(r) for r in args.runs])
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n", encoding="utf-8")
        plot_comparison([Path(r) for r in args.runs], out.with_suffix(".png"))
    return 0


def cmd_summary(args: SummaryArgs) -> int:
    from lref.eval.summary import write_summary

    text = write_summary([Path(r) for r in args.runs], Path(args.out), args.judge, args.data, args.query_ids)
    print(text, end="")
    print(f"-> {Path(args.out) / 'summary.md'}")
    return 0


def duration(seconds: float) -> str:
    """45s, 3m05s, 1h02m: a duration a person reads at a glance."""
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


RUN_DEPTH = [0]  # how many `lref run` are running inside each other: a nested recipe's lines are indented


def print_stage(event, indent: str = "") -> None:
    """One progress line per stage start (`stage i/N name`, elapsed, left) and end (its time)."""
    left = "" if event.remaining is None else f", about {duration(event.remaining)} left"
    if event.seconds is None:
        line = f"stage {event.index}/{event.total} {event.name} (elapsed {duration(event.elapsed)}{left})"
    else:
        if event.index == event.total:
            left = f"; the run took {duration(event.elapsed)}"
        line = f"stage {event.index}/{event.total} {event.name} done in {duration(event.seconds)}{left}"
    print(indent + line, flush=True)


def cmd_run(args: RunArgs) -> int:
    from lref.recipe import run_recipe

    indent = "  " * RUN_DEPTH[0]
    RUN_DEPTH[0] += 1
    try:
        run_recipe(args.recipe, args.out, args.set, on_stage=lambda e: print_stage(e, indent))
    finally:
        RUN_DEPTH[0] -= 1
    return 0


COMMANDS = [
    Command("init-tiny", InitTinyArgs, cmd_init_tiny, "train a local tokenizer and save a tiny random Qwen2 model"),
    Command("score", ScoreArgs, cmd_score, "score query-product pairs with a causal LM (one forward pass each)"),
    Command("eval", EvalArgs, cmd_eval, "evaluate a scorer on graded judgments and write a report"),
    Command("compare", CompareArgs, cmd_compare, "put several eval runs side by side", config_file=False),
    Command(
        "summary",
        SummaryArgs,
        cmd_summary,
        "one table of every scorer of a run, its PNG reports and what the judge's rows mean",
        config_file=False,
    ),
    Command("run", RunArgs, cmd_run, "run a multi-stage YAML recipe", config_file=False),
]


if __name__ == "__main__":
    from lref.cli import main

    sys.exit(main())
