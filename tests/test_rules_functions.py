"""Engine-level properties of windows and stateful functions, ring sizing, set cascades, store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import AlarmAction, LogAction, RuleConfig, SetAction
from gateway.core.model import SampleBatch
from gateway.core.points import PointTable
from gateway.rules import AlarmStore, RuleEngine
from gateway.rules.effects import effect_record

WINDOW_RULES = [
    RuleConfig("avg", "avg(m.v, 1s) > 0.5", (LogAction("{avg(m.v, 1s)}"),), hysteresis=0.2),
    RuleConfig("cnt", "rms(m.v, 5 samples) > 1 and changed(round(m.v))", (LogAction("x"),)),
    RuleConfig("edge", "counter(m.v > 1) >= 2", (LogAction("{counter(m.v > 1)}"),)),
    RuleConfig(
        "cyc", "falling(m.v > 0)", (LogAction("{integral(m.v, between(m.v > 0, m.v <= 0))}"),)
    ),
    RuleConfig("lag", "m.v - lag(m.v, 2) > 1.5", (LogAction("{delta(m.v, 2s)}"),), for_=0.3),
]


def table(capacity: int = 64) -> PointTable:
    pt = PointTable(capacity)
    pt.add("m.v", "m", "float64")
    return pt


def run(values: list[float], splits: list[int]) -> list[dict[str, object]]:
    pt = table()
    eng = RuleEngine(WINDOW_RULES, pt, periods={"m.v": 0.1})
    ts = np.arange(len(values)) * 0.1
    out = []
    bounds = sorted({0, len(values), *[s % (len(values) + 1) for s in splits]})
    for a, b in zip(bounds, bounds[1:], strict=False):
        batch = SampleBatch(
            np.zeros(b - a, np.uint32), ts[a:b], np.array(values[a:b]), np.zeros(b - a, np.uint8)
        )
        pt.ingest(batch)
        out += eng.process(batch)
    return [effect_record(e) for e in out]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=60),
    st.lists(st.integers(0, 60), max_size=6),
)
def test_windows_and_state_do_not_depend_on_batch_boundaries(
    values: list[float], splits: list[int]
) -> None:
    assert run(values, splits) == run(values, [])


def test_rings_are_sized_from_windows_only_for_points_that_need_it() -> None:
    pt = PointTable(8)
    for n in ("a.x", "a.y", "a.z"):
        pt.add(n, "a", "float64")
    rules = [
        RuleConfig("t", "avg(a.x, 10s) > 1", (LogAction("x"),)),
        RuleConfig("c", "lag(a.y, 40) > 1", (LogAction("x"),)),
    ]
    eng = RuleEngine(rules, pt, periods={"a.x": 0.1})
    assert eng.ring_sizes == {"a.x": 127, "a.y": 41}
    assert [r.capacity for r in pt.rings] == [127, 41, 8]


def test_set_loop_is_cut_off() -> None:
    pt = table()
    pt.add("virtual.n", "virtual", "float64")
    rules = [
        RuleConfig("seed", "m.v > 0", (SetAction("virtual.n", "1"),)),
        RuleConfig(
            "loop",
            "changed(virtual.n) or virtual.n > 0",
            (SetAction("virtual.n", "virtual.n + 1"),),
            clear="false",
        ),
    ]
    eng = RuleEngine(rules, pt)
    out = eng.process(SampleBatch.uniform(np.zeros(1, np.uint32), 1.0, np.array([1.0])))
    assert pt.last_value[1] >= 1.0
    assert len(out) < 70


def test_unreadable_alarm_store_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "alarms.json"
    path.write_text("{not json")
    pt = table()
    eng = RuleEngine(
        [RuleConfig("a", "m.v > 1", (AlarmAction("hi"),))], pt, alarm_store=AlarmStore(path)
    )
    assert not eng.alarms()[0].active
    eng.process(SampleBatch.uniform(np.zeros(1, np.uint32), 1.0, np.array([2.0])))
    saved = json.loads(path.read_text())
    assert saved["version"] == 1 and saved["alarms"][0]["active"] is True
    assert not (tmp_path / "alarms.json.tmp").exists()


def test_cooldown_fires_on_tick_when_over() -> None:
    pt = table()
    eng = RuleEngine([RuleConfig("c", "m.v > 1", (LogAction("x"),), cooldown=5.0)], pt)

    def at(t: float, v: float) -> list[object]:
        return eng.process(SampleBatch.uniform(np.zeros(1, np.uint32), t, np.array([v])))

    assert len(at(0.0, 2.0)) == 1
    at(1.0, 0.0)
    assert at(2.0, 2.0) == [] and eng.tick(4.9) == []
    assert len(eng.tick(5.0)) == 1 and eng.stats()["c"]["suppressed"] >= 1
