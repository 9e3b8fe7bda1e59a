"""Issue 15: memory is bounded by configuration, never by load.

A real runtime polls real pymodbus devices faster than its queue file can take the records (the
test holds SQLite's write lock on the queue, so the writer thread waits in ``BEGIN IMMEDIATE``).
What waits in memory must stay at ``uplink.buffer_bytes``; what cannot be taken is dropped at the
source, counted per device (``gateway_samples_dropped_total``), logged once per episode and
announced upstream as a ``backpressure`` gap that reaches a real cloud receiver. Every sample is
accounted for: delivered to the cloud or counted as dropped. A flood of 900k samples (~20 MB as records) offered
while the queue takes nothing leaves the process's RSS flat.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from uplink_support import run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import GatewayConfig, UplinkConfig
from gateway.core.model import SampleBatch
from gateway.core.records import decode
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory
from gateway.drivers.sim.factory import bench_factory, device_config
from gateway.uplink.client import Uplink
from gateway.uplink.writer import GroupCommitWriter

BUFFER = 48 * 1024  # bytes: a few dozen telemetry records of these devices
DEVICES, REGISTERS, PERIOD = 3, 40, 0.01  # ~12k samples/s offered


def _config(tmp_path: Path, ports: list[int], endpoint: str) -> GatewayConfig:
    specs = bench_factory(DEVICES, REGISTERS, 0)
    return GatewayConfig(
        id="bp-gw",
        data_dir=str(tmp_path),
        metrics_listen=None,
        devices=tuple(
            device_config(s, port=p, period=PERIOD) for s, p in zip(specs, ports, strict=True)
        ),
        uplink=UplinkConfig(
            endpoints=(endpoint,),
            queue=str(tmp_path / "q.db"),
            insecure=True,
            batch_max_delay=0.01,
            buffer_bytes=BUFFER,
        ),
    )


def test_queue_slower_than_the_load_bounded_memory_every_drop_counted_and_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.runtime")
    store = SQLiteCloudStore(str(tmp_path / "cloud.db"))

    async def main() -> None:
        async with (
            Factory(bench_factory(DEVICES, REGISTERS, 0)) as factory,
            running_receiver(store) as rx,
        ):
            ports = [factory.ports[f"bench{i}"] for i in range(DEVICES)]
            config = _config(tmp_path, ports, rx.endpoint)
            rt = Runtime(config)
            stop = asyncio.Event()
            task = asyncio.create_task(rt.run(stop))
            try:
                await wait_until(
                    lambda: rt.uplink.stats()["committed"] >= 20, "first commits", timeout=10
                )
                # The disk stops taking writes: the writer thread waits for the lock.
                hold = sqlite3.connect(config.uplink.queue, isolation_level=None, timeout=10)
                hold.execute("BEGIN IMMEDIATE")
                held_at = rt.metrics.get("samples_total")
                peak = 0
                try:
                    for _ in range(40):  # 2 s at 12k samples/s: ~10x the buffer offered
                        await asyncio.sleep(0.05)
                        peak = max(peak, int(rt.uplink.stats()["pending_bytes"]))  # type: ignore[call-overload]
                    # Far beyond the buffer: 900k samples (~20 MB as records) offered, one poll per turn,
                    # while the queue takes nothing. The process's RSS must stay flat.
                    before = _rss_mb()
                    flooded = await _flood(rt, batches=300, repeat=100)
                    growth = _rss_mb() - before
                    peak = max(peak, int(rt.uplink.stats()["pending_bytes"]))  # type: ignore[call-overload]
                    assert growth < 3.0, f"RSS grew {growth:.1f} MB for {flooded} samples offered"
                    offered = rt.metrics.get("samples_total") - held_at
                    dropped = _dropped(rt)
                    # Bounded by the configuration (telemetry stops at BUFFER; events may use
                    # the reserve of an eighth above it), whatever was offered.
                    assert 0 < peak <= BUFFER + BUFFER // 8, peak
                    assert sum(dropped.values()) > 0.5 * offered, (dropped, offered)
                    assert set(dropped) == {f"bench{i}" for i in range(DEVICES)}, dropped
                    starts = [r for r in caplog.records if "dropping telemetry" in r.message]
                    assert len(starts) == 1, [r.message for r in caplog.records]
                finally:
                    hold.execute("ROLLBACK")
                    hold.close()
                await wait_until(
                    lambda: any("keeps up again" in r.message for r in caplog.records),
                    "the end of the drop episode",
                    timeout=10,
                )
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
            stats = rt.uplink.stats()
            dropped = _dropped(rt)
            total = rt.metrics.get("samples_total")
            # The backlog left in the queue file goes to the cloud with a plain uplink.
            up = Uplink(config.uplink, config.id)
            await up.start()
            try:
                await wait_until(
                    lambda: all(s["depth"] == 0 for s in up.stats()["streams"].values()),  # type: ignore[attr-defined]
                    "the queue's backlog acknowledged by the cloud",
                    timeout=15,
                )
            finally:
                await up.stop()
            gaps = [
                g for g in store.gaps("bp-gw", "telemetry", _epoch(store)) if g.reason != "quota"
            ]
            assert {g.reason for g in gaps} == {"backpressure"}, gaps
            announced = sum(g.last - g.first + 1 for g in gaps)
            assert announced == stats["dropped_by"]["backpressure"] > 0, (gaps, stats)  # type: ignore[index]
            delivered = sum(
                len(decode(r.payload)["id"])
                for r in store.records("bp-gw", "telemetry", _epoch(store))
            )
            # Every sample the drivers produced reached the cloud or is counted as dropped.
            assert delivered + sum(dropped.values()) == total, (delivered, dropped, total)

    run(main(), timeout=60)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def _flood(rt: Runtime, batches: int, repeat: int) -> int:
    """Hand the runtime ``batches`` poll results of one device each (its points ``repeat``
    times over, as a driver would), one per loop turn; returns the samples offered."""
    per_device = [
        np.array([p.id for p in rt.points.infos if p.device == f"bench{i}"], np.uint32)
        for i in range(DEVICES)
    ]
    offered = 0
    for k in range(batches):
        ids = np.tile(per_device[k % DEVICES], repeat)
        values = np.arange(ids.shape[0], dtype=np.float64) + k
        rt.on_batch(SampleBatch.uniform(ids, time.time(), values))
        offered += ids.shape[0]
        await asyncio.sleep(0)
    return offered


def _dropped(rt: Runtime) -> dict[str, float]:
    out = {}
    for i in range(DEVICES):
        labels = (("device", f"bench{i}"), ("reason", "backpressure"))
        n = rt.metrics.get("samples_dropped_total", labels)
        if n:
            out[f"bench{i}"] = n
    return out


def _epoch(store: SQLiteCloudStore) -> int:
    (st,) = [s for s in store.gateways() if s.stream == "telemetry"]
    return st.epoch


def test_writer_refuses_beyond_its_byte_budget_and_counts_it() -> None:
    """The writer's own hard limit (an eighth above the budget) for submitters that do not ask
    first: the new record is refused, counted, and becomes a gap like any refusal."""

    class _NoQueue:
        def marker_due_in(self) -> None:
            return None

    loop = asyncio.new_event_loop()
    try:
        w = GroupCommitWriter(
            _NoQueue(),  # type: ignore[arg-type]
            loop, lambda r: None, 1000, 1.0, 10**6, max_bytes=8 * 1024,
        )  # fmt: skip
        taken = sum(w.submit("telemetry", b"x" * 900) for _ in range(20))
        assert w.full and taken == 8  # (900 + 128) * 8 <= 9216 < (900 + 128) * 9
        assert w.dropped_by == {"overflow": 12}
        assert w.submit_many("events", [b"e" * 40, b"e" * 900, b"e"]) == 1
        assert w.full
        assert w.dropped_by == {"overflow": 14}
    finally:
        loop.close()
