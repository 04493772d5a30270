"""Tagging esci150 with --llm none: the single-process job against the Ray Data job with 1 and 2 actors.

Builds a store from N_INDEX esci150 products (category paths as exemplar tags), writes N_TAG other products
to a JSONL file, then in the same run tags it with `tagging.batch.run_batch` (one process, one thread) and
with `lref.batch.run_tagging` on a local Ray cluster with 1 and with 2 actors (1 CPU, 1 thread each; the
cluster is started once, before the timings, as on a standing cluster; actor start-up and model loading
are inside them). Prints products/s, the ratios against the targets (1 actor >= 0.8x single process,
2 actors >= 1.5x 1 actor), the same after start-up (`steady`: rows over the wall time less the start-up,
measured as the same job over one product), the load average, and the driver's commit rate (outcomes/s
one driver decodes and writes).

The on-disk embedding cache is off for every contender (`--embed-cache on` keeps it): with it on, the first
job embeds the products and the later ones only read the vectors back, which made Ray look 3.7x faster than
the single process in a first quiet run.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/bench_ray.py [--n-index 2000] [--n-tag 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_tagger(store_dir: str):
    from lref.rag.store import Store
    from lref.tagging.tagger import Tagger
    from lref.tagging.taxonomy import Taxonomy

    return Tagger(Taxonomy.load(Path(store_dir) / "taxonomy.yaml"), Store(store_dir))


def driver_commit_rate(tmp: Path, n: int = 20000) -> float:
    """Outcomes per second the driver decodes and commits (no model): the ceiling of one driver."""
    from lref.batch.jobs import TagJob
    from lref.batch.ray_job import Collector
    from lref.batch.shards import Shard

    row = {"product_id": "", "topic": ["A", "A > B"], "style": ["s"], "quality": {"q": {"level": "ok", "reasons": []}}}
    row |= {"confidence": {"topic:A": 0.9}, "evidence": {"exemplars": ["x"] * 5}, "model": "retrieval", "version": "1"}
    shards = [Shard(name=f"s{k}", file="mem", n_rows=n // 10) for k in range(10)]
    col = Collector(tmp / "commit", shards, TagJob(make_tagger), set())
    t = time.perf_counter()
    for k in range(10):
        for i in range(n // 10):
            res = json.dumps({**row, "product_id": f"{k}-{i}"})
            col.add({"shard": f"s{k}", "line": i + 1, "result": res, "product_id": f"{k}-{i}", "reason": None})
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/esci150"))
    ap.add_argument("--n-index", type=int, default=2000)
    ap.add_argument("--n-tag", type=int, default=2000, help="products tagged by each contender")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--embed-cache", choices=["off", "on"], default="off", help="the on-disk embedding cache")
    args = ap.parse_args()
    if args.embed_cache == "off":
        os.environ["LREF_EMBED_CACHE"] = "off"  # before lref loads; Ray's local workers inherit it too

    import ray
    import torch

    torch.set_num_threads(1)
    from lref.batch.config import RayConfig
    from lref.batch.ray_job import run_tagging
    from lref.data import load_products
    from lref.rag.store import Store
    from lref.tagging.batch import run_batch
    from lref.tagging.tagger import build_index
    from lref.tagging.taxonomy import build_from_products

    products = [p for p in load_products(Path(args.data) / "products.jsonl").values() if p.category]
    index, query = products[: args.n_index], products[args.n_index : args.n_index + args.n_tag]
    res: dict = {"n_index": len(index), "n_tag": len(query), "batch_size": args.batch_size}
    res["embed_cache"] = args.embed_cache
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        tax = build_from_products([p.category for p in index])
        build_index(Store(d / "store"), tax, index)
        tax.save(d / "store" / "taxonomy.yaml")
        src = d / "products.jsonl"
        with src.open("w", encoding="utf-8") as f:
            for p in query:
                f.write(json.dumps(p.to_dict()) + "\n")

        tagger = make_tagger(str(d / "store"))
        t = time.perf_counter()
        s = run_batch(tagger, src, d / "single" / "tags.jsonl", batch_size=args.batch_size, progress=False)
        res["single_products_per_s"] = round(s["tagged"] / (time.perf_counter() - t), 2)

        t = time.perf_counter()
        env = {"env_vars": {"LREF_EMBED_CACHE": os.environ.get("LREF_EMBED_CACHE", "")}}
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1", runtime_env=env
        )
        res["ray_start_s"] = round(time.perf_counter() - t, 2)
        one = d / "one.jsonl"
        one.write_text(src.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        for n in (1, 2):
            chunk = max(1, len(query) // (4 * n))  # a few read chunks per actor, so the work spreads
            cfg = RayConfig(concurrency=n, batch_size=args.batch_size, chunk_rows=chunk, progress=False)
            # start-up alone: the same job over one product (actors built, models loaded, one batch)
            t = time.perf_counter()
            run_tagging(lambda: make_tagger(str(d / "store")), one, d / f"probe{n}", cfg)  # noqa: B023
            startup = time.perf_counter() - t
            t = time.perf_counter()
            s = run_tagging(lambda: make_tagger(str(d / "store")), src, d / f"ray{n}", cfg)  # noqa: B023
            wall = time.perf_counter() - t
            res[f"ray_{n}_actor_products_per_s"] = round(s["rows"] / wall, 2)
            # the rate a long job approaches: rows over the wall time less the start-up measured above
            res[f"ray_{n}_actor_startup_s"] = round(startup, 2)
            res[f"ray_{n}_actor_steady_products_per_s"] = round(s["rows"] / max(wall - startup, 1e-9), 2)
        ray.shutdown()
        res["driver_commit_outcomes_per_s"] = round(driver_commit_rate(d))
    res["ratio_1_actor_vs_single"] = round(res["ray_1_actor_products_per_s"] / res["single_products_per_s"], 3)
    res["ratio_2_vs_1_actor"] = round(res["ray_2_actor_products_per_s"] / res["ray_1_actor_products_per_s"], 3)
    steady1, steady2 = res["ray_1_actor_steady_products_per_s"], res["ray_2_actor_steady_products_per_s"]
    res["steady_ratio_1_actor_vs_single"] = round(steady1 / res["single_products_per_s"], 3)
    res["steady_ratio_2_vs_1_actor"] = round(steady2 / steady1, 3)
    res["targets_met"] = res["ratio_1_actor_vs_single"] >= 0.8 and res["ratio_2_vs_1_actor"] >= 1.5
    res["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
