"""Durable queue throughput vs raw sqlite3, and submit -> accepted latency.

Subject: ``DurableQueue.append`` (group commit of ~1000 records of ~100 bytes, WAL,
synchronous=FULL) and draining through ``read`` + ``ack``. Reference: the same rows written with a
plain ``executemany`` into an equivalent table with the same pragmas, in the same run, on the same
disk. Prints medians over repeats and the ratio (target >= 0.7x raw).

Latency: one record submitted to the group-commit writer thread until its commit is reported back
on the event loop, with the default 50 ms batching delay and with an immediate commit (flush).

    .venv/bin/python bench/bench_queue.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.uplink.queue import DurableQueue  # noqa: E402
from gateway.uplink.writer import CommitResult, GroupCommitWriter  # noqa: E402

PAYLOAD = b"x" * 100


def _batches(n_batches: int, size: int) -> list[list[tuple[str, bytes]]]:
    return [[("samples", PAYLOAD)] * size for _ in range(n_batches)]


def bench_queue(path: str, batches: list[list[tuple[str, bytes]]]) -> tuple[float, float]:
    """records/s appended, records/s drained (read + ack) through DurableQueue."""
    total = sum(map(len, batches))
    q = DurableQueue(path)
    try:
        t0 = time.perf_counter()
        for batch in batches:
            q.append(batch)
        t_append = time.perf_counter() - t0
        size = len(batches[0])
        t0 = time.perf_counter()
        hw = 0
        while True:
            rows = q.read("samples", hw, size)
            if not rows:
                break
            hw = rows[-1][0]
            q.ack("samples", hw)
        t_drain = time.perf_counter() - t0
        assert hw == total, (hw, total)
    finally:
        q.close()
    return total / t_append, total / t_drain


def bench_raw(path: str, batches: list[list[tuple[str, bytes]]]) -> tuple[float, float]:
    """The same work written by hand with sqlite3: the floor a queue cannot beat."""
    total = sum(map(len, batches))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE records (stream TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, "
            "payload BLOB NOT NULL, PRIMARY KEY (stream, seq))"
        )
        t0 = time.perf_counter()
        seq = 0
        for batch in batches:
            now = time.time()
            rows = [(s, seq + i + 1, now, p) for i, (s, p) in enumerate(batch)]
            seq += len(batch)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        t_append = time.perf_counter() - t0
        size = len(batches[0])
        t0 = time.perf_counter()
        hw = 0
        while True:
            rows2 = conn.execute(
                "SELECT seq, payload FROM records WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                ("samples", hw, size),
            ).fetchall()
            if not rows2:
                break
            hw = rows2[-1][0]
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM records WHERE stream = ? AND seq <= ?", ("samples", hw))
            conn.execute("COMMIT")
        t_drain = time.perf_counter() - t0
        assert hw == total
    finally:
        conn.close()
    return total / t_append, total / t_drain


async def bench_latency(path: str, n: int, max_delay: float, urge: bool) -> list[float]:
    """Seconds from submit() to the commit callback on the loop, one record at a time."""
    loop = asyncio.get_running_loop()
    q = DurableQueue(path)
    waiter: asyncio.Future[None] | None = None

    def on_commit(result: CommitResult) -> None:
        if waiter is not None and not waiter.done() and result.records:
            waiter.set_result(None)

    writer = GroupCommitWriter(q, loop, on_commit, 1000, max_delay, 100_000)
    writer.start()
    out = []
    try:
        for _ in range(n):
            waiter = loop.create_future()
            t0 = time.perf_counter()
            writer.submit("events", PAYLOAD)
            if urge:
                writer.urge()
            await waiter
            out.append(time.perf_counter() - t0)
    finally:
        writer.stop(10.0)
        q.close()
    return out


def _fresh(tmp: str, name: str) -> str:
    path = os.path.join(tmp, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds: smoke test")
    ap.add_argument("--dir", default=None, help="directory for the SQLite files (default: tmp)")
    args = ap.parse_args()
    repeats, n_batches, n_lat = (3, 10, 20) if args.quick else (7, 40, 100)
    batches = _batches(n_batches, 1000)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        q_app, q_drain, r_app, r_drain = [], [], [], []
        for i in range(repeats):  # interleaved so drift hits both sides alike
            a, d = bench_queue(_fresh(tmp, f"q{i}.db"), batches)
            q_app.append(a)
            q_drain.append(d)
            a, d = bench_raw(_fresh(tmp, f"r{i}.db"), batches)
            r_app.append(a)
            r_drain.append(d)
        lat_delay = asyncio.run(bench_latency(_fresh(tmp, "lat1.db"), n_lat, 0.05, urge=False))
        lat_now = asyncio.run(bench_latency(_fresh(tmp, "lat2.db"), n_lat, 0.05, urge=True))
    med = statistics.median
    print(f"durable queue vs raw sqlite3 (WAL, synchronous=FULL), {n_batches} x 1000 x 100 B, "
          f"{repeats} repeats, medians:")  # fmt: skip
    for name, q, r in (("append", q_app, r_app), ("drain ", q_drain, r_drain)):
        print(
            f"  {name}  DurableQueue {med(q):>10,.0f} rec/s   raw sqlite3 {med(r):>10,.0f} rec/s"
            f"   ratio {med(q) / med(r):.2f}x"
        )

    def pct(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000

    print(f"submit -> accepted, single record, {n_lat} samples:")
    print(
        f"  batch_max_delay 50 ms : p50 {pct(lat_delay, 0.5):6.2f} ms  p99 {pct(lat_delay, 0.99):6.2f} ms"
    )
    print(
        f"  immediate (flush)     : p50 {pct(lat_now, 0.5):6.2f} ms  p99 {pct(lat_now, 0.99):6.2f} ms"
    )


if __name__ == "__main__":
    main()
