"""The soak's verdict on the data: what the cloud stored against what the gateway counted.

Sequences (no hole but a declared DROP, hw at the end of them) come from
:func:`hil_tests.rig.check_sequences`; this module adds the payload-level checks one scan of the
telemetry records can make in bounded memory (a few arrays the size of the point count):

- duplicates / order: per point, every stored sample's ts is later than the one before it (a
  record stored twice, or replayed under a new seq, shows up as a ts that does not advance);
- completeness per poll: every point of a device has the same number of samples (a poll's batch is
  one record, so a truncated record leaves its device's points unequal; a record lost whole is a
  seq hole or a shortfall against the gateway's counters);
- values: the bench model's uint16 registers stay within 1000 +- 900 (a corrupted payload that
  still decodes would leave that band);
- totals, compared by the caller with the gateway's own counters (samples acquired, responses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

from hil_tests.rig import read_only

#: BenchModel: 1000 + 900 * sin(...), so a uint16 register reads 100..1900.
BENCH_RANGE = (100.0, 1900.0)


@dataclass
class TelemetryScan:
    records: int = 0
    datapoints: int = 0
    good: int = 0
    bad: int = 0
    in_window: int = 0
    not_advancing: int = 0  # samples whose ts did not advance past their point's previous one
    out_of_range: int = 0
    unknown_points: int = 0
    per_device: dict[str, tuple[int, int]] = field(default_factory=dict)  # (min, max) per point

    @property
    def uneven_devices(self) -> list[str]:
        return [d for d, (lo, hi) in self.per_device.items() if lo != hi]


def point_model(db: Path, gateway: str) -> list[dict]:
    """The last point model the gateway sent (its ``meta`` stream)."""
    with read_only(db) as con:
        rows = con.execute(
            "SELECT payload FROM records WHERE gateway = ? AND stream = 'meta' ORDER BY rowid",
            (gateway,),
        ).fetchall()
    points: list[dict] = []
    for (payload,) in rows:
        rec = msgpack.unpackb(payload, raw=False)
        if rec.get("kind") == "point_model":
            points = rec["points"]
    return points


def scan_telemetry(
    db: Path, gateway: str, window: tuple[float, float], in_range_below: int
) -> TelemetryScan:
    """One pass over the gateway's telemetry in the cloud store (see the module docstring).

    ``window``: wall-clock (t0, t1) whose samples count as delivered in the measured run.
    ``in_range_below``: registers r0..r{n-1} are the bench's uint16 ones (range-checked).
    """
    points = point_model(db, gateway)
    if not points:
        raise AssertionError("no point model in the cloud store: cannot name the telemetry")
    n = max(p["id"] for p in points) + 1
    checked = np.zeros(n, dtype=bool)
    device_of: dict[int, str] = {}
    for p in points:
        device_of[p["id"]] = p["device"]
        reg = p["name"].rsplit(".", 1)[-1]
        checked[p["id"]] = (
            reg.startswith("r") and reg[1:].isdigit() and int(reg[1:]) < in_range_below
        )
    last = np.full(n, -np.inf)
    count = np.zeros(n, dtype=np.int64)
    out = TelemetryScan()
    lo_v, hi_v = BENCH_RANGE
    t0, t1 = window
    with read_only(db) as con:
        cur = con.execute(
            "SELECT payload FROM records WHERE gateway = ? AND stream = 'telemetry' "
            "ORDER BY epoch, seq",
            (gateway,),
        )
        for (payload,) in cur:
            rec = msgpack.unpackb(payload, raw=False)
            if rec.get("kind") == "point_model":
                continue
            ids = np.asarray(rec["id"], dtype=np.int64)
            ts = np.asarray(rec["ts"], dtype=float)
            x = np.asarray(rec["x"], dtype=float)  # None (bad quality) -> NaN
            q = np.asarray(rec["q"], dtype=np.int64)
            out.records += 1
            out.datapoints += len(ids)
            unknown = (ids < 0) | (ids >= n)
            if unknown.any():
                out.unknown_points += int(unknown.sum())
                keep = ~unknown
                ids, ts, x, q = ids[keep], ts[keep], x[keep], q[keep]
            good = q == 0
            out.good += int(good.sum())
            out.bad += int((~good).sum())
            out.in_window += int(((ts >= t0) & (ts < t1)).sum())
            sel = checked[ids] & good
            out.out_of_range += int(((x[sel] < lo_v) | (x[sel] > hi_v)).sum())
            if len(np.unique(ids)) == len(ids):
                out.not_advancing += int((ts <= last[ids]).sum())
                last[ids] = np.maximum(last[ids], ts)
                count[ids] += 1
            else:  # one point twice in a batch: walk it in order
                for pid, t in zip(ids.tolist(), ts.tolist(), strict=True):
                    if t <= last[pid]:
                        out.not_advancing += 1
                    last[pid] = max(last[pid], t)
                    count[pid] += 1
    by_dev: dict[str, list[int]] = {}
    for pid, dev in device_of.items():
        by_dev.setdefault(dev, []).append(int(count[pid]))
    out.per_device = {d: (min(c), max(c)) for d, c in by_dev.items()}
    return out
