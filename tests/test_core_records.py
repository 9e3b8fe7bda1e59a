from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.core import records
from gateway.core.model import Quality, SampleBatch
from gateway.core.points import PointTable


def _table() -> PointTable:
    t = PointTable(ring_capacity=16)
    t.add("press1.temp", "press1", "float32", unit="degC")
    t.add("press1.run", "press1", "bool", writable=True)
    return t


def test_point_model_hash_is_stable_and_changes_with_the_model() -> None:
    t = _table()
    h1, p1 = records.point_model("gw", t.infos)
    h2, _ = records.point_model("gw", t.infos)
    assert h1 == h2
    rec = records.decode(p1)
    assert rec["kind"] == "point_model" and rec["points"][1]["writable"] is True
    t.add("press1.extra", "press1", "uint16")
    assert records.point_model("gw", t.infos)[0] != h1


def test_telemetry_round_trip_with_bad_quality_as_nil() -> None:
    t = _table()
    model, meta = records.point_model("gw", t.infos)
    batch = SampleBatch(
        np.array([0, 1], np.uint32),
        np.array([10.0, 10.5]),
        np.array([81.25, np.nan]),
        np.array([Quality.GOOD, Quality.BAD], np.uint8),
    )
    rec = records.decode(records.encode_telemetry(model, batch))
    assert rec["x"] == [81.25, None]
    dec = records.ModelDecoder()
    dec.add_model(records.decode(meta))
    assert dec.samples(rec) == [("press1.temp", 10.0, 81.25, 0), ("press1.run", 10.5, None, 2)]


def test_decode_rejects_foreign_payloads() -> None:
    import msgpack

    with pytest.raises(ValueError):
        records.decode(msgpack.packb({"v": 99}))
    with pytest.raises(ValueError):
        records.decode(msgpack.packb([1, 2]))


def test_point_table_ingest_updates_last_values_and_rings() -> None:
    t = _table()
    batch = SampleBatch(
        np.array([0, 0, 1], np.uint32),
        np.array([1.0, 2.0, 2.0]),
        np.array([50.0, 51.0, np.nan]),
        np.array([Quality.GOOD, Quality.GOOD, Quality.BAD], np.uint8),
    )
    t.ingest(batch)
    assert t.last_value[0] == 51.0 and t.last_ts[0] == 2.0
    assert math.isnan(t.last_value[1]) and t.last_quality[1] == Quality.BAD
    ts, vals = t.rings[0].last(10)
    assert list(ts) == [1.0, 2.0] and list(vals) == [50.0, 51.0]
    assert len(t.rings[1]) == 0  # bad samples never enter the ring


def test_ingest_long_batches_group_by_point_in_time_order() -> None:
    t = _table()
    n = 1000
    ids = np.array([i % 2 for i in range(n)], np.uint32)
    ts = np.arange(n, dtype=np.float64)
    q = np.full(n, Quality.GOOD, np.uint8)
    q[10] = Quality.BAD
    t.ingest(SampleBatch(ids, ts, ts * 2, q))
    ring_ts, ring_v = t.rings[0].last(3)
    assert list(ring_ts) == [994.0, 996.0, 998.0] and list(ring_v) == [1988.0, 1992.0, 1996.0]
    assert len(t.rings[1]) == 16  # capacity of the test table: only the newest are kept
    assert t.last_value[1] == 1998.0
