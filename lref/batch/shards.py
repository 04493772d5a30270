"""Sharded input and output for batch jobs: plan read chunks, write Parquet shards atomically, resume.

- Input is one file or a folder of shards (`.jsonl`/`.json`/`.ndjson`, `.parquet`, `.csv`, `.tsv`), or rows
  held in memory. Each shard is planned as read chunks (line ranges of a JSONL file, row groups of a Parquet
  file, a whole CSV) so read tasks can run anywhere; every row keeps its shard and line (1-based; the row
  number for Parquet) for the errors dataset.
- Output is a folder with one Parquet shard per input shard, named after it (`part-3.jsonl` →
  `part-3.parquet`), with a fixed schema so `pandas`, `pyarrow` and `datasets.load_dataset("parquet", ...)`
  read the folder as it is. Bad rows go to the same-named shard of `<out>.errors/` (`file`, `line`,
  `product_id`, `reason`).
- A shard is written under a hidden temporary name, fsynced and renamed: the errors shard first, the output
  shard last, so an output shard that exists is complete, with its errors. `--resume` skips those shards and
  recomputes the rest; hidden temporaries left by a kill are removed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lref.data import DataError

log = logging.getLogger(__name__)

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
SUFFIXES[".tsv"] = "tsv"

# the rows that flow from the read tasks to the actors
READ_SCHEMA = pa.schema([("shard", pa.string()), ("file", pa.string()), ("line", pa.int64()), ("raw", pa.string())])
READ_SCHEMA = READ_SCHEMA.append(pa.field("error", pa.string()))
# the rows that flow from the actors back to the driver: a JSON result, or the reason it failed
OUTCOME_SCHEMA = pa.schema(
    [("shard", pa.string()), ("line", pa.int64()), ("result", pa.string()), ("product_id", pa.string())]
).append(pa.field("reason", pa.string()))
ERRORS_SCHEMA = pa.schema(
    [("file", pa.string()), ("line", pa.int64()), ("product_id", pa.string()), ("reason", pa.string())]
)
# column kinds of an output schema: how a Python value is stored
KINDS = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "strlist": pa.list_(pa.string())}
KINDS["json"] = pa.string()  # dicts with varying keys (datasets has no Arrow map type): JSON text


@dataclass
class Shard:
    """One input shard: its output name, where it is, how many rows, and the read chunks that cover them."""

    name: str
    file: str
    n_rows: int
    chunks: list[dict] = field(default_factory=list)


def output_schema(columns: dict[str, str]) -> pa.Schema:
    return pa.schema([(name, KINDS[kind]) for name, kind in columns.items()])


def errors_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.errors")


def discover(path: str | Path) -> list[Path]:
    """The input shards: `path` itself, or the data files of the folder (sorted by name)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"no {'/'.join(sorted(SUFFIXES))} shards in this folder", path)
    seen: dict[str, Path] = {}
    for f in files:
        if f.suffix not in SUFFIXES:
            raise DataError(f"unknown input format {f.suffix!r} (use {', '.join(sorted(SUFFIXES))})", f)
        if f.stem in seen:
            raise DataError(f"two shards would write {f.stem}.parquet (also {seen[f.stem].name})", f)
        seen[f.stem] = f
    return files


def plan_file(path: Path, chunk_rows: int) -> Shard:
    """Read chunks of one input file: JSONL by line ranges (byte offsets), Parquet by row group, CSV whole."""
    fmt = SUFFIXES[path.suffix]
    shard = Shard(name=path.stem, file=str(path), n_rows=0)
    if fmt == "parquet":
        meta = pq.ParquetFile(path).metadata
        start = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            shard.chunks.append({"fmt": fmt, "group": g, "first_line": start + 1, "rows": n})
            start += n
        shard.n_rows = start
    elif fmt == "jsonl":
        with path.open("rb") as f:
            offset, n_line, in_chunk, chunk = 0, 0, 0, None
            for raw in f:
                n_line += 1
                if raw.strip():
                    if chunk is None:
                        chunk = {"fmt": fmt, "offset": offset, "first_line": n_line, "rows": 0}
                    chunk["rows"] += 1
                    shard.n_rows += 1
                    in_chunk += 1
                    if in_chunk == chunk_rows:
                        shard.chunks.append(chunk)
                        chunk, in_chunk = None, 0
                offset += len(raw)
            if chunk is not None:
                shard.chunks.append(chunk)
    else:
        shard.n_rows = sum(1 for _ in _csv_rows(path, fmt))
        shard.chunks.append({"fmt": fmt, "first_line": 2, "rows": shard.n_rows})
    for c in shard.chunks:
        c.update(shard=shard.name, file=str(path))
    return shard


