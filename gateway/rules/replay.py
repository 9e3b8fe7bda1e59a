"""``gateway rules test``: replay recorded samples through rules, on the recording's own clock.

Data files
----------
* CSV, long form: header ``ts,point,value`` (optionally ``,quality`` with good/uncertain/bad or
  0/1/2): one sample per row.
* CSV, wide form: header ``ts,<point>,<point>...``: one row per instant, an empty cell means no
  sample of that point at that instant (so a point can be declared without data).
* JSONL: one object per line, ``{"ts": 1.0, "point": "p.x", "value": 3}`` or wide
  ``{"ts": 1.0, "p.x": 3, "p.y": 4}``; ``null`` means a bad-quality sample.

Rows are replayed in time order (stable), one batch per timestamp, as a poll would deliver them.
Between two timestamps the engine is ticked every ``tick`` seconds (100 ms, like the runtime), so
``for:`` holds, cooldowns and ``stale()`` elapse exactly as they would live, without waiting.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import RuleConfig, SetAction, WriteAction
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.rules.effects import Effect, effect_record
from gateway.rules.engine import RuleEngine

Row = tuple[float, str, float, int]  # ts, point, value, quality
_QUALITY = {"good": 0, "uncertain": 1, "bad": 2, "0": 0, "1": 1, "2": 2}
#: Most ticks between two samples (a long gap is ticked at its end instead).
MAX_TICKS_PER_GAP = 100_000


class DataError(ValueError):
    """A data file that cannot be replayed; the message names file:line."""


def read_data(path: str | Path) -> tuple[list[Row], list[str]]:
    """Samples of a CSV or JSONL recording in time order, and every point it names."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise DataError(f"{p}: not a regular file; the data is a CSV or JSONL recording")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read: {exc}") from None
    header: list[str] = []
    if p.suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl(p, text)
    else:
        rows = _csv(p, text, header)
    rows.sort(key=lambda r: r[0])
    return rows, point_names(rows, header)


def _number(where: str, text: Any) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a number, got {text!r}") from None
    return v


def _csv(p: Path, text: str, declared: list[str]) -> list[Row]:
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    if not header or header[0] != "ts":
        raise DataError(f"{p}:1: the first column must be 'ts'; got {header[:1]}")
    rows: list[Row] = []
    long = header[1:3] == ["point", "value"]
    if not long:
        declared.extend(header[1:])
    for lineno, cells in enumerate(reader, 2):
        if not cells or not "".join(cells).strip():
            continue
        where = f"{p}:{lineno}"
        if len(cells) > len(header):
            raise DataError(f"{where}: {len(cells)} cells but {len(header)} columns")
        ts = _number(where, cells[0])
        if long:
            q = _QUALITY.get(cells[3].strip().lower(), -1) if len(cells) > 3 else 0
            if q < 0:
                raise DataError(f"{where}: quality must be good, uncertain or bad")
            value = math.nan if q else _number(where, cells[2])
            rows.append((ts, cells[1].strip(), value, q))
            continue
        for name, cell in zip(header[1:], cells[1:], strict=False):
            cell = cell.strip()
            if cell == "":
                continue
            if cell.lower() in ("bad", "nan", "null"):
                rows.append((ts, name, math.nan, 2))
            else:
                rows.append((ts, name, _number(where, cell), 0))
    return rows


def _jsonl(p: Path, text: str) -> list[Row]:
    rows: list[Row] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{where}: invalid JSON: {exc}") from None
        if not isinstance(obj, dict) or "ts" not in obj:
            raise DataError(f"{where}: expected an object with 'ts'")
        ts = _number(where, obj["ts"])
        items = [(obj["point"], obj.get("value"))] if "point" in obj else [
            (k, v) for k, v in obj.items() if k != "ts"
        ]  # fmt: skip
        for name, v in items:
            if v is None:
                rows.append((ts, str(name), math.nan, 2))
            else:
                rows.append((ts, str(name), _number(where, v), 0))
    return rows


