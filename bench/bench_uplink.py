"""Uplink throughput and backlog drain, side by side with raw pyzmq in the same run.

Subject: ``Uplink`` (CurveZMQ, group-committed fsync'd queue, credit window, cumulative ACKs)
to a ``CloudReceiver`` (CurveZMQ + ZAP, SQLite commit per DATA, then ACK) in another process.
Reference: a raw pyzmq DEALER -> ROUTER (another process) with the same batch size (1000 records
of 100 bytes per message, msgpack), the same window (10 messages in flight) and an ack per
message, no encryption, no disk: the ZeroMQ ceiling. Target: subject >= 0.5x reference.

Drain: a backlog of 60 s at 2000 records/s (120k records) accepted while the cloud was down;
time from the cloud's start until the last record is acked (target < 2 s; the leading Python
gateway needs about 16 s for this backlog). Reference: the same 120k through raw pyzmq.

    .venv/bin/python bench/bench_uplink.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import UplinkConfig  # noqa: E402
from gateway.uplink import keys  # noqa: E402
from gateway.uplink.client import Uplink  # noqa: E402
from gateway.uplink.queue import DurableQueue  # noqa: E402

PAYLOAD = b"x" * 100
BATCH = 1000
WINDOW = 10


# --- reference: raw pyzmq -----------------------------------------------------------------------


def _raw_router(endpoint_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind("tcp://127.0.0.1:*")
    endpoint_q.put(s.getsockopt_string(zmq.LAST_ENDPOINT))
    while not stop.is_set():
        if s.poll(100):
            ident, body = s.recv_multipart()
            n = len(msgpack.unpackb(body))
            s.send_multipart([ident, msgpack.packb(n)])
    s.close()
    ctx.term()


def bench_raw(endpoint: str, records: int) -> float:
    """Seconds to push ``records`` through DEALER -> ROUTER, BATCH per message, WINDOW in flight."""
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(endpoint)
    body = msgpack.packb([PAYLOAD] * BATCH, use_bin_type=True)
    msgs = records // BATCH
    d.send(body)  # connect + warm up
    d.recv()
    t0 = time.perf_counter()
    sent = acked = 0
    while acked < msgs:
        while sent < msgs and sent - acked < WINDOW:
            d.send(msgpack.packb([PAYLOAD] * BATCH, use_bin_type=True))  # encoded per message
            sent += 1
        d.recv()
        acked += 1
    dt = time.perf_counter() - t0
    d.close()
    return dt


# --- subject: the uplink ------------------------------------------------------------------------


def _cloud(work: str, endpoint_q: mp.Queue, stop: mp.Event, db: str) -> None:  # type: ignore[type-arg]
    from gateway.cloud.receiver import CloudReceiver
    from gateway.cloud.store import SQLiteCloudStore

    async def main() -> None:
        rx = CloudReceiver(
            "tcp://127.0.0.1:0",
            None,
            SQLiteCloudStore(db),
            server_key=keys.load_secret(f"{work}/keys/cloud.key_secret"),
            allow=keys.AllowList(f"{work}/allowed"),
        )
        ev = asyncio.Event()
        task = asyncio.create_task(rx.run(ev))
        await rx.ready.wait()
        endpoint_q.put(rx.endpoint)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        ev.set()
        await task

    asyncio.run(main())


def _config(work: str, endpoint: str, queue: str) -> UplinkConfig:
    return UplinkConfig(
        endpoints=(endpoint,),
        queue=queue,
        batch_max_records=BATCH,
        batch_max_delay=0.02,
        ack_timeout=10.0,
        max_in_flight=BATCH * WINDOW,
        server_key=f"{work}/keys/cloud.key",
        key_dir=f"{work}/keys",
    )


async def _until_acked(up: Uplink, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        st = up.stats()["streams"]
        assert isinstance(st, dict)
        if st.get("s", {}).get("acked_hw", 0) >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not acked in {timeout}s: {up.stats()}")
        await asyncio.sleep(0.002)


async def bench_uplink(work: str, endpoint: str, records: int, tag: str) -> float:
    """Seconds from the first submit until the cloud acked ``records`` (live streaming)."""
    up = Uplink(_config(work, endpoint, f"{work}/q-{tag}.db"), "bench-gw")
    await up.start()
    try:
        up.submit("s", PAYLOAD)  # connect + first commit before the clock starts
        await _until_acked(up, 1)
        chunk = [PAYLOAD] * 100  # e.g. one poll's worth of records per call
        t0 = time.perf_counter()
        for i in range(records // len(chunk)):
            assert up.submit_many("s", chunk) == len(chunk)
            if i % 50 == 49:
                while up.stats()["pending"] > 20_000:  # type: ignore[operator]
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
        await _until_acked(up, records + 1)
        return time.perf_counter() - t0
    finally:
        await up.stop()


async def bench_drain(work: str, endpoint: str, records: int, tag: str) -> float:
    """A backlog accepted while the cloud was down: seconds until all of it is acked."""
    path = f"{work}/backlog-{tag}.db"
    with DurableQueue(path) as q:
        for _ in range(records // BATCH):
            q.append([("s", PAYLOAD)] * BATCH)
    up = Uplink(_config(work, endpoint, path), "bench-gw")
    t0 = time.perf_counter()
    await up.start()
    try:
        await _until_acked(up, records)
        return time.perf_counter() - t0
    finally:
        await up.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds: smoke test")
    args = ap.parse_args()
    repeats, records = (2, 30_000) if args.quick else (5, 200_000)
    backlog = 20_000 if args.quick else 120_000
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as work:
        keys.create(f"{work}/keys", "cloud")
        keys.create(f"{work}/keys", "bench-gw")
        keys.allow(f"{work}/keys/bench-gw.key", f"{work}/allowed")
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        stop = ctx.Event()
        raw = ctx.Process(target=_raw_router, args=(q, stop), daemon=True)
        raw.start()
        raw_ep = q.get(timeout=20)
        t_raw, t_up, t_drain, t_raw_drain = [], [], [], []
        try:
            for i in range(repeats):
                cstop = ctx.Event()
                cloud = ctx.Process(
                    target=_cloud, args=(work, q, cstop, f"{work}/cloud-{i}.db"), daemon=True
                )
                cloud.start()
                ep = q.get(timeout=20)
                t_raw.append(bench_raw(raw_ep, records))
                t_up.append(asyncio.run(bench_uplink(work, ep, records, f"{i}")))
                t_raw_drain.append(bench_raw(raw_ep, backlog))
                cstop.set()
                cloud.join(20)
                # Drain: the cloud (re)starts when the backlog is already on disk.
                cstop = ctx.Event()
                cloud = ctx.Process(
                    target=_cloud, args=(work, q, cstop, f"{work}/cloud-d{i}.db"), daemon=True
                )
                cloud.start()
                ep = q.get(timeout=20)
                t_drain.append(asyncio.run(bench_drain(work, ep, backlog, f"{i}")))
                cstop.set()
                cloud.join(20)
        finally:
            stop.set()
            raw.join(5)
    r_raw = records / statistics.median(t_raw)
    r_up = records / statistics.median(t_up)
    print(f"throughput, {records:,} records of {len(PAYLOAD)} B, batch {BATCH}, window {WINDOW}, "
          f"median of {repeats}:")  # fmt: skip
    print(f"  raw pyzmq DEALER->ROUTER (no CURVE, no disk)   {r_raw:12,.0f} rec/s")
    print(f"  Uplink CURVE + fsync queue + SQLite cloud + ACK {r_up:11,.0f} rec/s")
    print(f"  ratio uplink/raw: {r_up / r_raw:.2f}x  (target >= 0.5x)")
    d = statistics.median(t_drain)
    print(f"backlog drain, {backlog:,} records (60 s at 2000 rec/s), median of {repeats}:")
    print(
        f"  raw pyzmq transfer of the same records        {statistics.median(t_raw_drain):8.3f} s"
    )
    print(f"  Uplink: cloud start -> last record acked       {d:8.3f} s  "
          f"({backlog / d:,.0f} rec/s; target < 2 s)")  # fmt: skip


if __name__ == "__main__":
    main()