def plan_rows(name: str, rows: list[dict], chunk_rows: int, file: str = "<memory>") -> Shard:
    """A shard of rows held in memory (e.g. the pairs a command built); line = position + 1."""
    shard = Shard(name=name, file=file, n_rows=len(rows))
    for s in range(0, len(rows), chunk_rows):
        part = [json.dumps(r, ensure_ascii=False) for r in rows[s : s + chunk_rows]]
        shard.chunks.append({"fmt": "rows", "first_line": s + 1, "rows": len(part), "data": part})
    for c in shard.chunks:
        c.update(shard=name, file=file)
    return shard


def plan_rows_sharded(prefix: str, rows: list[dict], shard_rows: int, chunk_rows: int) -> list[Shard]:
    """In-memory rows cut into shards `<prefix>-00000`, ... of `shard_rows` rows (stable names for resume)."""
    return [
        plan_rows(f"{prefix}-{i // shard_rows:05d}", rows[i : i + shard_rows], chunk_rows)
        for i in range(0, len(rows), shard_rows)
    ]


def _csv_rows(path: Path, fmt: str):
    with path.open(encoding="utf-8", newline="") as f:
        yield from enumerate(csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ","), start=2)


def read_chunk(chunk: dict) -> list[dict]:
    """The rows of one read chunk as READ_SCHEMA dicts: `raw` JSON text, or `error` for an unreadable row."""
    path, fmt = Path(chunk["file"]), chunk["fmt"]
    base = {"shard": chunk["shard"], "file": chunk["file"]}
    out = []
    if fmt == "rows":
        for i, raw in enumerate(chunk["data"]):
            out.append({**base, "line": chunk["first_line"] + i, "raw": raw, "error": None})
    elif fmt == "jsonl":
        with path.open("rb") as f:
            f.seek(chunk["offset"])
            n = chunk["first_line"] - 1
            while len(out) < chunk["rows"]:
                raw = f.readline()
                n += 1
                if not raw:
                    raise DataError(f"file changed while the job ran (expected {chunk['rows']} rows here)", path, n)
                if raw.strip():
                    text = raw.decode("utf-8", errors="replace")
                    out.append({**base, "line": n, "raw": text, "error": None})
    elif fmt == "parquet":
        table = pq.ParquetFile(path).read_row_group(chunk["group"])
        for i, row in enumerate(table.to_pylist()):
            out.append({**base, "line": chunk["first_line"] + i, "raw": json.dumps(row, default=str), "error": None})
    else:
        for n, row in _csv_rows(path, fmt):
            bad = str(DataError("row has more fields than the header", path, n)) if None in row else None
            out.append({**base, "line": n, "raw": None if bad else json.dumps(row), "error": bad})
    return out


def encode(rows: Iterable[dict], columns: dict[str, str]) -> pa.Table:
    """Rows as a table of the output schema: `json` columns become JSON text, missing values null."""
    cols: dict[str, list] = {name: [] for name in columns}
    for r in rows:
        for name, kind in columns.items():
            v = r.get(name)
            cols[name].append(
                json.dumps(v, ensure_ascii=False, sort_keys=True) if kind == "json" and v is not None else v
            )
    return pa.table(cols, schema=output_schema(columns))


def decode(table: pa.Table, columns: dict[str, str]) -> list[dict]:
    """Rows read back from an output table, `json` columns parsed again."""
    rows = table.to_pylist()
    for r in rows:
        for name, kind in columns.items():
            if kind == "json" and r.get(name) is not None:
                r[name] = json.loads(r[name])
    return rows


def write_atomic(table: pa.Table, final: Path) -> None:
    """Write `table` to a hidden temporary beside `final`, fsync, rename, fsync the folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_shard(out: Path, name: str, table: pa.Table, errors: list[dict]) -> None:
    """Commit one shard: its errors shard first, then the output shard (whose presence marks it complete)."""
    write_atomic(pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA), errors_dir(out) / f"{name}.parquet")
    write_atomic(table, out / f"{name}.parquet")


def prepare_output(out: Path, resume: bool) -> set[str]:
    """Check the output folder and return the names of the complete shards (empty unless resuming)."""
    errs = errors_dir(out)
    done = {p.stem for p in out.glob("*.parquet")} if out.is_dir() else set()
    if out.exists() and not out.is_dir():
        raise DataError("output must be a folder of Parquet shards (this is a file)", out)
    if done and not resume:
        raise DataError(f"output holds {len(done)} shards; pass --resume to continue it, or remove it", out)
    for folder in (out, errs):
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):
            log.warning("%s: removing a partial shard left by an interrupted run", tmp)
            tmp.unlink()
    for p in errs.glob("*.parquet"):
        if p.stem not in done:  # an errors shard without its output shard: the shard is recomputed
            p.unlink()
    return done


def read_output(out: str | Path, columns: dict[str, str] | None = None) -> list[dict]:
    """Every row of an output (or errors) folder, shards in name order, `json` columns parsed when given."""
    files = sorted(Path(out).glob("*.parquet"))
    if not files:
        return []
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return decode(table, columns) if columns else table.to_pylist()
