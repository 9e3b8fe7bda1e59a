"""Rule engine semantics: every sample, for-holds, hysteresis, unknowns, actions, templates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Action, AlarmAction, LogAction, RuleConfig, WriteAction
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable
from gateway.rules import (
    AlarmCleared,
    AlarmRaised,
    LogMessage,
    MessageTemplate,
    RuleEngine,
    RuleError,
    WriteRequest,
)

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"
GOOD, BAD = int(Quality.GOOD), int(Quality.BAD)


@pytest.fixture
def points() -> PointTable:
    pt = PointTable(64)
    pt.add("press1.temp", "press1", "float32", unit="degC")
    pt.add("press1.run", "press1", "bool", writable=True)
    pt.add("pump1.flow", "pump1", "float32")
    pt.add("pump1.setpoint", "pump1", "uint16", writable=True)
    pt.add("motor1.vibration", "motor1", "float32")
    return pt


def batch(
    points: PointTable, rows: Sequence[tuple[str, float, float] | tuple[str, float, float, int]]
) -> SampleBatch:
    """Rows of (point, ts, value[, quality]) in order."""
    return SampleBatch(
        np.array([points.id_of(r[0]) for r in rows], np.uint32),
        np.array([r[1] for r in rows], np.float64),
        np.array([r[2] for r in rows], np.float64),
        np.array([r[3] if len(r) > 3 else GOOD for r in rows], np.uint8),  # type: ignore[misc]
    )


def temps(points: PointTable, pairs: list[tuple[float, float]], quality: int = GOOD) -> SampleBatch:
    return batch(points, [("press1.temp", t, v, quality) for t, v in pairs])


def rule(
    name: str = "hot",
    when: str = "press1.temp > 80",
    actions: tuple[Action, ...] | None = None,
    **kw: Any,
) -> RuleConfig:
    if actions is None:
        actions = (AlarmAction("hot {press1.temp:.1f}"),)
    return RuleConfig(name=name, when=when, actions=actions, source="rules.yaml:3", **kw)


def kinds(effects: list[Any]) -> list[tuple[str, float]]:
    return [(type(e).__name__, e.ts) for e in effects]


# --- every sample ------------------------------------------------------------------------------


def test_fires_on_a_middle_sample_with_its_timestamp(points: PointTable) -> None:
    eng = RuleEngine([rule()], points)
    out = eng.process(temps(points, [(10.0, 70.0), (10.1, 85.0), (10.2, 70.0)]))
    assert kinds(out) == [("AlarmRaised", 10.1), ("AlarmCleared", 10.2)]
    raised = out[0]
    assert isinstance(raised, AlarmRaised)
    assert raised.message == "hot 85.0" and raised.values == {"press1.temp": 85.0}
    assert raised.severity == "warning" and raised.rule == "hot"


def test_only_rules_reading_the_point_are_evaluated(points: PointTable) -> None:
    eng = RuleEngine([rule(), rule("flow", "pump1.flow < 1")], points)
    eng.process(
        batch(
            points,
            [("press1.temp", 1.0, 20.0), ("press1.temp", 2.0, 21.0), ("pump1.flow", 2.0, 5.0)],
        )
    )
    stats = eng.stats()
    assert stats["hot"]["evaluations"] == 2 and stats["flow"]["evaluations"] == 1
    assert stats["hot"]["firings"] == 0 and stats["hot"]["eval_time_s"] >= 0.0


def test_rule_on_two_points_sees_interleaved_samples(points: PointTable) -> None:
    eng = RuleEngine([rule("both", "press1.temp > 80 and pump1.flow < 1", ())], points)
    out = eng.process(
        batch(
            points,
            [
                ("press1.temp", 1.0, 90.0),
                ("pump1.flow", 1.0, 5.0),  # flow high: false
                ("pump1.flow", 2.0, 0.5),  # now both hold
                ("press1.temp", 3.0, 70.0),
            ],
        )
    )
    assert out == []  # no actions, but the episode is tracked
    assert eng.stats()["both"]["firings"] == 1 and eng.stats()["both"]["active"] == 0


# --- for: holds --------------------------------------------------------------------------------


def test_for_hold_across_batches(points: PointTable) -> None:
    eng = RuleEngine([rule(for_=2.0)], points)
    assert eng.process(temps(points, [(0.0, 85.0), (1.0, 86.0)])) == []
    assert eng.process(temps(points, [(1.5, 87.0)])) == []
    out = eng.process(temps(points, [(2.5, 88.0), (3.0, 89.0)]))
    assert kinds(out) == [("AlarmRaised", 2.5)]  # the first sample at/after the hold elapsed


def test_for_hold_exactly_at_boundary(points: PointTable) -> None:
    eng = RuleEngine([rule(for_=2.0)], points)
    out = eng.process(temps(points, [(0.0, 85.0), (1.0, 85.0), (2.0, 85.0)]))
    assert kinds(out) == [("AlarmRaised", 2.0)]


def test_false_sample_resets_the_hold(points: PointTable) -> None:
    eng = RuleEngine([rule(for_=2.0)], points)
    out = eng.process(
        temps(points, [(0.0, 85.0), (1.0, 60.0), (1.5, 85.0), (3.0, 85.0), (3.5, 85.0)])
    )
    assert kinds(out) == [("AlarmRaised", 3.5)]


def test_for_hold_elapses_via_tick(points: PointTable) -> None:
    eng = RuleEngine([rule(for_=2.0)], points)
    assert eng.process(temps(points, [(100.0, 85.0)])) == []
    assert eng.tick(101.9) == []
    out = eng.tick(102.0)
    assert kinds(out) == [("AlarmRaised", 102.0)]
    assert eng.tick(110.0) == []  # fired once
    assert eng.alarms()[0].active and eng.alarms()[0].since == 102.0


def test_tick_does_not_fire_on_unknown(points: PointTable) -> None:
    eng = RuleEngine([rule(for_=2.0)], points)
    eng.process(temps(points, [(0.0, 85.0)]))
    eng.process(temps(points, [(1.0, math.nan)], quality=BAD))
    assert eng.tick(5.0) == []
    # the hold kept its start through the dropout: the next good true sample fires at once
    assert kinds(eng.process(temps(points, [(5.5, 85.0)]))) == [("AlarmRaised", 5.5)]


# --- fire once, clear, hysteresis --------------------------------------------------------------


def test_hysteresis_clear(points: PointTable) -> None:
    eng = RuleEngine([rule(clear="press1.temp < 70")], points)
    seq = [
        (1.0, 85.0),
        (2.0, 75.0),
        (3.0, 79.0),
        (4.0, 85.0),
        (5.0, 69.0),
        (6.0, 75.0),
        (7.0, 81.0),
    ]
    out = eng.process(temps(points, seq))
    assert kinds(out) == [("AlarmRaised", 1.0), ("AlarmCleared", 5.0), ("AlarmRaised", 7.0)]
    cleared = out[1]
    assert isinstance(cleared, AlarmCleared) and cleared.message == "hot 69.0"


def test_raise_once_clear_once_over_long_oscillation(points: PointTable) -> None:
    eng = RuleEngine([rule(clear="press1.temp < 70", for_=0.5)], points)
    t = np.arange(0.0, 100.0, 0.01)  # 10 periods of 10 s, 100 Hz
    rng = np.random.default_rng(7)
    v = 75.0 + 20.0 * np.sin(2 * np.pi * t / 10.0) + rng.normal(0.0, 0.8, t.size)  # noisy crossings
    effects: list[Any] = []
    cuts = np.sort(rng.choice(np.arange(1, t.size), 300, replace=False))
    for ts_chunk, v_chunk in zip(np.split(t, cuts), np.split(v, cuts), strict=True):
        effects += eng.process(
            temps(points, list(zip(ts_chunk.tolist(), v_chunk.tolist(), strict=True)))
        )
    names = [type(e).__name__ for e in effects]
    assert names == ["AlarmRaised", "AlarmCleared"] * 10
    assert all(b.ts > a.ts for a, b in zip(effects, effects[1:], strict=False))


# --- unknown -----------------------------------------------------------------------------------


def test_bad_quality_neither_fires_nor_clears(points: PointTable) -> None:
    eng = RuleEngine([rule()], points)
    assert eng.process(temps(points, [(1.0, 99.0)], quality=BAD)) == []  # value ignored when bad
    assert kinds(eng.process(temps(points, [(2.0, 85.0)]))) == [("AlarmRaised", 2.0)]
    assert eng.process(temps(points, [(3.0, math.nan)], quality=BAD)) == []  # no clear on unknown
    assert eng.process(temps(points, [(3.5, 10.0)], quality=int(Quality.UNCERTAIN))) == []
    assert eng.alarms()[0].active
    assert kinds(eng.process(temps(points, [(4.0, 60.0)]))) == [("AlarmCleared", 4.0)]


def test_never_seen_point_is_unknown_with_kleene_logic(points: PointTable) -> None:
    eng = RuleEngine(
        [
            rule("either", "press1.temp > 80 or pump1.flow > 10", ()),
            rule("both", "press1.temp > 80 and pump1.flow > 10", ()),
        ],
        points,
    )
    eng.process(temps(points, [(1.0, 90.0)]))
    stats = eng.stats()
    assert stats["either"]["firings"] == 1  # one offline sensor does not mask the other
    assert stats["both"]["firings"] == 0


def test_engine_is_seeded_from_point_table(points: PointTable) -> None:
    points.ingest(batch(points, [("pump1.flow", 1.0, 0.5)]))
    eng = RuleEngine([rule("both", "press1.temp > 80 and pump1.flow < 1", ())], points)
    eng.process(temps(points, [(2.0, 90.0)]))
    assert eng.stats()["both"]["firings"] == 1


# --- actions -----------------------------------------------------------------------------------


def test_actions_run_in_order_with_write_value_expression(points: PointTable) -> None:
    actions = (
        AlarmAction("overheat {press1.temp:.1f} degC, flow {pump1.flow}"),
        WriteAction("press1.run", "0"),
        WriteAction("pump1.setpoint", "pump1.flow * 0.5 + 1"),
        LogAction("stopping press1 at {press1.temp:.0f}"),
    )
    eng = RuleEngine([rule(actions=actions, severity="major")], points)
    out = eng.process(batch(points, [("pump1.flow", 1.0, 7.0), ("press1.temp", 1.0, 81.25)]))
    assert out == [
        AlarmRaised(
            "hot",
            "major",
            "overheat 81.2 degC, flow 7",
            1.0,
            {"press1.temp": 81.25, "pump1.flow": 7.0},
        ),
        WriteRequest("hot", "press1.run", 0.0, 1.0),
        WriteRequest("hot", "pump1.setpoint", 4.5, 1.0),
        LogMessage("hot", "info", "stopping press1 at 81", 1.0),
    ]
    # writes and logs run on fire only; the clear emits only the alarm's clear
    assert kinds(eng.process(temps(points, [(2.0, 50.0)]))) == [("AlarmCleared", 2.0)]


def test_write_with_unknown_value_is_skipped_with_a_warning(points: PointTable) -> None:
    eng = RuleEngine([rule(actions=(WriteAction("pump1.setpoint", "pump1.flow / 2"),))], points)
    out = eng.process(temps(points, [(1.0, 90.0)]))
    assert len(out) == 1 and isinstance(out[0], LogMessage) and out[0].level == "warning"
    assert "pump1.setpoint" in out[0].message and "unknown" in out[0].message


def test_numeric_write_value_from_yaml(points: PointTable) -> None:
    eng = RuleEngine([rule(actions=(WriteAction("press1.run", 1),))], points)  # type: ignore[arg-type]
    assert eng.process(temps(points, [(1.0, 90.0)])) == [
        WriteRequest("hot", "press1.run", 1.0, 1.0)
    ]


def test_disabled_rule_is_checked_but_never_runs(points: PointTable) -> None:
    eng = RuleEngine([rule(enabled=False)], points)
    assert eng.process(temps(points, [(1.0, 90.0)])) == [] and eng.tick(10.0) == []
    assert eng.alarms() == []
    with pytest.raises(RuleError):
        RuleEngine([rule(when="press1.tmp > 1", enabled=False)], points)


# --- compile-time errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "fragment", "location"),
    [
        (
            rule(when="press1.tmp > 80"),
            "rule 'hot', when: unknown point 'press1.tmp' at column 1 (did you mean 'press1.temp'?)",
            "rules.yaml:3:1",
        ),
        (rule(clear="press1.temp <"), "rule 'hot', clear: expected a number", "rules.yaml:3:14"),
        (
            rule(actions=(WriteAction("pump1.flow", "0"),)),
            "write target 'pump1.flow' is not writable",
            "rules.yaml:3",
        ),
        (
            rule(actions=(WriteAction("press1.rn", "0"),)),
            "unknown write target 'press1.rn' (did you mean 'press1.run'?)",
            "rules.yaml:3",
        ),
        (
            rule(actions=(WriteAction("press1.run", "1 +"),)),
            "write press1.run value: expected",
            "rules.yaml:3:4",
        ),
        (
            rule(actions=(AlarmAction("{press1.tmp:.1f}"),)),
            "alarm message: unknown point 'press1.tmp'",
            "rules.yaml:3:2",
        ),
        (
            rule(actions=(LogAction("{press1.temp:.1q}"),)),
            "log message: invalid format spec '.1q'",
            "rules.yaml:3:14",
        ),
        (rule(for_=-1.0), "'for' must be a duration >= 0", "rules.yaml:3"),
    ],
)
def test_compile_errors(points: PointTable, cfg: RuleConfig, fragment: str, location: str) -> None:
    with pytest.raises(RuleError) as info:
        RuleEngine([cfg], points)
    assert fragment in str(info.value)
    assert str(info.value).startswith(location + ": ")


def test_duplicate_rule_names(points: PointTable) -> None:
    with pytest.raises(RuleError, match="duplicate rule name 'hot'"):
        RuleEngine([rule(), rule()], points)


# --- templates ---------------------------------------------------------------------------------

NAMES = ["press1.temp", "press1.parts", "u.u"]


@pytest.mark.parametrize(
    ("text", "values", "want"),
    [
        ("plain", [1.0, 2.0, None], "plain"),
        ("{press1.temp:.1f} degC", [80.25, 0.0, None], "80.2 degC"),
        ("{press1.temp} / {press1.parts}", [80.5, 12345678.0, None], "80.5 / 12345678"),
        ("{press1.parts:,.0f} parts", [0.0, 1234567.0, None], "1,234,567 parts"),
        ("{{literal}} {press1.temp:>6.1f}|", [1.5, 0.0, None], "{literal}    1.5|"),
        ("value {u.u:.2f}", [0.0, 0.0, None], "value n/a"),
        ("{press1.temp:.0%}", [0.5, 0.0, None], "50%"),
        ("{ press1.temp }", [True, 0.0, None], "1"),
    ],
)
def test_template_render(text: str, values: list[Any], want: str) -> None:
    assert MessageTemplate(text, NAMES).render(values) == want


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{press1.temp", "expected '}'"),
        ("oops }", "single '}'"),
        ("{press1.tmp}", "unknown point 'press1.tmp' (did you mean 'press1.temp'?)"),
        ("{press1.temp.__class__}", "expected a point name"),
        ("{press1.temp!r}", "expected a point name"),
        ("{0}", "expected a point name"),
        ("{}", "expected a point name"),
        ("{press1.temp:>100000000}", "invalid format spec"),
        ("{press1.temp:d}", "invalid format spec"),
        ("{press1.temp:{x}}", "nested '{'"),
    ],
)
def test_template_errors(text: str, fragment: str) -> None:
    with pytest.raises(RuleError, match="message template") as info:
        MessageTemplate(text, NAMES, "t.yaml:9")
    assert fragment in str(info.value) and str(info.value).startswith("t.yaml:9:")


# --- the demo config ---------------------------------------------------------------------------


def demo_engine() -> tuple[RuleEngine, PointTable]:
    from gateway.config import load_config
    from gateway.core.runtime import build_point_table

    config = load_config(DEMO)
    pt = build_point_table(config)
    return RuleEngine(config.rules, pt), pt


def test_demo_rules_close_the_loop() -> None:
    eng, pt = demo_engine()
    out = eng.process(
        batch(
            pt, [("press1.run", 0.0, 1.0)] + [("press1.temp", t, 60.0 + 10 * t) for t in range(6)]
        )
    )
    # temp 90 at t=3 starts the hold, 100 at t=4, elapsed at t=5
    assert [(type(e).__name__, e.ts) for e in out] == [
        ("AlarmRaised", 5.0),
        ("WriteRequest", 5.0),
        ("LogMessage", 5.0),
    ]
    assert out[0].message == "press1 platen temperature 110.0 degC (limit 80, clears below 70)"  # type: ignore[union-attr]
    # the device obeys the write, the press cools down, the restart rule brings it back
    out = eng.process(
        batch(
            pt, [("press1.run", 6.0, 0.0), ("press1.temp", 6.0, 64.0), ("press1.temp", 7.0, 63.0)]
        )
    )
    assert [type(e).__name__ for e in out] == ["AlarmCleared", "WriteRequest", "LogMessage"]
    assert out[1] == WriteRequest("press1_restart", "press1.run", 1.0, 7.0)


# --- determinism -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(50.0, 100.0), min_size=1, max_size=80),
    bad=st.sets(st.integers(0, 79), max_size=10),
    cuts=st.sets(st.integers(1, 79), max_size=10),
)
def test_batch_splitting_does_not_change_effects(
    values: list[float], bad: set[int], cuts: set[int]
) -> None:
    pt = PointTable(16)
    pt.add("press1.temp", "press1", "float32")
    cfg = rule(clear="press1.temp < 70", for_=1.5)
    rows = [("press1.temp", 0.5 * i, v, BAD if i in bad else GOOD) for i, v in enumerate(values)]
    whole = RuleEngine([cfg], pt).process(batch(pt, rows))  # type: ignore[arg-type]
    eng = RuleEngine([cfg], pt)
    pieces: list[Any] = []
    edges = [0, *sorted(c for c in cuts if c < len(rows)), len(rows)]
    for a, b in zip(edges, edges[1:], strict=False):
        pieces += eng.process(batch(pt, rows[a:b]))  # type: ignore[arg-type]
    assert pieces == whole