def point_names(rows: Iterable[Row], header_points: Iterable[str] = ()) -> list[str]:
    seen = dict.fromkeys(header_points)
    for r in rows:
        seen.setdefault(r[1])
    return list(seen)


def table_for(rules: Sequence[RuleConfig], names: Iterable[str]) -> PointTable:
    """A point table for a standalone rule file: the data's points plus write/set targets."""
    table = PointTable(ring_capacity=128)
    targets: dict[str, str] = {}
    for cfg in rules:
        for a in cfg.actions:
            if isinstance(a, WriteAction | SetAction):
                targets[a.point] = "write" if isinstance(a, WriteAction) else "set"
    for name in names:
        if name not in table:
            table.add(name, name.split(".")[0], "float64", writable=targets.get(name) == "write")
    for name, kind in targets.items():
        if name not in table:
            device = "virtual" if kind == "set" else name.split(".")[0]
            table.add(name, device, "float64", writable=kind == "write")
    return table


def estimate_periods(rows: Sequence[Row]) -> dict[str, float]:
    """Median sample period per point, for ring sizing."""
    times: dict[str, list[float]] = defaultdict(list)
    for ts, name, _, _ in rows:
        times[name].append(ts)
    return {n: float(np.median(np.diff(t))) for n, t in times.items() if len(t) > 1}


@dataclass
class Replay:
    """The outcome of a replay: every effect and the samples, for printing and plotting."""

    effects: list[Effect] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    engine: RuleEngine | None = None
    #: label -> (point the series belongs with, [(ts, value)]): derived values such as windows
    probes: dict[str, tuple[str, list[tuple[float, float]]]] = field(default_factory=dict)

    def records(self) -> list[dict[str, object]]:
        return [effect_record(e) for e in self.effects]


def replay(
    engine: RuleEngine, points: PointTable, rows: Sequence[Row], tick: float = 0.1,
    probes: dict[str, tuple[str, Any]] | None = None,
) -> Replay:  # fmt: skip
    """Feed ``rows`` (time-ordered) through ``engine`` one timestamp at a time, ticking between.

    ``probes`` (label -> (point, thunk)) are evaluated after every batch and recorded.
    """
    out = Replay(rows=list(rows), engine=engine)
    for label, (point, _) in (probes or {}).items():
        out.probes[label] = (point, [])
    i = 0
    last: float | None = None
    while i < len(rows):
        t = rows[i][0]
        j = i
        while j < len(rows) and rows[j][0] == t:
            j += 1
        if last is not None and tick > 0:
            steps = int((t - last) / tick)
            first = 1 if steps <= MAX_TICKS_PER_GAP else steps
            for k in range(first, steps + 1):
                now = last + k * tick
                if now < t:
                    out.effects.extend(engine.tick(now))
        chunk = rows[i:j]
        batch = SampleBatch(
            np.array([points.id_of(r[1]) for r in chunk], np.uint32),
            np.array([r[0] for r in chunk], np.float64),
            np.array([r[2] for r in chunk], np.float64),
            np.array([r[3] for r in chunk], np.uint8),
        )
        points.ingest(batch)
        out.effects.extend(engine.process(batch))
        out.effects.extend(engine.tick(t))
        for label, (_, thunk) in (probes or {}).items():
            v = thunk()
            if v is not None:
                out.probes[label][1].append((t, float(v)))
        last = t
        i = j
    return out


def describe(eff: Effect) -> str:
    """One line per effect, for the terminal."""
    rec = effect_record(eff)
    parts = [f"{float(rec['ts']):>14.3f}", f"{rec['kind']:<13}", str(rec["rule"])]  # type: ignore[arg-type]
    if "severity" in rec:
        parts.append(f"[{rec['severity']}]")
    if "point" in rec:
        parts.append(f"{rec['point']} = {rec['value']:g}")  # type: ignore[str-format]
    if "by" in rec:
        parts.append(f"by {rec['by']}")
    if rec.get("message"):
        parts.append(str(rec["message"]))
    return "  ".join(parts)


def quality_name(q: int) -> str:
    return Quality(q).name.lower()
