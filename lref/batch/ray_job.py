"""The Ray Data runner: read chunks → `map_batches(BatchWorker)` on N actors → Parquet shards, exactly once.

- Read tasks (no CPU reserved, so they never starve the actors) turn the planned chunks into rows.
- `BatchWorker` actors each load the model once (`job.load()`) and run the single-process job's per-batch
  function on every batch. Ray restarts an actor that dies and retries its batch (Ray Data's actor pool sets
  `max_restarts=-1` and `max_task_retries=-1`); a retried batch's first output is never delivered, so nothing
  is duplicated (tests/test_ray_batch.py kills a worker mid-batch).
- The driver streams the outcomes, groups them by input shard and commits a shard (errors first, then the
  output, each atomically) as soon as all of its rows are back. It also checks that no (shard, line) arrives
  twice and counts it when one does (`duplicates`), so a test can see it.
- A local Ray starts and stops with the job unless `ray_address` names a cluster or Ray is already running.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from lref.batch.config import RayConfig
from lref.batch.shards import (
    OUTCOME_SCHEMA,
    READ_SCHEMA,
    Shard,
    commit_shard,
    discover,
    encode,
    errors_dir,
    plan_file,
    prepare_output,
    read_chunk,
)

log = logging.getLogger(__name__)


class BatchWorker:
    """A Ray Data actor: builds the job's model once, then processes batches of rows."""

    def __init__(self, job):
        self.job = job
        self.state = job.load()

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist(self.job.process(self.state, batch.to_pylist()), schema=OUTCOME_SCHEMA)


