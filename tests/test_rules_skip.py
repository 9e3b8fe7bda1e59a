"""Issue 15: the rule engine walks only the samples of points some rule reads.

A 10k-point installation with a rule per device reads 2 of every 100 points; the other samples
must cost one vectorised step, not a Python iteration each, and skipping them must not change
what a rule sees (the view of the points it reads, the values after a reload that starts
reading a point, ``RuleEngine.values``)."""

from __future__ import annotations

import time

import numpy as np

from gateway.config import AlarmAction, RuleConfig
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.rules import AlarmRaised, RuleEngine

GOOD = int(Quality.GOOD)
POINTS = 2000


def _table() -> PointTable:
    pt = PointTable(4)
    for i in range(POINTS):
        pt.add(f"d.p{i}", "d", "uint16")
    return pt


def _rule(name: str, when: str, message: str = "") -> RuleConfig:
    return RuleConfig(name=name, when=when, actions=(AlarmAction(message or name),), source="x:1")


def _batch(values: np.ndarray, ts: float) -> SampleBatch:
    n = values.shape[0]
    return SampleBatch(
        np.arange(n, dtype=np.uint32), np.full(n, ts), values.astype(np.float64),
        np.full(n, GOOD, np.uint8),
    )  # fmt: skip


def _feed(pt: PointTable, eng: RuleEngine, b: SampleBatch) -> list[object]:
    pt.ingest(b)  # as the runtime does: the table first, then the rules
    return eng.process(b)


def test_unread_points_cost_no_walk() -> None:
    """A batch of every point (2 of them read by a rule) must cost about what a batch of the 2
    read points costs; before, every sample was a Python iteration (a ratio of ~50)."""
    pt = _table()
    eng = RuleEngine([_rule("few", "d.p0 > 1 and d.p1 >= 0")], pt)
    full = _batch(np.zeros(POINTS), 1.0)
    read = SampleBatch(full.point_ids[:2], full.ts[:2], full.values[:2], full.quality[:2])

    def best(b: SampleBatch) -> float:
        times = []
        for k in range(7):
            t0 = time.perf_counter()
            for j in range(20):
                eng.process(SampleBatch(b.point_ids, b.ts + k * 20 + j, b.values, b.quality))
            times.append(time.perf_counter() - t0)
        return min(times)

    full_t, read_t = best(full), best(read)
    assert full_t < 10 * read_t, (full_t, read_t)


def test_skipping_changes_nothing_a_rule_sees() -> None:
    pt = _table()
    eng = RuleEngine([_rule("hot", "d.p5 > 10", "hot {d.p5} with {d.p1500}")], pt)
    values = np.zeros(POINTS)
    values[1500] = 42.0
    assert _feed(pt, eng, _batch(values, 1.0)) == []
    values[5] = 11.0
    (raised,) = _feed(pt, eng, _batch(values, 2.0))
    assert isinstance(raised, AlarmRaised) and raised.message == "hot 11 with 42"
    # The view of points no rule reads is brought up to date when asked for.
    assert eng.values[1500] == 42.0 and eng.values[7] == 0.0
    values[7] = 3.0
    _feed(pt, eng, _batch(values, 3.0))
    assert eng.values[7] == 3.0


def test_a_reload_that_starts_reading_a_point_sees_its_current_value() -> None:
    pt = _table()
    old = RuleEngine([_rule("hot", "d.p5 > 10")], pt)
    values = np.zeros(POINTS)
    values[900] = 77.0
    _feed(pt, old, _batch(values, 1.0))
    # p900 was not read by any rule so far; the new rule compares it at p5's next sample.
    new = RuleEngine([_rule("hot", "d.p5 > 10"), _rule("warm", "d.p900 > 50", "warm")], pt,
                     previous=old)  # fmt: skip
    only_p5 = SampleBatch(
        np.array([5], np.uint32), np.array([2.0]), np.array([1.0]), np.array([GOOD], np.uint8)
    )
    pt.ingest(only_p5)
    assert new.process(only_p5) == []  # warm triggers on p900 only
    one = SampleBatch(
        np.array([900], np.uint32), np.array([3.0]), np.array([78.0]), np.array([GOOD], np.uint8)
    )
    (raised,) = _feed(pt, new, one)
    assert isinstance(raised, AlarmRaised) and raised.rule == "warm"
