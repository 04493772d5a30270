"""Rerank serving under load: the int8 cross-encoder and the LTR ranking stage behind `lref serve`.

    PYTHONPATH=. python bench/bench_rerank.py [--threads 2] [--requests 96] [--clients 1 8 32]
        [--ranker DIR] [--ltr DIR] [--candidates 100]

Each request reranks 100 candidates of one esci150 query: its judged products, topped up with
products of the following queries. The server runs as a real `lref serve` subprocess on a loopback
port (int8 cross-encoder `ranker`, LTR `ltr`, catalogue `products.jsonl`); clients are asyncio
httpx workers, each sending its share of the requests one after another. In the same run the same
requests are scored in-process, one after another, by the same scorer classes, for the ratio.
Without --ranker a fresh MiniLM cross-encoder is saved (same architecture and speed as a trained one);
without --ltr an LTR model is trained on 10 queries (its speed does not depend on its training).

Printed per model and client count: p50 / p99 latency, pairs/s, 503s and failures, then the issue's
ratios: server pairs/s at 8 clients over in-process, and p99 at 8 clients over p50 at 1 client.
A client that gets 503 counts it, waits the server's Retry-After and sends the same request again, so
every request is answered once; latency is printed for the admitted attempt and end to end (back-off
included).
`--max-queue N` sets the server's bound (requests running or waiting): a small bound sheds load with 503
+ Retry-After and keeps the tail short; the default 256 admits everything and queues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
KEY = "bench"


def requests_for(corpus, n: int, size: int) -> list[tuple[str, list[str]]]:
    """(query, product ids) of `n` requests: each query's judged products, topped up to `size`."""
    by_q: dict[str, list] = {}
    for j in corpus.judgments:
        by_q.setdefault(j.query_id, []).append(j)
    qids = sorted(by_q)
    out = []
    for i in range(n):
        q = qids[i % len(qids)]
        ids = list(dict.fromkeys(j.product_id for j in by_q[q]))[:size]
        k = i + 1
        while len(ids) < size:
            ids += [j.product_id for j in by_q[qids[k % len(qids)]] if j.product_id not in ids][: size - len(ids)]
            k += 1
        out.append((by_q[q][0].query, ids))
    return out


def prepare(args, corpus, tmp: Path) -> tuple[str, str]:
    from lref.distill.ltr import train_ltr
    from lref.distill.ranker import new_cross_encoder
    from lref.rag.embedder import DEFAULT_MODEL, resolve_model_path

    ranker = args.ranker
    if not ranker:
        ranker = str(tmp / "ranker")
        new_cross_encoder(resolve_model_path(DEFAULT_MODEL), args.max_length, "mean").save_pretrained(ranker)
    ltr = args.ltr
    if not ltr:
        ltr = str(tmp / "ltr")
        train_ltr(corpus.subset(corpus.query_ids[:10]), ltr, ranker=ranker, rounds=50, min_data_in_leaf=5)
    return ranker, ltr


def start_server(args, ranker: str, ltr: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "lref.cli", "serve", "--ranker", ranker, "--ltr", ltr, "--products",
           str(Path(args.data) / "products.jsonl"), "--port", str(port), "--api-key", KEY,
           "--max-documents", str(max(args.candidates, 100)), "--max-queue", str(args.max_queue)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lref serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("lref serve did not start in 300 s")


async def load(url: str, model: str, reqs, clients: int) -> dict:
    """Closed-loop clients: each sends a request, waits for the answer, then sends the next.

    A 503 is counted and the same request is sent again after the server's `Retry-After`, as a real client
    would; so every request is answered once and pairs/s counts the same work at every client count. Latency
    is kept two ways: of the attempt the server admitted (what the queue bound controls) and end to end, from
    the first attempt to the answer (what a caller waits, back-off included).
    """
    import httpx

    lat, e2e, codes = [], [], []
    queue = list(reqs)

    async def worker(c):
        while queue:
            q, ids = queue.pop()
            body = {"model": model, "query": q, "documents": [{"product_id": p} for p in ids]}
            first = time.perf_counter()
            while True:
                t = time.perf_counter()
                try:
                    r = await c.post("/v1/rerank", json=body)
                except httpx.HTTPError:
                    codes.append(-1)
                    break
                codes.append(r.status_code)
                if r.status_code != 503:
                    if r.status_code == 200:
                        now = time.perf_counter()
                        lat.append(now - t)
                        e2e.append(now - first)
                    break
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=600) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ok = len(lat)

    def pct(xs, p):
        return 1e3 * float(np.percentile(xs, p)) if xs else None

    return {
        "clients": clients,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "e2e_p50_ms": pct(e2e, 50),
        "e2e_p99_ms": pct(e2e, 99),
        "pairs_per_s": ok * len(reqs[0][1]) / wall,
        "ok": ok,
        "n_503": codes.count(503),
        "failures": sum(1 for x in codes if x not in (200, 503)),
    }


