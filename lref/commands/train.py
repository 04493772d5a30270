"""Training subcommands: select, sft, mcot, dpo, and ablation (the per-stage table of a pipeline run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from lref.commands.args import Command, arg, fill
from lref.commands.core import CorpusArgs, read_query_ids
from lref.train.args import DpoStageArgs, StageArgs


@dataclass(kw_only=True)
class TrainCorpusArgs(CorpusArgs):
    """The data of the training commands (optional: `--train` rows may stand in for it)."""

    command: ClassVar[str] = "select"
    data: str | None = arg("folder with products.jsonl and judgments.tsv (esci150 layout)", None)
    query_ids: str | None = arg("file of query ids (one per line) to use", None)
    max_product_tokens: int = arg("product text is cut to this many tokens in the prompt", 256)


@dataclass(kw_only=True)
class SelectArgs(TrainCorpusArgs):
    model: str | None = arg("base model for the IM/CI/MS judges and the uncertainty selector", None)
    methods: str = arg("comma list, in priority order", "imcims,uncertainty,diversity,balance")
    budget: float = arg("a fraction (<=1) or a row count (>1)", 0.5)
    uncertainty: Literal["entropy", "margin"] = arg("uncertainty measure of the judge's label distribution", "entropy")
    judge_steps: int = arg("training steps of each IM/CI/MS judge", 60)
    judge_fraction: float = arg("sample size of each judge, share of the pool", 0.3)
    frequency_column: str | None = arg("query traffic column for head/torso/tail (default: rows per query)", None)
    diversity_pool: int = arg("k-center candidates (random subset)", 2000)
    confusion_model: str | None = arg("teacher model whose best wrong label is the MS confusion", None)
    holdout: float = arg("hold out this share of queries for evaluation", 0.0)
    seed: int = arg("seed of the hold-out split and the samplers", 0)
    out: str = arg("folder for selected.jsonl, summary.json and the query splits")


@dataclass(kw_only=True)
class SftArgs(TrainCorpusArgs, StageArgs):
    command: ClassVar[str] = "sft"
    train: str | None = arg("training rows (JSONL from `lref select`); default: every pair of --data", None)
    eval_query_ids: str | None = arg("query ids of the validation split (eval at each epoch end)", None)


@dataclass(kw_only=True)
class McotArgs(SftArgs):
    command: ClassVar[str] = "mcot"
    teacher: Literal["attributes", "openai"] = arg(
        "who writes the rationales: the offline attribute matcher or an OpenAI-compatible model", "attributes"
    )
    teacher_url: str | None = arg("OpenAI-compatible base URL (teacher openai)", None)
    teacher_model: str | None = arg("model name at the teacher endpoint", None)
    rules: str | None = arg("rules file for RA-CoT (default: lref.prompts.DEFAULT_RULES)", None)
    kinds: str = arg("CoT kinds in tuning order", "ee,ra,dr")
    max_rows: int | None = arg("rationales per kind (first N training rows)", None)


@dataclass(kw_only=True)
class DpoArgs(SftArgs, DpoStageArgs):
    command: ClassVar[str] = "dpo"


@dataclass(kw_only=True)
class AblationArgs:
    runs: list[str] = arg("STAGE=RUN_DIR pairs (run folders of `lref eval`)", nargs="+", positional=True)
    out: str = arg("folder for ablation.json, ablation.md and ablation.png")


def _corpus(args, ids_file: str | None = None):
    from lref.config import ConfigError
    from lref.data import load_dir

    if not args.data:
        raise ConfigError(f"lref {args.command} needs --data (a folder with products.jsonl and judgments.tsv)")
    corpus = load_dir(args.data, args.judgments, args.scheme)
    ids_file = ids_file or args.query_ids
    if ids_file:
        corpus = corpus.subset(read_query_ids(ids_file))
    return corpus


def _tokenizer(model: str):
    from lref.models import load_tokenizer

    return load_tokenizer(model)


def _records(args, tok):
    from lref.data import to_records
    from lref.train.sft import read_records

    held = set(read_query_ids(args.eval_query_ids)) if args.eval_query_ids else set()
    if args.train:
        records = read_records(args.train)
        leak = {str(r.get("query_id")) for r in records} & held
        if leak:
            from lref.config import ConfigError

            raise ConfigError(
                f"{args.train}: {len(leak)} training queries are also in --eval-query-ids {args.eval_query_ids} "
                f"(e.g. {sorted(leak)[:3]}); evaluate on queries the stage does not train on"
            )
        return records
    corpus = _corpus(args)
    if held:  # train on every pair of --data except the queries it is evaluated on
        corpus = corpus.subset([q for q in corpus.query_ids if q not in held])
    return to_records(corpus, args.max_product_tokens, tok)


def _eval_corpus(args):
    return _corpus(args, args.eval_query_ids) if args.eval_query_ids else None


def _evaluate(args):
    """The stage's evaluation: harness metrics on the --eval-query-ids split, or None without one."""
    from lref.commands.stage_eval import harness_evaluator

    return harness_evaluator(_eval_corpus(args), args.eval_batch_size, args.max_product_tokens)


