"""Cloud ingest: N simulated gateways (CurveZMQ, the real protocol) into ``gateway cloud`` on
PostgreSQL and on SQLite, against each database's own ceiling measured in the same run.

Subject: records/s and datapoints/s committed (the streams' hw, read from the database), with
1, 2 and 3 receivers on one PostgreSQL, and 1 receiver on SQLite. Each record is a real
telemetry record of ``--points`` samples (~``--points`` x 14 bytes of msgpack).
Ceiling: the same rows written straight into the same schema by one client with nothing else
running: PostgreSQL ``COPY`` (binary) and raw SQLite inserts (WAL, ``synchronous=FULL``),
2,000 rows per transaction, measured before and after the subject's runs, the better one taken.
Goal: subject >= 0.5x ceiling.

The load generator, the receivers and the database share this machine (``nproc`` cores): on a
small machine the figures are a floor of what separate hosts give.

    .venv/bin/python bench/bench_cloud_ingest.py [--quick] [--gateways 20] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.cloudsim import (  # noqa: E402
    STREAM,
    SimGateway,
    fleet_keys,
    receiver_process,
    telemetry_record,
)
from gateway.cloud.store import SQLiteCloudStore  # noqa: E402
from gateway.core.processes import ManagedProcess  # noqa: E402

TX_ROWS = 2000


def _ready(proc: ManagedProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "cloud: ROUTER" not in proc.log_tail(200):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not start:\n{proc.log_tail()}")
        time.sleep(0.1)


def _rows(n_gw: int, per_gw: int, points: int) -> list[tuple[str, int, bytes]]:
    t0 = time.time()
    return [
        (f"gw{g:03d}", s, telemetry_record(s, points, t0))
        for g in range(n_gw)
        for s in range(1, per_gw + 1)
    ]


# --- ceilings -----------------------------------------------------------------------------------


def ceiling_pg(
    dsn: str, rows: list[tuple[str, int, bytes]], cluster: object | None = None
) -> tuple[float, float]:
    """Rows/s by binary COPY into the store's own (partitioned) records table, and the
    database's CPU seconds per row meanwhile."""
    import psycopg

    from gateway.cloud.store_pg import PostgresCloudStore

    with PostgresCloudStore(dsn, points=False):  # schema + today's partition
        pass
    now = time.time()
    at = datetime.fromtimestamp(now, timezone.utc)
    with psycopg.connect(dsn) as conn:
        c0 = cpu_seconds(server_pids(cluster))
        t0 = time.perf_counter()
        for i in range(0, len(rows), TX_ROWS):
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(
                    "COPY records (gateway, stream, epoch, seq, payload, received_ts, received_at)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as cp:
                    cp.set_types(["text", "text", "int8", "int8", "bytea", "float8", "timestamptz"])
                    for gw, seq, payload in rows[i : i + TX_ROWS]:
                        cp.write_row((gw, STREAM, 1, seq, payload, now, at))
        rate = len(rows) / (time.perf_counter() - t0)
        return rate, (cpu_seconds(server_pids(cluster)) - c0) / len(rows)


def ceiling_sqlite(path: str, rows: list[tuple[str, int, bytes]]) -> float:
    """Rows/s by plain executemany into the store's records table (WAL, synchronous=FULL)."""
    with SQLiteCloudStore(path):  # the schema
        pass
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    now = time.time()
    t0 = time.perf_counter()
    for i in range(0, len(rows), TX_ROWS):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO records(gateway, stream, epoch, seq, payload, received_ts) "
            "VALUES (?, ?, 1, ?, ?, ?)",
            [(gw, STREAM, seq, p, now) for gw, seq, p in rows[i : i + TX_ROWS]],
        )
        db.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - t0)
    db.close()
    return rate


# --- subject ------------------------------------------------------------------------------------


def committed_pg(dsn: str) -> Callable[[], int]:
    import psycopg

    def count() -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(hw), 0) FROM streams WHERE stream = %s", (STREAM,)
            ).fetchone()
        return int(row[0]) if row else 0

    return count


def committed_sqlite(path: str) -> Callable[[], int]:
    def count() -> int:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute(
                "SELECT coalesce(sum(hw), 0) FROM streams WHERE stream = ?", (STREAM,)
            ).fetchone()
        finally:
            db.close()
        return int(row[0])

    return count


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (all their threads)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def server_pids(cluster: object | None) -> list[int]:
    """The PostgreSQL cluster's processes (postmaster and backends), or none."""
    if cluster is None:
        return []
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])  # type: ignore[attr-defined]
    proc = psutil.Process(pid)
    return [pid, *(c.pid for c in proc.children())]


