"""``gateway rules test``: replay a recording through rules exactly as the gateway ran them.

The recording (see :mod:`gateway.rules.recording` for the formats) is replayed in its own order,
consecutive rows with the same timestamp forming one batch as a poll delivered them, through the
same :class:`~gateway.rules.clock.RuleClock` the runtime uses: ticks on the same grid of sample
time, placed before the same samples. So ``for:`` holds, cooldowns, windows seen by holds and
``stale()`` elapse as they did live, without waiting, and a recording exported from the cloud
store (``gateway export``) replays to the gateway's own firings, clears and writes at the same
times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import RuleConfig, SetAction, WriteAction
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.rules.clock import RuleClock
from gateway.rules.effects import Effect, effect_record
from gateway.rules.engine import RuleEngine
from gateway.rules.recording import DataError, Row, point_names, read_recording
from gateway.timefmt import Stamps

__all__ = ["DataError", "Row", "Replay", "point_names", "read_data", "replay", "table_for"]


def read_data(path: str | Path) -> tuple[list[Row], list[str]]:
    """Samples of a CSV or JSONL recording in file order, and every point it names."""
    return read_recording(path)


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
    return {n: float(np.median(np.diff(np.sort(t)))) for n, t in times.items() if len(t) > 1}


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
    engine: RuleEngine, points: PointTable, rows: Sequence[Row], clock: RuleClock | None = None,
    probes: dict[str, tuple[str, Any]] | None = None,
) -> Replay:  # fmt: skip
    """Feed ``rows`` through ``engine`` batch by batch on ``clock`` (the runtime's tick grid).

    ``probes`` (label -> (point, thunk)) are evaluated after every batch and recorded.
    """
    clock = clock or RuleClock()
    out = Replay(rows=list(rows), engine=engine)
    for label, (point, _) in (probes or {}).items():
        out.probes[label] = (point, [])
    i = 0
    while i < len(rows):
        t = rows[i][0]
        j = i
        while j < len(rows) and rows[j][0] == t:
            j += 1
        chunk = rows[i:j]
        batch = SampleBatch(
            np.array([points.id_of(r[1]) for r in chunk], np.uint32),
            np.array([r[0] for r in chunk], np.float64),
            np.array([r[2] for r in chunk], np.float64),
            np.array([r[3] for r in chunk], np.uint8),
        )
        # The runtime stores a poll in the point table, then runs the rules: so does this.
        points.ingest(batch)
        out.effects.extend(clock.feed(engine, batch))
        for label, (_, thunk) in (probes or {}).items():
            v = thunk()
            if v is not None:
                out.probes[label][1].append((t, float(v)))
        i = j
    if rows:
        out.effects.extend(clock.finish(engine, max(r[0] for r in rows)))
    return out


def describe(eff: Effect, stamps: Stamps | None = None) -> str:
    """One line per effect, for the terminal (pass one ``stamps`` for a run of lines, so the
    date is printed only when it changes)."""
    rec = effect_record(eff)
    parts = [(stamps or Stamps())(eff.ts), f"{rec['kind']:<13}", str(rec["rule"])]
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
