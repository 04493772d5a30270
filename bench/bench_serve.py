"""Embedded-server scoring throughput against in-process scoring: same tiny model, same pairs, one run.

In-process: `HFEngine.score` (batch 16). Server: the embedded server on a loopback port and the
`openai` engine with 8 concurrent client threads (each request one query's pairs, up to 8 prompts).
Prints pairs/s of both and their ratio (target >= 0.7), and checks the distributions agree.

    PYTHONPATH=. OMP_NUM_THREADS=1 /work/venv/bin/python bench/bench_serve.py [--queries 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "esci150"))
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import torch

    from lref.data import load_dir
    from lref.engines.hf import HFEngine
    from lref.engines.judge import LLMScorer
    from lref.engines.openai import OpenAIEngine
    from lref.models import init_tiny
    from lref.serve.app import create_app
    from lref.serve.embedded import BackgroundServer
    from lref.serve.llm_host import ModelHost

    corpus = load_dir(args.data)
    corpus = corpus.subset(corpus.query_ids[: args.queries])
    tmp = Path(tempfile.mkdtemp())
    model = init_tiny(tmp / "tiny", args.data, vocab_size=2048, hidden_size=128, num_layers=4, num_heads=2)
    hf = HFEngine.from_pretrained(model, batch_size=16)
    prompts = LLMScorer(hf).prompts(corpus)
    n = len(prompts)
    hf.score(prompts[:16])  # warm up

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_local = best(lambda: hf.score(prompts))
    local = hf.score(prompts)
    host = ModelHost(model, served_name="tiny", max_batch=16)
    with BackgroundServer(create_app(host, max_batch=32)) as srv:
        eng = OpenAIEngine(srv.url, "tiny", tokenizer=hf.tokenizer, concurrency=args.clients, chunk_size=8)
        eng.score(prompts[:16])
        t_server = best(lambda: eng.score(prompts))
        remote = eng.score(prompts)
    diff = max(abs(a - b) for x, y in zip(local, remote, strict=True) for a, b in zip(x.probs, y.probs, strict=True))
    print(
        f"pairs: {n} ({args.queries} queries), model: tiny Qwen2 h128 x4 layers, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"in-process hf engine: {n / t_local:8.1f} pairs/s ({t_local:.2f} s, best of {args.repeats})")
    print(
        f"embedded server, {args.clients} clients: {n / t_server:8.1f} pairs/s "
        f"({t_server:.2f} s, best of {args.repeats})"
    )
    print(f"ratio server / in-process: {t_local / t_server:.3f} (target >= 0.7)")
    print(f"max |prob difference|: {diff:.2e}")
    assert np.isfinite(diff) and diff < 1e-4


if __name__ == "__main__":
    main()
