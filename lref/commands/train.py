"""Training subcommands: select, sft, mcot, dpo, and ablation (the per-stage table of a pipeline run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser("select", help="select SFT training pairs (IM/CI/MS, uncertainty, diversity, balance)")
    p.add_argument("--config", help="YAML file of these flags")
    _data_args(p)
    p.add_argument("--model", help="base model for the IM/CI/MS judges and the uncertainty selector")
    p.add_argument("--methods", default="imcims,uncertainty,diversity,balance", help="comma list, in priority order")
    p.add_argument("--budget", type=float, default=0.5, help="a fraction (<=1) or a row count (>1)")
    p.add_argument("--uncertainty", default="entropy", choices=["entropy", "margin"])
    p.add_argument("--judge-steps", type=int, default=60, help="training steps of each IM/CI/MS judge")
    p.add_argument("--judge-fraction", type=float, default=0.3, help="sample size of each judge, share of the pool")
    p.add_argument("--frequency-column", help="query traffic column for head/torso/tail (default: rows per query)")
    p.add_argument("--diversity-pool", type=int, default=2000, help="k-center candidates (random subset)")
    p.add_argument("--confusion-model", help="teacher model whose best wrong label is the MS confusion")
    p.add_argument("--holdout", type=float, default=0.0, help="hold out this share of queries for evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for selected.jsonl, summary.json and the query splits")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("sft", help="supervised fine-tuning (TRL SFTTrainer, LoRA or full)")
    _train_args(p)
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("mcot", help="Multi-CoT: build EE/RA/DR rationales with a teacher and tune in sequence")
    _train_args(p)
    p.add_argument("--teacher", default="attributes", choices=["attributes", "openai"])
    p.add_argument("--teacher-url", help="OpenAI-compatible base URL (teacher openai)")
    p.add_argument("--teacher-model", help="model name at the teacher endpoint")
    p.add_argument("--rules", help="rules file for RA-CoT (default: lref.prompts.DEFAULT_RULES)")
    p.add_argument("--kinds", default="ee,ra,dr", help="CoT kinds in tuning order")
    p.add_argument("--max-rows", type=int, help="rationales per kind (first N training rows)")
    p.set_defaults(func=cmd_mcot)

    p = sub.add_parser("dpo", help="DPO de-biasing on mined over-graded answers (TRL DPOTrainer)")
    _train_args(p)
    p.add_argument("--loss-type", action="append", help="TRL DPO loss type(s): sigmoid, ipo, robust, hinge, ...")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--mine", default="rank", choices=["rank", "top"], help="which over-grades to mine")
    p.add_argument("--min-prob", type=float, default=0.0)
    p.add_argument("--max-pairs", type=int)
    p.set_defaults(func=cmd_dpo)

    p = sub.add_parser("ablation", help="table, JSON and plot of eval runs by pipeline stage")
    p.add_argument("runs", nargs="+", help="STAGE=RUN_DIR pairs (run folders of `lref eval`)")
    p.add_argument("--out", required=True, help="folder for ablation.json, ablation.md and ablation.png")
    p.set_defaults(func=cmd_ablation)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder with products.jsonl and judgments.tsv (esci150 layout)")
    p.add_argument("--judgments", help="another judgments file to use with the folder's products")
    p.add_argument("--scheme", default="esci", help="label scheme: esci, lref5 or binary")
    p.add_argument("--query-ids", help="file of query ids (one per line) to use")
    p.add_argument("--max-product-tokens", type=int, default=256)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of these flags")
    _data_args(p)
    p.add_argument("--train", help="training rows (JSONL from `lref select`); default: every pair of --data")
    p.add_argument("--model", required=True, help="model folder or Hub id to start from")
    p.add_argument("--adapter", help="a previous stage's LoRA adapter, merged in before training")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True, help="LoRA (default) or full FT")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True, help="padding-free BFD packing")
    p.add_argument("--save-steps", type=int, default=50)
    p.add_argument("--eval-query-ids", help="query ids of the validation split (eval at each epoch end)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="stage folder: model/, adapter/, checkpoints/, metrics.jsonl")


def read_query_ids(path: str | Path) -> list[str]:
    from lref.data import DataError

    path = Path(path)
    if not path.exists():
        raise DataError("query id file not found", path)
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError("query id file is empty", path)
    return ids


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

    held = set(read_query_ids(args.eval_query_ids)) if getattr(args, "eval_query_ids", None) else set()
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


def _overrides(args, kind: str = "sft") -> dict:
    kw = dict(
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_length=args.max_length,
        save_steps=args.save_steps,
        seed=args.seed,
    )
    if kind == "sft":
        kw["packing"] = args.packing
    return kw


def _lora(args):
    from lref.train.stage import LoraSpec

    return LoraSpec(enabled=args.lora, r=args.lora_r, alpha=args.lora_alpha)


def _eval_corpus(args):
    return _corpus(args, args.eval_query_ids) if args.eval_query_ids else None


def _evaluate(args):
    """The stage's evaluation: harness metrics on the --eval-query-ids split, or None without one."""
    from lref.commands.stage_eval import harness_evaluator

    return harness_evaluator(_eval_corpus(args), args.eval_batch_size, args.max_product_tokens)


