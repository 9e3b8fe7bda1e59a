"""`gateway queue stats|peek|export` on a real queue file (read-only, next to a writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.core.records import encode_event
from gateway.uplink import inspect
from gateway.uplink.queue import DurableQueue, Quota


@pytest.fixture
def queue_file(tmp_path: Path) -> Path:
    path = tmp_path / "queue.db"
    q = DurableQueue(path, clock=lambda: 1000.0, quota=Quota(250))
    q.append([("events", encode_event("alarm", 999.0, rule="r1"))])
    q.append([("telemetry", b"%0100d" % i) for i in range(5)])
    q.ack("events", 1)
    q.command_begin("c1", "ping")
    q.close()
    return path


def test_stats_counts_depth_bytes_age_and_gaps(queue_file: Path) -> None:
    st = inspect.stats(str(queue_file), now=1010.0)
    tel = st["streams"]["telemetry"]
    assert st["schema_version"] == 3 and tel["next_seq"] == 6
    assert tel["bytes"] <= 250 and tel["depth"] == tel["bytes"] // 100
    assert tel["pending_gaps"] == {"quota": 5 - tel["depth"]}
    assert tel["oldest_age_s"] == 10.0
    assert st["streams"]["events"]["depth"] == 0 and st["commands"] == {"running": 1}


def test_cli_peek_and_export(
    queue_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["queue", "stats", "--file", str(queue_file)]) == 0
    assert json.loads(capsys.readouterr().out)["streams"]["telemetry"]["next_seq"] == 6
    assert cli_main(["queue", "peek", "--file", str(queue_file), "-n", "1"]) == 0
    assert capsys.readouterr().out.startswith("telemetry ")
    out = tmp_path / "x.jsonl"
    assert cli_main(["queue", "export", "--file", str(queue_file), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["stream"] for r in lines] == ["telemetry"] * len(lines) and lines
    assert "base64" in lines[0]["record"]
    assert cli_main(["queue", "stats", "--file", str(tmp_path / "none.db")]) == 1
