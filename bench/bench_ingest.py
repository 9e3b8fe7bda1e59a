"""Point-table ingest: the old per-sample path vs the batch ingest into a ring bank, side by side.

Usage: ``python bench/bench_ingest.py [--quick] [--points 10000] [--batch 100] [--capacity 128]``.

The load is the 100k dp/s bench's: 100 devices x 100 registers, so every batch is one device's
poll response (100 consecutive point ids, all GOOD) and the batches cycle over 10k points. For
each twin (compiled and pure) it prints the median time per batch of

- ``old``: per-point rings (two arrays each) and the per-sample loop ``PointTable.ingest`` used
  before (``rings[pid].push(t, v)`` per GOOD sample, then the last-value columns);
- ``new``: rings in a ``RingBank`` and one ``ringbuf.ingest`` call per batch;

the ratio old/new, and the memory the rings of all points take, old vs new: the growth of the
resident set of a fresh process that builds them and fills every ring (``--rss-of`` runs that
process).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway._pure import ringbuf as pure  # noqa: E402
from gateway.core.model import Quality, SampleBatch  # noqa: E402

try:
    from gateway._native import ringbuf as native  # noqa: E402
except ImportError:
    sys.exit("gateway._native.ringbuf is not built: python setup.py -q build_ext --inplace")

GOOD = int(Quality.GOOD)


class Columns:
    """The point table's per-point state, without the names: rings and last-value columns."""

    def __init__(self, rings: list[Any]) -> None:
        n = len(rings)
        self.rings = rings
        self.last_value = np.full(n, np.nan)
        self.last_ts = np.full(n, np.nan)
        self.last_quality = np.full(n, 2, np.uint8)


def old_ingest(t: Columns, batch: SampleBatch) -> None:
    """``PointTable.ingest`` before the batch ingest, for batches of at most 256 samples."""
    good = batch.quality == Quality.GOOD
    rings = t.rings
    for pid, ts, v, ok in zip(
        batch.point_ids.tolist(),
        batch.ts.tolist(),
        batch.values.tolist(),
        good.tolist(),
        strict=True,
    ):
        if ok:
            rings[pid].push(ts, v)
    t.last_value[batch.point_ids] = batch.values
    t.last_ts[batch.point_ids] = batch.ts
    t.last_quality[batch.point_ids] = batch.quality


def new_ingest(mod: ModuleType) -> Callable[[Columns, SampleBatch], None]:
    def ingest(t: Columns, batch: SampleBatch) -> None:
        mod.ingest(
            t.rings, batch.point_ids, batch.ts, batch.values, batch.quality, GOOD,
            t.last_value, t.last_ts, t.last_quality,
        )  # fmt: skip

    return ingest


def batches(points: int, size: int) -> list[SampleBatch]:
    """One poll response per device: ``size`` consecutive ids, GOOD, fresh values."""
    rng = np.random.default_rng(0)
    out = []
    for d in range(points // size):
        ids = np.arange(d * size, (d + 1) * size, dtype=np.uint32)
        out.append(
            SampleBatch(
                ids, np.full(size, 1.7e9 + d), rng.normal(size=size), np.zeros(size, np.uint8)
            )
        )
    return out


def build(mod: ModuleType, layout: str, points: int, capacity: int) -> Columns:
    """The rings of ``points`` points: two arrays each (old) or rows of a RingBank (new)."""
    if layout == "old":
        return Columns([mod.RingBuffer(capacity) for _ in range(points)])
    bank = mod.RingBank(capacity)
    return Columns([bank.new_ring() for _ in range(points)])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def rss_of(twin: str, layout: str, points: int, capacity: int) -> int:
    """Resident-set growth of building and filling the rings, in a fresh process."""
    cmd = [sys.executable, __file__, "--rss-of", f"{twin}:{layout}", "--points", str(points)]
    out = subprocess.run(
        [*cmd, "--capacity", str(capacity)], capture_output=True, text=True, check=True, timeout=120
    )
    return int(out.stdout)


def measure_rss(spec: str, points: int, capacity: int) -> None:
    twin, layout = spec.split(":")
    mod = native if twin == "native" else pure
    fill_t, fill_v = np.arange(capacity + 1.0), np.ones(capacity + 1)
    before = rss_bytes()
    table = build(mod, layout, points, capacity)
    for ring in table.rings:
        ring.extend(fill_t, fill_v)
    print(rss_bytes() - before)


def median_batch_time(
    ingest: Callable[[Columns, SampleBatch], None],
    table: Columns,
    load: list[SampleBatch],
    repeat: int,
) -> float:
    """Median seconds per batch over ``repeat`` passes of the whole load."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in load:
            ingest(table, b)
        runs.append((time.perf_counter() - t0) / len(load))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, a smoke test")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="samples per batch (<= 256)")
    parser.add_argument("--capacity", type=int, default=128, help="ring capacity per point")
    parser.add_argument("--rss-of", metavar="TWIN:LAYOUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        measure_rss(args.rss_of, args.points, args.capacity)
        return
    if not 1 <= args.batch <= 256 or args.points < args.batch or args.capacity < 1:
        parser.error("need 1 <= --batch <= 256, --points >= --batch and --capacity >= 1")
    repeat = 3 if args.quick else 9
    load = batches(args.points, args.batch)
    print(
        f"{args.points} points, ring capacity {args.capacity}, {len(load)} batches of {args.batch}"
        f" samples per pass; median of {repeat} passes"
    )
    print(f"{'twin':8} {'old µs/batch':>13} {'new µs/batch':>13} {'old/new':>8} {'ns/sample new':>14}"
          f" {'RSS MB old':>11} {'RSS MB new':>11}")  # fmt: skip
    for name, mod in (("native", native), ("pure", pure)):
        old_t, new_t = (build(mod, layout, args.points, args.capacity) for layout in ("old", "new"))
        old_mem, new_mem = (
            rss_of(name, layout, args.points, args.capacity) for layout in ("old", "new")
        )
        for t, fn in ((old_t, old_ingest), (new_t, new_ingest(mod))):
            median_batch_time(fn, t, load, 1)  # warm up: fill the rings, touch every page
        t_old = median_batch_time(old_ingest, old_t, load, repeat)
        t_new = median_batch_time(new_ingest(mod), new_t, load, repeat)
        print(
            f"{name:8} {t_old * 1e6:13.1f} {t_new * 1e6:13.1f} {t_old / t_new:7.1f}x"
            f" {t_new / args.batch * 1e9:14.0f} {old_mem / 1e6:11.1f} {new_mem / 1e6:11.1f}"
        )
        ring_a, ring_b = old_t.rings[-1].last(args.capacity), new_t.rings[-1].last(args.capacity)
        same = (
            ring_a[1].tolist() == ring_b[1].tolist()
            and (old_t.last_value == new_t.last_value).all()
        )
        assert same, "old and new ingest disagree"


if __name__ == "__main__":
    main()
