"""Tagging throughput with --llm none: batched embedding + batched retrieval vs one product at a time.

Builds a store from N_INDEX esci150 products (category paths as exemplar tags), then tags N_TAG other
products twice in the same run: one by one (baseline) and in batches through the batch job's path.
Prints products/s for both and the ratio.

    PYTHONPATH=. OMP_NUM_THREADS=2 /work/venv/bin/python bench/bench_tagging.py [--n-index 1000] [--n-tag 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/esci150"))
    ap.add_argument("--n-index", type=int, default=1000)
    ap.add_argument("--n-tag", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lref.data import load_products
    from lref.rag.store import Store
    from lref.tagging.tagger import Tagger, build_index, product_text
    from lref.tagging.taxonomy import build_from_products

    products = [p for p in load_products(Path(args.data) / "products.jsonl").values() if p.category]
    index, query = products[: args.n_index], products[args.n_index : args.n_index + args.n_tag]
    tax = build_from_products([p.category for p in index])
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        store = Store(d)
        info = build_index(store, tax, index)
        t_index = time.perf_counter() - t
        tagger = Tagger(tax, store)
        tagger.tag(query[:8])  # warm up

        t = time.perf_counter()
        for p in query:
            tagger.tag([p])
        one = len(query) / (time.perf_counter() - t)

        t, c = time.perf_counter(), time.process_time()
        for s in range(0, len(query), args.batch_size):
            tagger.tag(query[s : s + args.batch_size])
        batched = len(query) / (time.perf_counter() - t)
        per_cpu_s = len(query) / (time.process_time() - c)  # products per CPU-second, all threads together

        t = time.perf_counter()
        emb = store.embedder.encode([product_text(p, tagger.config.text_words) for p in query])
        t_embed = time.perf_counter() - t
        t = time.perf_counter()
        for s in range(0, len(query), args.batch_size):
            tagger.gather(query[s : s + args.batch_size], emb[s : s + args.batch_size])
        t_rest = time.perf_counter() - t

    print(f"machine: {os.cpu_count()} CPUs visible, torch threads {args.threads}, load avg {os.getloadavg()}")
    print(f"index: {info['n_exemplars']} exemplars + {info['n_tags']} tags in {t_index:.1f} s")
    print(f"recall@10 (HNSW vs exact): {info['recall@10']}")
    print(f"tagging {len(query)} products, --llm none")
    print(f"  baseline one-by-one : {one:7.1f} products/s")
    print(f"  batched ({args.batch_size:3d})       : {batched:7.1f} products/s")
    print(f"  ratio batched/baseline: {batched / one:.2f}x")
    print(f"  batched, per CPU-second: {per_cpu_s:7.1f} products/s (x{args.threads} cores if uncontended)")
    print(f"  of the batched time: embedding {t_embed:.2f} s, retrieval + votes {t_rest:.2f} s")


if __name__ == "__main__":
    main()
