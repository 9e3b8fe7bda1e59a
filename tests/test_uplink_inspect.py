"""`gateway queue stats|peek|export` on a real queue file (read-only, next to a writer)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.core.records import encode_event
from gateway.uplink import inspect
from gateway.uplink.queue import DurableQueue, Quota, StreamInfo


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
    assert json.loads(capsys.readouterr().out)["stream"] == "telemetry"
    out = tmp_path / "x.jsonl"
    assert cli_main(["queue", "export", "--file", str(queue_file), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["stream"] for r in lines] == ["telemetry"] * len(lines) and lines
    assert "base64" in lines[0]["record"]
    assert cli_main(["queue", "stats", "--file", str(tmp_path / "none.db")]) == 1


V2_FILE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE streams (stream TEXT PRIMARY KEY, epoch INTEGER NOT NULL, next_seq INTEGER NOT NULL,
    acked_hw INTEGER NOT NULL, records INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE records (stream TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    payload BLOB NOT NULL, PRIMARY KEY (stream, seq));
CREATE TABLE gaps (stream TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    reason TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (stream, first));
CREATE TABLE commands (id TEXT PRIMARY KEY, kind TEXT NOT NULL, outcome TEXT, detail TEXT,
    ts REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', 2), ('epoch', 77), ('created', 1.0);
INSERT INTO streams VALUES ('s', 77, 3, 0, 2, 13);
INSERT INTO records VALUES ('s', 1, 5.0, X'6F6C642D7265636F7264'), ('s', 2, 6.0, X'6E6577');
"""


def test_version_2_file_is_read_then_upgraded_with_checksums(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    con = sqlite3.connect(path)
    con.executescript(V2_FILE)
    con.close()
    assert [r[4] for r in inspect.checked_records(str(path))] == [True, True]  # no CRCs yet
    with DurableQueue(path) as q:  # upgraded in place: each record gets its CRC now
        assert [(s, p, c is not None) for s, p, c in q.read_checked("s", 0, 10)] == [
            (1, b"old-record", True), (2, b"new", True),
        ]  # fmt: skip
        assert q.info("s") == StreamInfo(77, 3, 0, 2, 13)
    assert inspect.stats(str(path))["schema_version"] == 3
    data = path.read_bytes()
    with open(path, "r+b") as f:  # one flipped byte: export and peek say so
        f.seek(data.index(b"old-record"))
        f.write(b"OLD")
    lines: list[dict[str, object]] = []
    inspect.export(str(path), _Collect(lines))
    assert [(x["seq"], x["crc_ok"]) for x in lines] == [(1, False), (2, True)]


class _Collect:
    def __init__(self, out: list[dict[str, object]]) -> None:
        self.out = out

    def write(self, line: str) -> int:
        self.out.append(json.loads(line))
        return len(line)
