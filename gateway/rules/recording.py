"""Recordings: the sample files ``gateway export`` writes and ``gateway rules test`` and
``gateway models test`` read.

Formats (chosen by the extension ``.csv`` / ``.jsonl`` / ``.ndjson`` / ``.json``, else by the
first line: ``{`` is JSONL):

* CSV, long form: header ``ts,point,value`` (optionally ``,quality`` with good/uncertain/bad or
  0/1/2; the header may be left out): one sample per row.
* CSV, wide form: header ``ts,<point>,<point>...``: one row per instant; an empty cell is no
  sample of that point, ``bad`` (or ``nan``/``null``) a bad-quality one.
* JSONL: one object per line, ``{"ts": 1.0, "point": "p.x", "value": 3}`` (optional
  ``"quality"``) or wide ``{"ts": 1.0, "p.x": 3, "p.y": 4}``; a ``null`` value is bad quality.

``ts`` is seconds since the epoch (as the gateway stamps samples) or an ISO 8601 time
(``2026-12-03T12:00:00.250Z``; without an offset it is UTC). Lines starting with ``#`` are
comments. Rows keep the file's order: a recording exported from the cloud is in the order the
gateway processed the samples, which a replay must follow to make the same decisions.

Limits: a file over :data:`MAX_BYTES`, a line over :data:`MAX_LINE` or more than
:data:`MAX_ROWS` samples is refused with a message saying so, never loaded without bound.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

Row = tuple[float, str, float, int]  # ts, point, value (NaN unless good), quality 0/1/2
QUALITY = {"good": 0, "uncertain": 1, "bad": 2, "0": 0, "1": 1, "2": 2}
QUALITY_NAMES = ("good", "uncertain", "bad")
MAX_BYTES = 256 * 1024 * 1024
MAX_LINE = 64 * 1024
MAX_ROWS = 1_000_000  # ~300 MB of rows in memory: what a Pi can spare
FORMATS = ("csv", "jsonl")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class DataError(ValueError):
    """A recording that cannot be read; the message names file:line and what to do."""


def read_recording(path: str | Path, max_rows: int = MAX_ROWS) -> tuple[list[Row], list[str]]:
    """Samples of a recording in file order, and every point it names (header order first)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not p.is_file():
        raise DataError(f"{p}: not a regular file; the data is a CSV or JSONL recording")
    if st.st_size > MAX_BYTES:
        raise DataError(
            f"{p}: {st.st_size} bytes is more than the {MAX_BYTES // 2**20} MiB a recording may "
            "have; cut it shorter (gateway export --from/--to, or split the file)"
        )
    try:
        with open(p, encoding="utf-8", newline="") as f:
            lines = _Lines(p, f)
            first = lines.peek()
            if p.suffix.lower() in _JSONL_SUFFIXES or (
                p.suffix.lower() != ".csv" and first.lstrip().startswith("{")
            ):
                return _jsonl(p, lines, max_rows)
            return _csv(p, lines, max_rows)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason}); is this a recording?") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from None


class _Lines:
    """The file's lines with their numbers, within the size limits."""

    def __init__(self, path: Path, f: IO[str]) -> None:
        self.path = path
        self._f = f
        self._head: list[str] = []
        self.lineno = 0
        self._read = 0

    def _next(self) -> str:
        line = self._f.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise DataError(
                f"{self.path}:{self.lineno + len(self._head) + 1}: a line of more than "
                f"{MAX_LINE} characters: not a CSV recording (nor JSONL) as gateway export "
                "writes them"
            )
        self._read += len(line)
        if self._read > MAX_BYTES:  # a file that grows while read (a FIFO, a log)
            raise DataError(f"{self.path}: more than {MAX_BYTES // 2**20} MiB; cut it shorter")
        return line

    def peek(self) -> str:
        while True:
            line = self._next()
            self._head.append(line)
            if not line or (line.strip() and not line.lstrip().startswith("#")):
                return line

    def __iter__(self) -> Iterator[str]:
        while True:
            line = self._head.pop(0) if self._head else self._next()
            if not line:
                return
            self.lineno += 1
            if line.lstrip().startswith("#"):
                yield "\n"  # keeps csv's line count equal to the file's
                continue
            yield line


