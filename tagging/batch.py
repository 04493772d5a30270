"""The batch tagging job: products in, one JSON line of tags per product out; append-only and resumable.

Output (`tags.jsonl`), one object per product:
`{"product_id", "topic": [paths, root first], "style": [...], "quality": {dim: {"level", "reasons"}},
  "confidence": {tag_id: p}, "evidence": {...}, "model", "version"}`.

- Each row is written with one `write` of a whole line and flushed; every batch is fsynced.
- `resume=True` first cuts a torn last line (a kill in the middle of a write), then skips every product
  already in the output and every input line already in the errors file. So after a kill at any point
  each product comes out exactly once.
- A bad input row (bad JSON, no product_id or title, a non-numeric rating, a duplicate id) or a row the
  tagger fails on goes to `<out stem>.errors.jsonl` as `{"line", "product_id", "reason"}`; the job goes on.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from lref.data import DataError, Product, product_from_row

log = logging.getLogger(__name__)


def errors_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.errors.jsonl")


def parse_product(row: dict, path: Path, line: int) -> Product:
    """One input row as a `Product`, or `DataError` naming the line and field (the loaders' own checks)."""
    return product_from_row(row, path, line)


def parse_line(raw: str, path: str | Path, line: int) -> tuple[Product | None, str | None]:
    """One JSONL line as (product, None), or (None, reason) naming the file and line."""
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", path, line)
        return parse_product(obj, Path(path), line), None
    except json.JSONDecodeError as e:
        return None, str(DataError(f"bad JSON ({e.msg} at column {e.colno})", path, line))
    except DataError as e:
        return None, str(e)


def tag_batch(tagger, buf: list[tuple[int, Product]]) -> tuple[list[dict], list[tuple[int, str, str]]]:
    """Tag one batch: (tags rows in input order, errors as (line, product_id, reason)).

    The per-batch work of both the single-process job and the Ray job (`lref.batch`). When the batch
    fails, each product is retried alone, so one bad product never sinks the others.
    """
    try:
        return tagger.tag([p for _, p in buf]), []
    except Exception as e:  # one bad product must not sink the batch: retry one by one
        log.warning("batch of %d failed (%s); tagging one by one", len(buf), e)
    rows, errors = [], []
    for n, p in buf:
        try:
            rows.append(tagger.tag([p])[0])
        except Exception as e1:  # noqa: BLE001
            errors.append((n, p.product_id, f"tagger failed: {type(e1).__name__}: {e1}"))
    return rows, errors


def iter_rows(path: str | Path) -> Iterator[tuple[int, Product | None, str | None]]:
    """(line, product, None) for good rows and (line, None, reason) for bad ones, JSONL or CSV/TSV."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        with path.open(encoding="utf-8", errors="replace") as f:
            for n, raw in enumerate(f, start=1):
                if raw.strip():
                    yield n, *parse_line(raw, path, n)
    else:
        delim = "\t" if path.suffix in (".tsv", ".tab") else ","
        with path.open(encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter=delim), start=2):
                try:
                    if None in row:
                        raise DataError("row has more fields than the header", path, n)
                    yield n, parse_product(row, path, n), None
                except DataError as e:
                    yield n, None, str(e)


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no trailing newline) off `path`; returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # walk back to the last newline
        pos, chunk = size, 4096
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
    log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", path, size - keep)
    return size - keep


def _done(path: Path, key: str) -> set:
    out = set()
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        out.add(json.loads(line)[key])
                    except (json.JSONDecodeError, KeyError):
                        raise DataError(f"not a tags row (no {key!r}); is this the right file?", path, n) from None
    return out


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def run_batch(
    tagger, products: str | Path, out: str | Path, resume: bool = False, batch_size: int = 64, progress: bool = True
) -> dict:
    """Tag every product of `products` into `out`; returns the summary (also logged)."""
    from tqdm.auto import tqdm

    products, out = Path(products), Path(out)
    err_path = errors_path(out)
    if out.exists() and out.stat().st_size > 0 and not resume:
        raise DataError("output exists; pass --resume to continue it, or remove it", out)
    if not resume and err_path.exists():
        err_path.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(out)
    repair_tail(err_path)
    done_ids = _done(out, "product_id") if resume else set()
    done_lines = _done(err_path, "line") if resume else set()
    stats = {"read": 0, "tagged": 0, "skipped": 0, "errors": 0, "with_topic": 0}
    seen: set[str] = set()
    t0 = time.perf_counter()
    with out.open("a", encoding="utf-8") as fout, err_path.open("a", encoding="utf-8") as ferr:

        def error(line: int, pid: str | None, reason: str) -> None:
            ferr.write(json.dumps({"line": line, "product_id": pid, "reason": reason}, ensure_ascii=False) + "\n")
            ferr.flush()
            stats["errors"] += 1

        def flush(buf: list[tuple[int, Product]]) -> None:
            if not buf:
                return
            rows, failed = tag_batch(tagger, buf)
            for n, pid, reason in failed:
                error(n, pid, reason)
            for row in rows:
                fout.write(json.dumps(row, ensure_ascii=False) + "\n")
                stats["tagged"] += 1
                stats["with_topic"] += bool(row.get("topic"))
            fout.flush()
            os.fsync(fout.fileno())
            buf.clear()

        buf: list[tuple[int, Product]] = []
        bar = tqdm(total=_count_lines(products), desc="tagging", unit="product", disable=not progress)
        for n, p, reason in iter_rows(products):
            bar.update(1)
            stats["read"] += 1
            # done before the restart: an error already written for this line, or the first line of a tagged id
            # (a later repeat of that id is still a duplicate and goes to the errors file below)
            if n in done_lines or (p is not None and p.product_id in done_ids and p.product_id not in seen):
                stats["skipped"] += 1
                if p is not None:
                    seen.add(p.product_id)
                continue
            if p is None:
                error(n, None, reason or "bad row")
                continue
            if p.product_id in seen:
                error(n, p.product_id, f"duplicate product_id {p.product_id!r} (first one kept)")
                continue
            seen.add(p.product_id)
            buf.append((n, p))
            if len(buf) >= batch_size:
                flush(buf)
        flush(buf)
        bar.close()
    secs = time.perf_counter() - t0
    summary = {
        **stats,
        "seconds": round(secs, 2),
        "products_per_s": round(stats["tagged"] / secs, 2) if secs > 0 else None,
        "topic_coverage": round(stats["with_topic"] / stats["tagged"], 4) if stats["tagged"] else None,
        "out": str(out),
        "errors_file": str(err_path),
    }
    log.info("tagging summary: %s", summary)
    return summary