def cmd_select(args) -> int:
    from lref.data import split_by_query, to_records
    from lref.train.selection import SelectionSpec, score_probs, select
    from lref.train.sft import write_records

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
    spec = SelectionSpec(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        budget=args.budget,
        uncertainty_kind=args.uncertainty,
        judge_fraction=args.judge_fraction,
        judge_steps=args.judge_steps,
        frequency_column=args.frequency_column,
        diversity_pool=args.diversity_pool,
        seed=args.seed,
    )
    teacher = score_probs(args.confusion_model, records, corpus.scheme) if args.confusion_model else None
    rows, summary = select(records, corpus.scheme, spec, args.model, out / "judges", teacher)
    write_records(out / "selected.jsonl", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"selected {len(rows)} of {len(records)} pairs {summary['by_method']} -> {out / 'selected.jsonl'}")
    return 0


def cmd_sft(args) -> int:
    from lref.train.sft import read_conversations, sft_config, sft_dataset, train_sft

    tok = _tokenizer(args.model)
    scheme = _corpus_scheme(args)
    conversations = read_conversations(args.train) if args.train else None
    if conversations is not None:  # prompt/completion rows as they are (e.g. `lref tagger-data`)
        import datasets

        dataset = datasets.Dataset.from_list(conversations)
    else:
        dataset = sft_dataset(_records(args, tok), scheme, tok)
    summary = train_sft(
        args.model,
        dataset,
        args.out,
        sft_config(args.out, **_overrides(args)),
        _lora(args),
        args.adapter,
        evaluate=_evaluate(args),
    )
    print(f"sft: {summary['steps']} steps, train loss {summary['train_loss']:.4f} -> {summary['model']}")
    return 0


def cmd_mcot(args) -> int:
    from lref.train.mcot import AttributeTeacher, OpenAITeacher, train_mcot

    tok = _tokenizer(args.model)
    scheme = _corpus_scheme(args)
    records = _records(args, tok)
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
    summary = train_mcot(
        args.model,
        records,
        scheme,
        args.out,
        teacher,
        products,
        [k.strip() for k in args.kinds.split(",") if k.strip()],
        _overrides(args),
        _lora(args),
        args.adapter,
        rules,
        evaluate=_evaluate(args),
    )
    kept = {k: (v.get("kept"), v.get("dropped_disagree")) for k, v in summary["kinds"].items()}
    print(f"mcot: (kept, dropped) per kind {kept} -> {summary['model']}")
    return 0


def cmd_dpo(args) -> int:
    from lref.train.dpo import dpo_config, train_dpo

    tok = _tokenizer(args.model)
    scheme = _corpus_scheme(args)
    records = _records(args, tok)
    cfg = _overrides(args, "dpo")
    cfg.update(beta=args.beta, loss_type=args.loss_type or ["sigmoid"])
    summary = train_dpo(
        args.model,
        records,
        scheme,
        args.out,
        dpo_config(args.out, **cfg),
        _lora(args),
        args.adapter,
        evaluate=_evaluate(args),
        mode=args.mine,
        min_prob=args.min_prob,
        max_pairs=args.max_pairs,
        batch_size=args.eval_batch_size,
    )
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


def cmd_ablation(args) -> int:
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
