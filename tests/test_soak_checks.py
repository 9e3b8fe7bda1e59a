"""The soak's and the chaos tests' verdicts must be able to fail: each check against a cloud store
with the fault it is there to find (a lost record, a record stored twice under a new seq, a poll
cut short, a corrupted value), written through the real SQLiteCloudStore."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest

from bench.soak_check import scan_telemetry
from gateway.cloud.store import SQLiteCloudStore
from hil_tests.rig import check_sequences

GW = "gw"
MODEL = msgpack.packb(
    {
        "v": 1,
        "kind": "point_model",
        "model": "m",
        "points": [
            {"id": i, "name": f"dev{i // 2}.r{i % 2}", "device": f"dev{i // 2}"} for i in range(4)
        ],
    }
)


def poll(device: int, ts: float, value: float = 1000.0) -> bytes:
    ids = [2 * device, 2 * device + 1]
    return msgpack.packb(
        {"v": 1, "model": "m", "id": ids, "ts": [ts, ts], "x": [value, value], "q": [0, 0]}
    )


def store(tmp_path: Path, telemetry: list[bytes]) -> Path:
    db = tmp_path / "cloud.db"
    s = SQLiteCloudStore(db)
    s.open()
    try:
        s.commit(GW, "meta", 1, 1, [MODEL])
        s.commit(GW, "telemetry", 1, 1, telemetry)
    finally:
        s.close()
    return db


def polls(n: int) -> list[bytes]:
    return [poll(d, 100.0 + k) for k in range(n) for d in (0, 1)]


def test_clean_store_passes(tmp_path: Path) -> None:
    db = store(tmp_path, polls(5))
    assert check_sequences(db, GW) == {"meta": 1, "telemetry": 10}
    scan = scan_telemetry(db, GW, (0.0, 1e9), in_range_below=2)
    assert (scan.datapoints, scan.not_advancing, scan.out_of_range) == (20, 0, 0)
    assert not scan.uneven_devices


def test_declared_drop_is_no_hole(tmp_path: Path) -> None:
    db = store(tmp_path, polls(2))
    s = SQLiteCloudStore(db)
    s.open()
    s.drop(GW, "telemetry", 1, 5, 9, "overflow")
    s.commit(GW, "telemetry", 1, 10, [poll(0, 200.0)])
    s.close()
    assert check_sequences(db, GW)["telemetry"] == 5


def test_lost_record_is_a_hole(tmp_path: Path) -> None:
    db = store(tmp_path, polls(5))
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM records WHERE stream = 'telemetry' AND seq = 4")
    with pytest.raises(AssertionError, match="telemetry/1: seq 4 missing"):
        check_sequences(db, GW)


def test_poll_cut_short(tmp_path: Path) -> None:
    short = msgpack.packb({"v": 1, "model": "m", "id": [2], "ts": [9.0], "x": [1.0], "q": [0]})
    db = store(tmp_path, [*polls(2), short])
    assert scan_telemetry(db, GW, (0.0, 1e9), in_range_below=2).uneven_devices == ["dev1"]


def test_record_stored_twice_under_a_new_seq(tmp_path: Path) -> None:
    data = polls(3)
    db = store(tmp_path, [*data, data[2]])
    assert scan_telemetry(db, GW, (0.0, 1e9), in_range_below=2).not_advancing == 2


def test_value_outside_the_bench_range(tmp_path: Path) -> None:
    db = store(tmp_path, [poll(0, 1.0), poll(1, 1.0, value=65535.0)])
    assert scan_telemetry(db, GW, (0.0, 1e9), in_range_below=2).out_of_range == 2
