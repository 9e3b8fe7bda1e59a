"""The demo's screen and plain lines from made-up status snapshots: no terminal needed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.demo.screen import PlainLog, SubscriberView, render_lines

NOW = time.time()


def status(n_points: int = 14, n_recent: int = 40, connected: bool = True) -> dict[str, Any]:
    now = NOW
    long = "a message far longer than any terminal is wide " * 4
    return {
        "samples_per_second": 87.0,
        "samples_total": 123456,
        "devices": {d: {"connected": connected, "last_rtt_ms": 1.5} for d in ("press1", "pump1")},
        "points": [
            {
                "name": f"device{i}.a_rather_long_point_name",
                "value": 1234.5678,
                "unit": "degC",
                "quality": "good" if i % 3 else "uncertain",
            }
            for i in range(n_points)
        ],  # fmt: skip
        "alarms": [{"rule": f"rule{i}", "severity": "major", "active": True} for i in range(9)],
        "uplink": {"link": "connected", "streams": {"telemetry": {"depth": 3}}, "committed": 9},
        "recent": [
            {"kind": "alarm", "ts": now + i, "rule": f"r{i}", "state": "raised", "message": long}
            for i in range(n_recent)
        ],
    }


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40), (60, 20), (40, 10)])
def test_frame_fits_the_terminal(width: int, height: int) -> None:
    lines = render_lines(status(), SubscriberView(), True, time.time(), width, height)
    assert len(lines) <= height
    assert all(len(text) <= width for text, _ in lines), [t for t, _ in lines if len(t) > width]


def test_rule_activity_takes_the_rows_left_newest_last() -> None:
    lines = [t for t, _ in render_lines(status(), SubscriberView(), True, time.time(), 80, 24)]
    assert len(lines) == 24
    shown = [t for t in lines if " alarm raised r" in t]
    assert shown and shown[-1].split()[3] == "r39:", shown  # the newest is at the bottom
    assert lines[-1].startswith("CLOUD")


def test_plain_log_prints_each_change_once() -> None:
    log, view = PlainLog(), SubscriberView()
    first = log.lines(status(n_recent=2), view, True, 1000.0)
    assert sum("alarm raised" in ln for ln in first) == 2
    assert any("device press1 online" in ln for ln in first)
    assert any("summary" in ln for ln in first)
    again = log.lines(status(n_recent=2), view, True, 1001.0)
    assert again == [], "nothing changed, nothing printed"
    later = log.lines(status(n_recent=2, connected=False), view, False, 1002.0)
    assert [ln[9:] for ln in later] == [
        "device press1 OFFLINE",
        "device pump1 OFFLINE",
        "device press1 run coil STOP",
    ]


def test_an_offline_device_without_a_round_trip_yet_is_drawn() -> None:
    """/status is strict JSON: a device that never answered has ``last_rtt_ms: null``."""
    snap = status(connected=False)
    for st in snap["devices"].values():
        st["last_rtt_ms"] = None
    lines = [t for t, _ in render_lines(snap, SubscriberView(), True, time.time(), 120, 40)]
    assert any("press1 OFFLINE -" in t for t in lines), lines


def test_points_are_named_by_asset_and_the_tree_is_shown() -> None:
    """The demo's config has an asset tree: the table says press1.temperature, not press1.temp."""
    from pathlib import Path

    from gateway.config import load_config
    from gateway.demo.screen import ModelLabels

    demo = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"
    model = ModelLabels.of(load_config(demo).assets)
    snap = status(n_points=0)
    snap["points"] = [
        {"name": "press1.temp", "value": 81.5, "unit": "Cel", "quality": "good"},
        {"name": "press1.parts", "value": 42.0, "unit": "{parts}", "quality": "good"},
    ]
    lines = [t for t, _ in render_lines(snap, SubscriberView(), True, NOW, 120, 40, model=model)]
    assert "ASSETS   factory/line1: press1 pump1 motor1 mould1" in lines
    table = "\n".join(lines)
    assert "press1.temperature" in table and "81.50 Cel" in table and "42 {part" in table