def read_batch(batch):
    """Read tasks: each input row is a planned chunk; out come its rows."""
    import pyarrow as pa

    rows = []
    for chunk in batch.to_pylist():
        rows += read_chunk(json.loads(chunk["chunk"]))
    return pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def connect(cfg: RayConfig) -> bool:
    """Join `cfg.ray_address`, or start a local Ray sized for the actors; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, log_to_driver=False)
        return True
    cpus = max(os.cpu_count() or 1, int(cfg.concurrency * cfg.num_cpus + 0.999))
    kwargs = {"num_gpus": int(cfg.concurrency * cfg.num_gpus + 0.999)} if cfg.num_gpus else {}
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, **kwargs)
    return True


class Collector:
    """Outcomes by shard, committed when a shard is complete; duplicates of `dedupe` keys become errors."""

    def __init__(self, out: Path, shards: list[Shard], job, seen_keys: set[str]):
        self.out, self.job = out, job
        self.expected = {s.name: s.n_rows for s in shards}
        self.files = {s.name: s.file for s in shards}
        self.pending: dict[str, dict[int, dict]] = {s.name: {} for s in shards}
        self.seen = seen_keys
        self.stats = {"rows": 0, "errors": 0, "duplicates": 0, "shards_written": 0}
        for s in shards:
            if s.n_rows == 0:
                self.commit(s.name)

    def add(self, outcome: dict) -> None:
        got = self.pending.get(outcome["shard"])
        if got is None or outcome["line"] in got:  # a shard already committed, or a line already back
            log.warning("shard %s line %d came back twice; the first is kept", outcome["shard"], outcome["line"])
            self.stats["duplicates"] += 1
            return
        got[outcome["line"]] = outcome
        if len(got) == self.expected[outcome["shard"]]:
            self.commit(outcome["shard"])

    def commit(self, name: str) -> None:
        rows, errors = [], []
        for line, o in sorted(self.pending.pop(name).items()):
            reason = o["reason"]
            if reason is None and self.job.dedupe:
                row = json.loads(o["result"])
                key = row[self.job.dedupe]
                if key in self.seen:
                    reason = f"duplicate {self.job.dedupe} {key!r} (first one kept)"
                else:
                    self.seen.add(key)
                    rows.append(row)
            elif reason is None:
                rows.append(json.loads(o["result"]))
            if reason is not None:
                errors.append(
                    {"file": self.files[name], "line": line, "product_id": o["product_id"], "reason": reason}
                )
        commit_shard(self.out, name, encode(rows, self.job.columns), errors)
        self.stats["rows"] += len(rows)
        self.stats["errors"] += len(errors)
        self.stats["shards_written"] += 1
        log.info("committed shard %s: %d rows, %d errors", name, len(rows), len(errors))

    def unfinished(self) -> list[str]:
        return sorted(self.pending)


def plan_input(path: str | Path, chunk_rows: int) -> list[Shard]:
    return [plan_file(f, chunk_rows) for f in discover(path)]


def run_job(job, shards: list[Shard], out: str | Path, cfg: RayConfig) -> dict:
    """Run `job` over `shards` into the folder `out` on Ray Data; returns the summary (also logged)."""
    out = Path(out)
    t0 = time.perf_counter()
    done = prepare_output(out, cfg.resume)
    todo = [s for s in shards if s.name not in done]
    seen: set[str] = set()
    if job.dedupe and done:
        import pyarrow.parquet as pq

        for name in done:
            seen.update(pq.read_table(out / f"{name}.parquet", columns=[job.dedupe]).column(0).to_pylist())
    collector = Collector(out, todo, job, seen)
    chunks = [c for s in todo if s.n_rows for c in s.chunks]
    started, first = False, None
    if chunks:
        import ray
        import ray.data

        started = connect(cfg)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = cfg.progress
            ds = ray.data.from_items([{"chunk": json.dumps(c)} for c in chunks], override_num_blocks=len(chunks))
            ds = ds.map_batches(read_batch, batch_size=1, batch_format="pyarrow", num_cpus=0)
            ds = ds.map_batches(
                BatchWorker,
                fn_constructor_kwargs={"job": job},
                batch_size=cfg.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),  # = concurrency=N, deprecated in 2.51
                num_cpus=cfg.num_cpus,
                num_gpus=cfg.num_gpus or None,
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                first = first or time.perf_counter() - t0
                for outcome in batch.to_pylist():
                    collector.add(outcome)
        finally:
            if started:
                ray.shutdown()
    if collector.unfinished():
        raise RuntimeError(f"shards not complete at the end of the stream: {collector.unfinished()}")
    secs = time.perf_counter() - t0
    stats = collector.stats
    summary = {
        **stats,
        "shards": len(shards),
        "shards_skipped": len(shards) - len(todo),
        "seconds": round(secs, 2),
        "first_outcome_s": round(first, 2) if first else None,  # start-up: actors built, first batch back
        f"{job.unit}_per_s": round((stats["rows"] + stats["errors"]) / secs, 2) if secs > 0 else None,
        "out": str(out),
        "errors_dir": str(errors_dir(out)),
    }
    log.info("ray job summary: %s", summary)
    return summary


def run_tagging(make_tagger, products: str | Path, out: str | Path, cfg: RayConfig) -> dict:
    """Tag a products file or a folder of shards into a folder of Parquet shards (see `lref.batch.shards`)."""
    from lref.batch.jobs import TagJob

    return run_job(TagJob(make_tagger), plan_input(products, cfg.chunk_rows), out, cfg)


def run_pairs(
    make_engine,
    pairs: list[dict],
    products: dict,
    out: str | Path,
    cfg: RayConfig,
    style: str = "teacher",
    max_product_tokens: int = 256,
    shard_rows: int = 100_000,
) -> dict:
    """Judge in-memory `pairs` (their products looked up in `products` and sent inline) on Ray Data.

    The pairs are cut into shards `pairs-00000`, ... of `shard_rows`, so a rerun over the same pairs resumes.
    """
    from lref.batch.jobs import PairJob
    from lref.batch.shards import plan_rows_sharded

    rows = []
    for p in pairs:
        product = products.get(p["product_id"])
        rows.append({**p, "product": product.to_dict() if product is not None else None})
    shards = plan_rows_sharded("pairs", rows, shard_rows, cfg.chunk_rows)
    return run_job(PairJob(make_engine, style, max_product_tokens), shards, out, cfg)
