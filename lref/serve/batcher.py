"""The one worker thread that runs all model compute, fed by a bounded queue.

- Completion jobs from concurrent requests are batched: the worker takes what has arrived, up to
  `max_batch`, and the host runs them as grouped forward passes (`ModelHost.run`).
- Whole-request work (a rerank over a student, a judge's scoring pass) goes through `call`, on the
  same thread, so nothing runs two forward passes at once on the 2 cores and adapters never race.
- The queue is bounded: past `max_queue` waiting requests a new one is refused with `Overloaded`
  (503 + Retry-After) at once, so latency never grows without bound.
- `stop` lets the work already queued finish (graceful shutdown), then ends the thread.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from lref.serve.errors import Overloaded

log = logging.getLogger(__name__)


class Batcher:
    """Collects jobs from concurrent requests and runs them, in batches, on one worker thread."""

    def __init__(self, host=None, max_batch: int = 32, max_queue: int = 256):
        self.host = host
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.queue: asyncio.Queue | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lref-model")
        self.task: asyncio.Task | None = None
        self.pending = 0  # requests admitted and not yet answered (the queue depth /metrics reports)

    def start(self) -> None:
        self.queue = asyncio.Queue()
        if self.host is not None:
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker (the server has stopped taking requests)."""
        while self.pending:
            await asyncio.sleep(0.01)
        if self.task:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    def _admit(self) -> None:
        if self.pending >= self.max_queue:
            raise Overloaded(self.pending)
        self.pending += 1

    async def submit(self, jobs: list) -> list:
        """Complete generation jobs on the host, batched with other requests' jobs."""
        self._admit()
        try:
            loop = asyncio.get_running_loop()
            futs = [loop.create_future() for _ in jobs]
            for j, f in zip(jobs, futs, strict=True):
                self.queue.put_nowait((j, f))
            return list(await asyncio.gather(*futs))
        finally:
            self.pending -= 1

    async def call(self, fn, *args):
        """Run `fn(*args)` on the model thread, after the work queued before it."""
        self._admit()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.pending -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            await asyncio.sleep(0)  # let handlers that are ready enqueue too
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            items = [(j, f) for j, f in items if not f.cancelled()]
            if not items:
                continue
            try:
                results = await loop.run_in_executor(self.pool, self.host.run, [j for j, _ in items])
            except Exception as e:  # a bug or resource problem: fail these requests, keep serving
                log.exception("batch of %d failed", len(items))
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(items, results, strict=True):
                if not f.done():
                    f.set_result(r)