def in_process(scorer, catalogue, reqs) -> float:
    from lref.serve.scorers import Doc

    # warm-up over every request, untimed: the LTR's zero-shot product embeddings land in the on-disk cache,
    # which the server reads too; without it the first contender pays for the embeddings and the second does not
    for q, ids in reqs:
        scorer.score(q, [Doc(product=p) for p in catalogue.get(ids)])
    t0 = time.perf_counter()
    for q, ids in reqs:
        scorer.score(q, [Doc(product=p) for p in catalogue.get(ids)])
    return len(reqs) * len(reqs[0][1]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "esci150"))
    ap.add_argument("--threads", type=int, default=2, help="OMP threads of the server and of in-process scoring")
    ap.add_argument("--requests", type=int, default=96, help="requests per (model, client count)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--ranker", help="cross-encoder student folder (default: a fresh MiniLM cross-encoder)")
    ap.add_argument("--ltr", help="LTR model folder (default: one trained here on 10 queries)")
    ap.add_argument("--port", type=int, default=8391)
    ap.add_argument(
        "--max-queue", type=int, default=256, help="the server's --max-queue: requests past it get 503 + Retry-After"
    )
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    import signal

    import torch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below: stop the server too
    torch.set_num_threads(args.threads)
    from lref.data import load_dir
    from lref.serve.scorers import Catalogue, LTRScorer, RankerScorer

    print(f"load average at the start (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    corpus = load_dir(args.data)
    reqs = requests_for(corpus, args.requests, args.candidates)
    with tempfile.TemporaryDirectory() as tmp:
        ranker, ltr = prepare(args, corpus, Path(tmp))
        catalogue = Catalogue(corpus.products, "products.jsonl")
        local = {"ranker": RankerScorer("ranker", ranker, int8=True), "ltr": LTRScorer("ltr", ltr, catalogue)}
        results = {}
        proc = start_server(args, ranker, ltr, args.port)
        try:
            for model in ("ranker", "ltr"):
                base = in_process(local[model], catalogue, reqs)
                rows = [asyncio.run(load(f"http://127.0.0.1:{args.port}", model, reqs, c)) for c in args.clients]
                results[model] = {"in_process_pairs_per_s": base, "server": rows}
                print(f"\n{model} ({args.candidates} candidates a request, {args.requests} requests a row)")
                print(f"  in-process: {base:8.1f} pairs/s")
                for r in rows:
                    print(f"  {r['clients']:3d} clients: p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
                          f"(end to end {r['e2e_p50_ms']:8.1f} / {r['e2e_p99_ms']:8.1f})  "
                          f"{r['pairs_per_s']:8.1f} pairs/s  answered {r['ok']}  503s {r['n_503']}  "
                          f"failures {r['failures']}")  # fmt: skip
                by_c = {r["clients"]: r for r in rows}
                if 8 in by_c and 1 in by_c:
                    tp = by_c[8]["pairs_per_s"] / base
                    tail = by_c[8]["p99_ms"] / by_c[1]["p50_ms"]
                    results[model]["ratios"] = {"throughput_8_over_in_process": tp, "p99_8_over_p50_1": tail}
                    print(f"  server/in-process at 8 clients: {tp:.2f} (target >= 0.8); "
                          f"p99@8 / p50@1: {tail:.2f} (target <= 3)")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"\nload average at the end (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
