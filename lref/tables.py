"""Reading TSV/CSV/JSONL files as numbered rows, with a `DataError` naming file, line and field for bad input.

Lines are read as bytes, at most `MAX_LINE_BYTES` each, and decoded as UTF-8 one by one (a leading BOM is
dropped; CRLF line ends are fine), so a file in another encoding, a runaway line or deeply nested JSON ends in
a one-line error that says where and what, never in a traceback. docs/data.md lists every check.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import itertools
import json
import reprlib
from collections.abc import Iterable, Iterator
from pathlib import Path

MAX_LINE_BYTES = 10 * 2**20  # longest accepted line: a product record is a few KB; this stops a runaway line
MAX_JSON_DEPTH = 64  # deepest accepted nesting of JSON objects and lists (esci150 records have depth 2)
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 4, 4


class DataError(ValueError):
    """Bad input data, located by file, line and field."""

    def __init__(
        self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None
    ):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def show(value) -> str:
    """A short one-line repr of a value for error messages."""
    return _short.repr(value)


def json_kind(value) -> str:
    """What a JSON value is, in words: 'text', 'a number', 'a list', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate by difflib, or ''."""
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_json(path: str | Path) -> bool:
    return str(path).endswith(JSON_SUFFIXES)  # not Path(path).suffix: this runs once per value


def encoding_hint(raw: bytes) -> str:
    """A guess at the encoding of a line that is not UTF-8, as advice on what to convert from."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in raw:
        return "UTF-16"
    try:
        raw.decode("cp1252")
        return "cp1252/latin-1"
    except UnicodeDecodeError:
        return "latin-1"


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a UTF-8 file, line ends kept; DataError for bad bytes or long lines."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)
    if path.stat().st_size == 0:
        raise DataError("file is empty", path)
    offset = 0
    with path.open("rb") as f:
        for n in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"line is longer than {MAX_LINE_BYTES:,} bytes, the limit for one record", path, n)
            skip = len(codecs.BOM_UTF8) if n == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                text = raw[skip:].decode("utf-8")
            except UnicodeDecodeError as e:
                at = skip + e.start
                enc = encoding_hint(raw)
                raise DataError(
                    f"not UTF-8: byte 0x{raw[at]:02x} at byte offset {at} of the line (offset {offset + at} in the "
                    f"file); try converting from {enc}, e.g. `iconv -f {enc.split('/')[0]} -t utf-8 {path.name}`",
                    path,
                    n,
                ) from None
            offset += len(raw)
            yield n, text


def json_depth(value) -> int:
    """Nesting depth of objects and lists (a flat object is 1), counted without recursion."""
    depth, level = 0, [value]
    while level := [v for v in level if isinstance(v, dict | list)]:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            break
        level = [x for v in level for x in (v.values() if isinstance(v, dict) else v)]
    return depth


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constant)


def parse_json_object(text: str, path: Path, n: int) -> dict:
    """One JSONL line as a dict; DataError for bad JSON, nesting past MAX_JSON_DEPTH or a non-object."""
    too_deep = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        obj = _decoder.decode(text.rstrip("\r\n"))
    except RecursionError:
        raise DataError(too_deep, path, n) from None
    except json.JSONDecodeError as e:
        raise DataError(f"bad JSON ({e.msg} at column {e.colno})", path, n) from None
    except ValueError as e:  # NaN/Infinity, or an integer over Python's digit limit
        raise DataError(f"bad JSON ({e})", path, n) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {json_kind(obj)}", path, n)
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(obj) > MAX_JSON_DEPTH:
        raise DataError(too_deep, path, n)
    return obj


def read_table(path: str | Path, required: Iterable[str] = ()) -> list[tuple[int, dict]]:
    """Rows of a TSV/CSV (by suffix) or JSONL file as (line number, dict), checking required columns.

    Every row of a TSV/CSV must have as many fields as the header; a required column must be in the header
    (or a JSON object) and hold a non-blank value. Extra columns are kept.
    """
    path = Path(path)
    required = list(required)
    rows = _read_json(path, required) if is_json(path) else _read_delimited(path, required)
    if not rows:
        raise DataError("file has no data rows", path)
    return rows


def _read_json(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    rows: list[tuple[int, dict]] = []
    for n, text in read_lines(path):
        if not text.strip():
            continue
        obj = parse_json_object(text, path, n)
        for col in required:
            if col not in obj:
                raise DataError(f"missing field{did_you_mean(col, obj)}", path, n, col)
            value = obj[col]
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError("missing value", path, n, col)
        rows.append((n, obj))
    return rows


def _read_delimited(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    tab = path.suffix in (".tsv", ".tab")
    # the csv module refuses fields over 128 KiB by default; long fields are accepted up to the line limit
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    reader = csv.reader((text for _, text in read_lines(path)), delimiter="\t" if tab else ",")
    rows: list[tuple[int, dict]] = []
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError("file has no header row", path, 1)
        seen = set()
        for name in header:
            if name in seen:
                raise DataError(f"column {name!r} appears twice in the header", path, 1)
            seen.add(name)
        for col in required:
            if col not in header:
                hint = did_you_mean(col, header)
                if len(header) == 1 and ("," if tab else "\t") in header[0]:
                    hint += f"; the header has one column: is the file {'comma' if tab else 'tab'}-separated?"
                raise DataError(f"missing column{hint} (header has {header})", path, 1, col)
        for fields in reader:
            n = reader.line_num
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(f"row has {len(fields)} fields, header has {len(header)}", path, n)
            row = dict(zip(header, fields, strict=True))
            for col in required:
                if not row[col].strip():
                    raise DataError("missing value", path, n, col)
            rows.append((n, row))
    except csv.Error as e:
        raise DataError(f"bad {'TSV' if tab else 'CSV'} row ({e})", path, reader.line_num) from None
    return rows
