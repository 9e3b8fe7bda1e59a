"""`gateway export` and the recording formats `gateway rules test` / `gateway models test` read
(real subprocesses, a real SQLite cloud store), and readable times in their output and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway.cloud.store import SQLiteCloudStore
from gateway.core import records
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.yaml"
T0 = 1_764_763_200.0  # 2025-12-03T12:00:00Z

RULES = """
- name: hot
  when: dev.temp > 80
  for: 2s
  clear: dev.temp < 70
  actions:
    - alarm: "dev hot {dev.temp:.1f}"
    - write: {point: dev.run, value: 0}
"""


def gateway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)  # fmt: skip


def make_store(path: Path) -> None:
    """A cloud store as the receiver writes it: two gateways, a point model, telemetry."""
    table = PointTable()
    table.add("dev.temp", "dev", "float64")
    table.add("dev.run", "dev", "bool", writable=True)
    table.add("virtual.mode", "virtual", "float64")
    with SQLiteCloudStore(str(path)) as store:
        for gw in ("gw-a", "gw-b"):
            model, meta = records.point_model(gw, table.infos)
            store.commit(gw, records.STREAM_META, 7, 1, [meta])
            payloads = []
            temps = [60, 85, 86, 87, 88, 90, 75, 65, 60, 60]
            for i, temp in enumerate(temps):
                t = T0 + i
                ids = np.array([0, 1], np.uint32)
                payloads.append(records.encode_telemetry(
                    model, SampleBatch.uniform(ids, t, np.array([float(temp), 1.0]))))  # fmt: skip
            bad = SampleBatch.uniform(np.array([0], np.uint32), T0 + 10.5, np.array([np.nan]),
                                      Quality.BAD)  # fmt: skip
            payloads.append(records.encode_telemetry(model, bad))
            virt = SampleBatch.uniform(np.array([2], np.uint32), T0 + 11, np.array([3.0]))
            payloads.append(records.encode_telemetry(model, virt))
            store.commit(gw, records.STREAM_TELEMETRY, 7, 1, payloads)


def test_export_writes_named_samples_in_both_formats_that_rules_test_replays(
    tmp_path: Path,
) -> None:
    db = tmp_path / "cloud.db"
    make_store(db)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    refused = gateway("export", "--db", str(db), "--format", "csv")
    assert refused.returncode == 2 and "2 gateways (gw-a, gw-b)" in refused.stderr
    assert "--gateway" in refused.stderr and "Traceback" not in refused.stderr

    csv_out = gateway("export", "--db", str(db), "--gateway", "gw-a", "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "ts,point,value,quality"
    assert lines[1] == f"{T0!r},dev.temp,60.0,good"
    assert lines[-1] == f"{T0 + 10.5!r},dev.temp,,bad"
    assert not any("virtual.mode" in line for line in lines), "rules compute virtual points"

    out = tmp_path / "rec.jsonl"
    js = gateway("export", "--db", str(db), "--gateway", "gw-a", "-o", str(out),
                 "--points", "dev.temp", "--from", "2025-12-03T12:00:01Z", "--to", str(T0 + 9))  # fmt: skip
    assert js.returncode == 0, js.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs[0] == {"ts": T0 + 1, "point": "dev.temp", "value": 85.0}
    assert [r["ts"] - T0 for r in recs] == [1, 2, 3, 4, 5, 6, 7, 8]

    # The same samples in every format, detected by extension or content, replay the same.
    full_csv = tmp_path / "full.csv"
    full_csv.write_text(csv_out.stdout)
    full_jsonl = tmp_path / "full.jsonl"
    assert (
        gateway("export", "--db", str(db), "--gateway", "gw-a", "-o", str(full_jsonl)).returncode
        == 0
    )
    no_ext = tmp_path / "full.rec"
    no_ext.write_text(full_jsonl.read_text())
    results = []
    for data in (full_csv, full_jsonl, no_ext):
        r = gateway("rules", "test", str(rules), "--data", str(data), "--json")
        assert r.returncode == 0, r.stderr
        results.append([json.loads(line) for line in r.stdout.splitlines()])
    assert results[0] == results[1] == results[2]
    assert [(e["kind"], e["ts"] - T0) for e in results[0]] == [
        ("alarm_raised", 3.0), ("write", 3.0), ("alarm_cleared", 7.0),
    ]  # fmt: skip


def test_export_refuses_what_is_not_a_store_clearly(tmp_path: Path) -> None:
    missing = gateway("export", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    junk = tmp_path / "junk.db"
    junk.write_text("this is not sqlite\n" * 100)
    r = gateway("export", "--db", str(junk))
    assert r.returncode == 2 and "not a cloud store" in r.stderr and "Traceback" not in r.stderr
    db = tmp_path / "cloud.db"
    make_store(db)
    r = gateway("export", "--db", str(db), "--gateway", "gw-z")
    assert r.returncode == 2 and "no gateway 'gw-z'" in r.stderr and "gw-a" in r.stderr
    r = gateway("export", "--db", str(db), "--gateway", "gw-a", "--from", "yesterday")
    assert r.returncode == 2 and "ISO 8601" in r.stderr
    before = db.stat().st_mtime_ns
    assert gateway("export", "--db", str(db), "--gateway", "gw-a").returncode == 0
    assert db.stat().st_mtime_ns == before, "export must open the store read-only"


@pytest.mark.parametrize("command", ["rules", "models"])
def test_both_test_commands_read_both_formats_and_name_file_and_line(
    tmp_path: Path, command: str
) -> None:
    def run(data: Path) -> subprocess.CompletedProcess[str]:
        if command == "rules":
            return gateway("rules", "test", str(DEMO), "--data", str(data), "--json")
        return gateway("models", "test", "bearing_ae", "--config", str(DEMO), "--data", str(data))

    samples = [(T0 + i * 0.1, 4.0 + float(np.sin(i))) for i in range(200)]
    good_jsonl = tmp_path / "ok.jsonl"
    good_jsonl.write_text("".join(json.dumps({"ts": t, "point": "motor1.vibration", "value": v})
                                  + "\n" for t, v in samples))  # fmt: skip
    good_csv = tmp_path / "ok.csv"
    good_csv.write_text("ts,point,value\n" + "".join(f"{t!r},motor1.vibration,{v!r}\n"
                                                     for t, v in samples))  # fmt: skip
    a, b = run(good_jsonl), run(good_csv)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(good_jsonl.read_text().splitlines()[0] + '\n{"ts": 1, "point": \n')
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("ts,point,value\n1,motor1.vibration,1\n\n2,motor1.vibration,abc\n")
    bad_ts = tmp_path / "ts.csv"
    bad_ts.write_text("ts,point,value\nnoon,motor1.vibration,1\n")
    for data, where, what in (
        (bad_json, "bad.jsonl:2", "invalid JSON"),
        (bad_csv, "bad.csv:4", "expected a number, got 'abc'"),
        (bad_ts, "ts.csv:2", "ISO 8601"),
    ):
        r = run(data)
        assert r.returncode != 0 and where in r.stderr and what in r.stderr, r.stderr
        assert "Traceback" not in r.stderr

    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(300 * 2**20)  # sparse: nothing is written, the size alone must refuse it
    r = run(huge)
    assert r.returncode != 0 and "more than the 256 MiB" in r.stderr, r.stderr[-500:]
    long_line = tmp_path / "long.jsonl"
    long_line.write_text('{"ts": 1, "point": "' + "x" * 100_000 + '"}\n')
    r = run(long_line)
    assert r.returncode != 0 and "long.jsonl:1" in r.stderr and "65536" in r.stderr


def test_rules_test_prints_readable_times_with_the_date_when_it_changes(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    midnight = 1_764_806_400.0  # 2025-12-04T00:00:00Z
    temps = [(midnight - 5, 85), (midnight - 1, 86), (midnight - 0.5, 60), (midnight + 2, 90),
             (midnight + 4.25, 91), (midnight + 5, 60)]  # fmt: skip
    data = tmp_path / "d.csv"
    data.write_text("ts,dev.temp\n" + "".join(f"{t!r},{v}\n" for t, v in temps))
    r = gateway("rules", "test", str(rules), "--data", str(data))
    assert r.returncode == 0, r.stderr
    stamps = [line.split()[0] for line in r.stdout.splitlines()]
    assert stamps == [
        "2025-12-03T23:59:57.000Z", "23:59:57.000", "23:59:59.500",
        "2025-12-04T00:00:04.000Z", "00:00:04.000", "00:00:05.000",
    ], r.stdout  # fmt: skip
    assert str(int(midnight)) not in r.stdout


def test_plot_time_axis_shows_dates_not_epoch_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from gateway.rules import plot
    from gateway.rules.testcmd import run

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "d.csv"
    data.write_text("ts,dev.temp\n" + "".join(f"{T0 + i!r},{80 + i}\n" for i in range(10)))
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot.plot_replay(run(rules, data, probe=True), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    fig = figures[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels() if t.get_text()]
    assert labels and any(":" in label for label in labels), labels
    assert not any(label.replace(".", "").isdigit() and float(label) > 1e8 for label in labels)
    assert "UTC" in fig.axes[-1].get_xlabel()


def test_export_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    table = PointTable()
    table.add("dev.x", "dev", "float64")
    model, meta = records.point_model("gw", table.infos)
    db = tmp_path / "cloud.db"
    with SQLiteCloudStore(str(db)) as store:
        store.commit("gw", records.STREAM_META, 1, 1, [meta])
        ids = np.zeros(50, np.uint32)
        store.commit("gw", records.STREAM_TELEMETRY, 1, 1, [
            records.encode_telemetry(model, SampleBatch(ids, T0 + i + np.arange(50) / 50,
                                                        np.arange(50.0), np.zeros(50, np.uint8)))
            for i in range(2000)
        ])  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "export", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"ts,point,value,quality\n"
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 0, err
    assert "Traceback" not in err