def parse_ts(where: str, value: Any) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string."""
    if isinstance(value, bool):
        raise DataError(f"{where}: ts must be a number or an ISO 8601 time, got {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise DataError(
                    f"{where}: ts must be seconds since the epoch or an ISO 8601 time "
                    f"(2026-12-03T12:00:00.250Z), got {_clip(value)}"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            ts = dt.timestamp()
    else:
        raise DataError(f"{where}: ts must be a number or an ISO 8601 time, got {_clip(value)}")
    if not math.isfinite(ts):
        raise DataError(f"{where}: ts must be finite, got {_clip(value)}")
    return ts


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a number, got {_clip(value)}") from None


def _quality(where: str, value: Any) -> int:
    q = QUALITY.get(str(value).strip().lower(), -1)
    if q < 0:
        raise DataError(f"{where}: quality must be good, uncertain or bad, got {_clip(value)}")
    return q


def _clip(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _point(where: str, name: Any) -> str:
    text = str(name).strip()
    if not text or len(text) > 200:
        raise DataError(f"{where}: a point name must be 1 to 200 characters, got {_clip(name)}")
    return text


def _add(rows: list[Row], row: Row, where: str, max_rows: int) -> None:
    if len(rows) >= max_rows:
        raise DataError(
            f"{where}: more than {max_rows} samples; cut the recording shorter "
            "(gateway export --from/--to, or split the file)"
        )
    rows.append(row)


def _csv(p: Path, lines: _Lines, max_rows: int) -> tuple[list[Row], list[str]]:
    reader = csv.reader(lines)
    rows: list[Row] = []
    declared: list[str] = []
    header: list[str] | None = None
    long = True
    try:
        for cells in reader:
            lineno = lines.lineno
            where = f"{p}:{lineno}"
            if not cells or not "".join(cells).strip():
                continue
            if header is None:
                header = [c.strip() for c in cells]
                if header[0].lower() in ("ts", "time", "timestamp"):
                    long = [h.lower() for h in header[1:3]] == ["point", "value"]
                    if not long:
                        declared = [_point(where, h) for h in header[1:]]
                        if not declared:
                            raise DataError(f"{where}: a wide CSV header names points after ts")
                    continue
                if len(cells) not in (3, 4):  # no header: long form
                    raise DataError(
                        f"{where}: the first line must be a header ts,point,value (long) or "
                        f"ts,<point>,... (wide); got {_clip(','.join(cells))}"
                    )
                header = ["ts", "point", "value", "quality"][: len(cells)]
            if long:
                if len(cells) not in (3, 4):
                    raise DataError(
                        f"{where}: expected ts,point,value[,quality]; got {len(cells)} fields"
                    )
                ts = parse_ts(where, cells[0])
                q = _quality(where, cells[3]) if len(cells) > 3 and cells[3].strip() else 0
                raw = cells[2].strip()
                if q == 0 and raw.lower() in ("", "bad", "nan", "null"):
                    q = 2
                value = _number(where, raw) if q == 0 else math.nan
                _add(rows, (ts, _point(where, cells[1]), value, q), where, max_rows)
                continue
            if len(cells) > len(header):
                raise DataError(f"{where}: {len(cells)} cells but {len(header)} columns")
            ts = parse_ts(where, cells[0])
            for name, cell in zip(declared, cells[1:], strict=False):
                cell = cell.strip()
                if cell == "":
                    continue
                if cell.lower() in ("bad", "nan", "null"):
                    _add(rows, (ts, name, math.nan, 2), where, max_rows)
                else:
                    _add(rows, (ts, name, _number(where, cell), 0), where, max_rows)
    except csv.Error as exc:
        raise DataError(f"{p}:{lines.lineno}: not CSV: {exc}") from None
    return rows, point_names(rows, declared)


def _jsonl(p: Path, lines: _Lines, max_rows: int) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    for line in lines:
        if not line.strip():
            continue
        where = f"{p}:{lines.lineno}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{where}: invalid JSON: {exc}") from None
        if not isinstance(obj, dict) or "ts" not in obj:
            raise DataError(f"{where}: expected an object with 'ts', e.g. "
                            '{"ts": 1.0, "point": "dev.x", "value": 3}')  # fmt: skip
        ts = parse_ts(where, obj["ts"])
        if "point" in obj:
            q = _quality(where, obj["quality"]) if obj.get("quality") is not None else 0
            v = obj.get("value")
            if v is None:
                q = q or 2
            items = [(obj["point"], v, q)]
        else:
            items = [(k, v, 0 if v is not None else 2) for k, v in obj.items() if k != "ts"]
        for name, v, q in items:
            if isinstance(v, dict | list):
                raise DataError(f"{where}: value of {name!r} must be a number or null")
            value = _number(where, v) if q == 0 else math.nan
            _add(rows, (ts, _point(where, name), value, q), where, max_rows)
    return rows, point_names(rows)


def point_names(rows: Iterable[Row], header_points: Iterable[str] = ()) -> list[str]:
    seen = dict.fromkeys(header_points)
    for r in rows:
        seen.setdefault(r[1])
    return list(seen)


def write_recording(rows: Iterable[Row], out: IO[str], fmt: str) -> int:
    """Write ``rows`` as long CSV (``ts,point,value,quality``) or JSONL; returns the count.

    Numbers are written with ``repr`` so a replay reads back exactly the values and times the
    gateway had (a rounded timestamp could move a sample across a tick).
    """
    n = 0
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["ts", "point", "value", "quality"])
        for ts, name, value, q in rows:
            w.writerow([repr(ts), name, "" if q or value != value else repr(value),
                        QUALITY_NAMES[q]])  # fmt: skip
            n += 1
    elif fmt == "jsonl":
        for ts, name, value, q in rows:
            rec: dict[str, Any] = {"ts": ts, "point": name,
                                   "value": None if q or value != value else value}  # fmt: skip
            if q:
                rec["quality"] = QUALITY_NAMES[q]
            out.write(json.dumps(rec) + "\n")
            n += 1
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return n


def format_of(path: str | os.PathLike[str]) -> str | None:
    """``csv``/``jsonl`` from a file name, None when the extension says neither."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    return None