def cmd_select(args: SelectArgs) -> int:
    from lref.data import split_by_query, to_records, write_jsonl
    from lref.train.selection import SelectionSpec, score_probs, select

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(args)
    if args.holdout > 0:
        split = split_by_query(corpus.query_ids, {"train": 1 - args.holdout, "holdout": args.holdout}, args.seed)
        (out / "holdout_queries.txt").write_text("\n".join(split["holdout"]) + "\n", encoding="utf-8")
        (out / "train_queries.txt").write_text("\n".join(split["train"]) + "\n", encoding="utf-8")
        corpus = corpus.subset(split["train"])
    tok = _tokenizer(args.model) if args.model else None
    records = to_records(corpus, args.max_product_tokens, tok)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    spec = fill(SelectionSpec, args, methods=methods, uncertainty_kind=args.uncertainty)
    teacher = score_probs(args.confusion_model, records, corpus.scheme) if args.confusion_model else None
    rows, summary = select(records, corpus.scheme, spec, args.model, out / "judges", teacher)
    write_jsonl(out / "selected.jsonl", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"selected {len(rows)} of {len(records)} pairs {summary['by_method']} -> {out / 'selected.jsonl'}")
    return 0


def cmd_sft(args: SftArgs) -> int:
    from lref.train.args import run_sft
    from lref.train.sft import read_conversations, sft_dataset

    tok = _tokenizer(args.model)
    scheme = _corpus_scheme(args)
    conversations = read_conversations(args.train) if args.train else None
    if conversations is not None:  # prompt/completion rows as they are (e.g. `lref tagger-data`)
        import datasets

        dataset = datasets.Dataset.from_list(conversations)
    else:
        dataset = sft_dataset(_records(args, tok), scheme, tok)
    summary = run_sft(args, dataset, _evaluate(args))
    print(f"sft: {summary['steps']} steps, train loss {summary['train_loss']:.4f} -> {summary['model']}")
    return 0


def cmd_mcot(args: McotArgs) -> int:
    from lref.train.args import run_mcot
    from lref.train.mcot import AttributeTeacher, OpenAITeacher

    _, scheme, records = _stage_inputs(args)
    if args.max_rows:
        records = records[: args.max_rows]
    rules = Path(args.rules).read_text(encoding="utf-8") if args.rules else None
    if args.teacher == "openai":
        if not (args.teacher_url and args.teacher_model):
            from lref.config import ConfigError

            raise ConfigError("--teacher openai needs --teacher-url and --teacher-model")
        teacher = OpenAITeacher(args.teacher_url, args.teacher_model, rules=rules)
    else:
        teacher = AttributeTeacher(rules)
    products = _corpus(args).products
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    summary = run_mcot(
        args, records, scheme, teacher, products=products, kinds=kinds, rules=rules, evaluate=_evaluate(args)
    )
    kept = {k: (v.get("kept"), v.get("dropped_disagree")) for k, v in summary["kinds"].items()}
    print(f"mcot: (kept, dropped) per kind {kept} -> {summary['model']}")
    return 0


def cmd_dpo(args: DpoArgs) -> int:
    from lref.train.args import run_dpo

    _, scheme, records = _stage_inputs(args)
    summary = run_dpo(args, records, scheme, _evaluate(args))
    msg = f"dpo: {summary['pairs']} over-graded pairs of {summary['pool']}, {summary['steps']} steps"
    if not summary.get("train_loss") and summary["steps"] == 0:
        msg += " (nothing to de-bias: model passed through)"
    if "before" in summary and "after" in summary:
        b, a = summary["before"], summary["after"]
        msg += (
            f"; over-grading {b['over_grading_rate']:.4f} -> {a['over_grading_rate']:.4f}, "
            f"under-grading {b['under_grading_rate']:.4f} -> {a['under_grading_rate']:.4f}"
        )
    print(f"{msg} -> {summary['model']}")
    return 0


def _corpus_scheme(args):
    from lref.labels import get_scheme

    return get_scheme(args.scheme)


def _stage_inputs(args: SftArgs):
    """(tokenizer, label scheme, training records) of a training stage's flags."""
    tok = _tokenizer(args.model)
    return tok, _corpus_scheme(args), _records(args, tok)


def cmd_ablation(args: AblationArgs) -> int:
    from lref.eval.ablation import write_ablation

    pairs = []
    for item in args.runs:
        if "=" not in item:
            raise FileNotFoundError(f"ablation run {item!r} must look like STAGE=RUN_DIR")
        stage, run = item.split("=", 1)
        pairs.append((stage, Path(run)))
    table = write_ablation(pairs, Path(args.out))
    print(table)
    return 0


COMMANDS = [
    Command("select", SelectArgs, cmd_select, "select SFT training pairs (IM/CI/MS, uncertainty, diversity, balance)"),
    Command("sft", SftArgs, cmd_sft, "supervised fine-tuning (TRL SFTTrainer, LoRA or full)"),
    Command("mcot", McotArgs, cmd_mcot, "Multi-CoT: build EE/RA/DR rationales with a teacher and tune in sequence"),
    Command("dpo", DpoArgs, cmd_dpo, "DPO de-biasing on mined over-graded answers (TRL DPOTrainer)"),
    Command(
        "ablation",
        AblationArgs,
        cmd_ablation,
        "table, JSON and plot of eval runs by pipeline stage",
        config_file=False,
    ),
]
