"""Node driver against the MicroPython SDK file itself, run under CPython over UDP and a pty."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import threading
import tty
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rtu_support import wait_for

from gateway.config import DeviceConfig, NodeConfig, PointConfig
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.modbus_tcp import WriteError
from gateway.drivers.node import NodeDevice, UartNodeLink, UdpNodeLink

SDK = Path(__file__).resolve().parents[1] / "micropython" / "gwnode.py"


def load_sdk() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gwnode", SDK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gwnode = load_sdk()


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []

    def values(self, pid: int) -> list[float]:
        return [float(v) for b in self.batches for i, v, q in zip(b.point_ids, b.values, b.quality,
                strict=True) if i == pid and q == Quality.GOOD]  # fmt: skip


def node_config(node_id: int, **node: Any) -> DeviceConfig:
    points = (
        PointConfig("temp", channel=0, type="float32"),
        PointConfig("door", channel=1, type="bool"),
        PointConfig("count", channel=2, type="uint32"),
        PointConfig("pump", channel=3, type="float32", writable=True),
    )
    return DeviceConfig(f"n{node_id}", driver="node", timeout=0.2, points=points,
                        node=NodeConfig(node_id=node_id, **node))  # fmt: skip


def ids(cfg: DeviceConfig) -> dict[str, int]:
    return {f"{cfg.name}.{p.name}": i for i, p in enumerate(cfg.points)}


def in_loop(fn: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def test() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30.0))

    return test


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


@in_loop
async def test_sdk_over_udp_readings_acks_duplicates_and_writes() -> None:
    sink = Sink()
    cfg = node_config(7, listen="127.0.0.1:0")
    link = UdpNodeLink("127.0.0.1:0")
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    writes: list[tuple[int, float]] = []
    node = gwnode.Node(gwnode.UdpTransport(*link.address), 7,
                       on_write=lambda ch, v: writes.append((ch, v)) or ch == 3)  # fmt: skip
    try:
        ok = await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 21.5), (1, gwnode.BOOL, 1),
                                                (2, gwnode.UINT32, 4_000_000_000)]))  # fmt: skip
        assert ok and node.resent == 0
        assert sink.values(0) == [21.5] and sink.values(1) == [1.0]
        assert sink.values(2) == [4e9]
        # A retry of an already received frame (our ACK was lost) is ACKed, not ingested twice.
        frame = gwnode.encode_frame(gwnode.READINGS, 7, node.seq,
                                    gwnode.encode_readings([(0, gwnode.FLOAT32, 99.0)]))  # fmt: skip
        node.transport.write(frame)
        await wait_for(lambda: dev.stats()["duplicate_frames"] == 1, 5.0, "duplicate counted")
        assert sink.values(0) == [21.5]
        # A write from the gateway reaches the node's handler and is acknowledged.
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                node.poll(10)

        serving = asyncio.get_running_loop().run_in_executor(None, serve)
        try:
            await dev.write("n7.pump", 2.5)
            with pytest.raises(WriteError) as err:
                await dev.write("n7.temp", 1.0)
            assert err.value.refused
        finally:
            stop.set()
            await serving
    finally:
        node.transport.close()
        await dev.stop()
    assert writes == [(3, 2.5)]
    assert [e.kind for e in sink.events] == ["online"]
    assert dev.stats()["writes"] == 1 and dev.stats()["crc_errors"] == 0


@in_loop
async def test_unacknowledged_readings_are_retried_and_reported() -> None:
    sink = Sink()
    cfg = node_config(8)
    link = UdpNodeLink("127.0.0.1:0")
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    # The node says it is node 9, which the gateway does not know: no ACK, so it retries.
    node = gwnode.Node(gwnode.UdpTransport(*link.address), 9, ack_timeout_ms=30, retries=2)
    try:
        assert not await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 1.0)]))
    finally:
        node.transport.close()
        await dev.stop()
    assert node.resent == 2 and node.failed == 1
    assert dev.stats()["unknown_node_frames"] == 3 and not sink.batches


class PtyUart:
    """machine.UART-like object on the master side of a pty (the node's end of the wire)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 4096) or None
        except (BlockingIOError, OSError):
            return None


@in_loop
async def test_sdk_over_a_pty_uart_with_garbage_on_the_line() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    sink = Sink()
    cfg = node_config(3, transport="uart", port=os.ttyname(slave))
    link = UartNodeLink(os.ttyname(slave), 115200)
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    node = gwnode.Node(gwnode.UartTransport(PtyUart(master)), 3)
    try:
        os.write(master, b"\x13\x37noise without a delimiter" * 5)  # boot-loader chatter
        for i in range(5):
            assert await in_thread(lambda i=i: node.send([(0, gwnode.FLOAT32, float(i))]))
    finally:
        await dev.stop()
        os.close(master)
        os.close(slave)
    assert sink.values(0) == [0.0, 1.0, 2.0, 3.0, 4.0]
    st = dev.stats()
    assert st["bad_frames"] == 1 and st["discarded_bytes"] > 100