class Cpu:
    """CPU seconds per process group over one measured window."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def begin(self) -> None:
        self.start = {k: cpu_seconds(f()) for k, f in self.groups.items()}

    def end(self) -> None:
        self.used = {k: cpu_seconds(f()) - self.start[k] for k, f in self.groups.items()}


def subject(
    work: Path, db: str, receivers: int, gateways: int, seconds: float, points: int,
    count: Callable[[], int], extra: tuple[str, ...] = (), cluster: object | None = None,
) -> tuple[float, dict[str, float]]:  # fmt: skip
    """Records/s committed with ``receivers`` processes on ``db`` and ``gateways`` senders, and
    the CPU seconds per record of the receivers, the database and the load generator."""
    names = [f"gw{i:03d}" for i in range(gateways)]
    keys_dir, allow_dir, curves = fleet_keys(work, names)
    made = [receiver_process(work, i, db, keys_dir, allow_dir, 600) for i in range(receivers)]
    for proc, _ in made:
        proc.argv += list(extra)
    procs = [p.start() for p, _ in made]
    endpoints = [e for _, e in made]
    try:
        for p in procs:
            _ready(p)
        fleet = [
            SimGateway(n, [endpoints[i % receivers]], curves[n], count=10**9, points=points,
                       batch=100, window=8, ack_timeout=30.0, same_payload=True)
            for i, n in enumerate(names)
        ]  # fmt: skip

        cpu = Cpu({
            "receiver": lambda: [p.pid for p in procs],
            "database": lambda: server_pids(cluster),
            "load generator": lambda: [os.getpid()],
        })  # fmt: skip

        async def main() -> float:
            stop = asyncio.Event()
            runs = [asyncio.ensure_future(g.run(stop)) for g in fleet]
            await asyncio.sleep(2.0)  # warm-up: connections, first partitions, caches
            loop = asyncio.get_running_loop()
            c0 = await loop.run_in_executor(None, count)
            cpu.begin()
            t0 = time.perf_counter()
            await asyncio.sleep(seconds)
            cpu.end()
            c1 = await loop.run_in_executor(None, count)
            dt = time.perf_counter() - t0
            nonlocal committed
            committed = c1 - c0
            stop.set()
            for r in runs:
                r.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            return (c1 - c0) / dt

        committed = 0
        rate = asyncio.run(main())
        return rate, {k: v / max(1, committed) for k, v in cpu.used.items()}
    finally:
        for p in procs:
            p.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds per case: smoke test")
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window per case")
    ap.add_argument("--points", type=int, default=10, help="datapoints per record")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    from pg_support import private_cluster, server_bindir

    print(f"cloud ingest: {args.gateways} CurveZMQ gateways, {args.points} datapoints/record, "
          f"{seconds:.0f} s per case, {os.cpu_count()} cores shared by all")  # fmt: skip
    results: list[tuple[str, float, float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = _rows(args.gateways, 2000 if args.quick else 5000, args.points)
        sq_ceiling = ceiling_sqlite(str(work / "ceiling.db"), rows)
        sq, sq_cpu = subject(work / "sq", str(work / "cloud.db"), 1, args.gateways, seconds,
                             args.points, committed_sqlite(str(work / "cloud.db")))  # fmt: skip
        sq_ceiling = max(sq_ceiling, ceiling_sqlite(str(work / "ceiling2.db"), rows))
        print(
            f"SQLite ceiling (WAL FULL inserts), better of two: {sq_ceiling:.0f} rows/s", flush=True
        )
        results.append(("SQLite, 1 receiver", sq, sq_ceiling, sq_cpu))
        pg_cpu_row = 0.0
        if server_bindir() is None:
            print("PostgreSQL: SKIPPED, no server binaries (apt-get install postgresql)")
        else:
            with private_cluster(fsync=True) as pg:
                pg_ceiling, pg_cpu_row = ceiling_pg(pg.create_db("ceiling"), rows, pg)
                print(f"PostgreSQL ceiling (COPY): {pg_ceiling:.0f} rows/s", flush=True)
                cases = [(n, ("--no-points",), "records only") for n in (1, 2, 3)]
                cases.append((1, (), "+ decoded point rows"))
                for n, extra, what in cases:
                    dsn = pg.create_db(f"rx{n}")
                    rate, cpu = subject(work / f"pg{n}{len(extra)}", dsn, n, args.gateways,
                                        seconds, args.points, committed_pg(dsn), extra, pg)  # fmt: skip
                    results.append((f"PostgreSQL, {n} receiver(s), {what}", rate, pg_ceiling, cpu))
                # The machine may be shared: measure the ceiling again and take the better one,
                # so no ratio flatters the subject.
                again, cpu_again = ceiling_pg(pg.create_db("ceiling2"), rows, pg)
                print(f"PostgreSQL ceiling (COPY), again: {again:.0f} rows/s", flush=True)
                best = max(pg_ceiling, again)
                pg_cpu_row = min(pg_cpu_row, cpu_again)
                results = [(n, r, best if c == pg_ceiling else c, u) for n, r, c, u in results]
    print(f"{'case':48} {'records/s':>10} {'datapoints/s':>13} {'ceiling rec/s':>14} {'ratio':>6}")
    for name, rate, ceiling, _ in results:
        print(f"{name:48} {rate:10.0f} {rate * args.points:13.0f} {ceiling:14.0f} "
              f"{rate / ceiling:5.2f}x")  # fmt: skip
    print("CPU per 1,000 records committed (ms; load-independent: sizing in docs/cloud-fleet.md)")
    print(f"{'case':48} {'receiver':>9} {'database':>9} {'load gen':>9}")
    for name, _, _, cpu in results:
        print(f"{name:48} {cpu['receiver'] * 1e6:9.0f} {cpu.get('database', 0) * 1e6:9.0f} "
              f"{cpu['load generator'] * 1e6:9.0f}")  # fmt: skip
    if pg_cpu_row:
        print(f"{'PostgreSQL ceiling: COPY of the same rows':48} {'':>9} {pg_cpu_row * 1e6:9.0f}")
    print("goal: >= 0.50x of the database's own ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
