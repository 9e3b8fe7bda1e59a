"""Modbus RTU driver over real ptys against pymodbus's serial server (and RTU over TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import math
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from rtu_support import PtyLine, SerialSlaves, sim_slave, wait_for

from gateway._pure import modbus as pure_modbus
from gateway.config import DeviceConfig, PointConfig, RtuConfig
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.modbus_rtu import (
    ModbusRtuDevice,
    SniffedRtuDevice,
    char_time,
    inter_frame_gap,
    make_line,
)
from gateway.drivers.modbus_tcp import WriteError

HOLDING = [100 + i for i in range(20)]


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []

    def values(self, pid: int, good: bool = True) -> list[float]:
        out = []
        for b in self.batches:
            for i, v, q in zip(b.point_ids, b.values, b.quality, strict=True):
                if i == pid and (not good or q == Quality.GOOD):
                    out.append(float(v))
        return out

    def kinds(self, device: str) -> list[str]:
        return [e.kind for e in self.events if e.device == device]


def rtu_device(name: str, unit: int, port: str, **rtu: Any) -> DeviceConfig:
    points = (
        PointConfig("a", 0),
        PointConfig("b", 3, type="int32"),
        PointConfig("sp", 10, writable=True, scale=0.1),
        PointConfig("run", 2, table="coil", type="bool", writable=True),
    )
    return DeviceConfig(
        name, driver="modbus_rtu", unit_id=unit, timeout=0.05, poll_groups={"default": 0.02},
        points=points, rtu=RtuConfig(port=port, baudrate=115200, **rtu),
    )  # fmt: skip


def run_in_loop(fn: Callable[..., Awaitable[None]]) -> Callable[[], None]:
    """Run an async test in its own loop, with the serial rig when it takes one argument."""

    @functools.wraps(fn)
    def test() -> None:
        async def main() -> None:
            if fn.__code__.co_argcount:
                async with serial_rig() as rig:
                    await asyncio.wait_for(fn(rig), 30.0)
            else:
                await asyncio.wait_for(fn(), 30.0)

        asyncio.run(main())

    test.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    return test


def ids_of(cfg: DeviceConfig, base: int) -> dict[str, int]:
    return {f"{cfg.name}.{p.name}": base + i for i, p in enumerate(cfg.points)}


@contextlib.asynccontextmanager
async def serial_rig() -> AsyncIterator[tuple[PtyLine, SerialSlaves]]:
    line = PtyLine(baudrate=115200, tap=True)
    line.start()
    slaves = SerialSlaves(line.b, [sim_slave(1, HOLDING), sim_slave(2, [7] * 20)])
    await slaves.start()
    try:
        yield line, slaves
    finally:
        await slaves.stop()
        line.close()


def test_inter_frame_gap_follows_the_baud_rate() -> None:
    assert char_time(9600) == pytest.approx(10 / 9600)
    assert char_time(9600, parity="even", stopbits=2) == pytest.approx(12 / 9600)
    assert inter_frame_gap(RtuConfig(baudrate=9600)) == pytest.approx(3.5 * 10 / 9600)
    assert inter_frame_gap(RtuConfig(baudrate=19200)) == pytest.approx(3.5 * 10 / 19200)
    assert inter_frame_gap(RtuConfig(baudrate=38400)) == 0.00175
    assert inter_frame_gap(RtuConfig(baudrate=9600, inter_frame=0.01)) == 0.01


@run_in_loop
async def test_two_slaves_share_one_line_with_one_request_in_flight(
    rig: tuple[PtyLine, SerialSlaves],
) -> None:
    pty, _ = rig
    sink = Sink()
    c1, c2 = rtu_device("d1", 1, pty.a), rtu_device("d2", 2, pty.a)
    line = make_line(c1, clock=lambda: 1000.0)
    d1 = ModbusRtuDevice(c1, ids_of(c1, 0), sink.batches.append, sink.events.append, line=line)
    d2 = ModbusRtuDevice(c2, ids_of(c2, 10), sink.batches.append, sink.events.append, line=line)
    await d1.start()
    await d2.start()
    try:
        await wait_for(lambda: len(sink.values(0)) >= 5 and len(sink.values(10)) >= 5, 5.0,
                       "5 good polls of each slave")  # fmt: skip
    finally:
        await d1.stop()
        await d2.stop()
    assert set(sink.values(0)) == {100.0}
    assert set(sink.values(1)) == {float((103 << 16) | 104)}
    assert sink.values(2)[0] == pytest.approx(11.0)
    assert set(sink.values(10)) == {7.0}
    assert sink.kinds("d1") == ["online"] and sink.kinds("d2") == ["online"]
    st = d1.stats()
    # nothing overlapped or got lost (each stop() may cut its device's request short)
    assert 0 <= st["line_requests"] - st["line_responses"] <= 2
    assert st["crc_errors"] == 0 and st["line_unexpected_frames"] == 0
    assert not line.opened.is_set()  # the last device to stop closed the line


@run_in_loop
async def test_absent_slave_times_out_retries_and_goes_offline_alone(
    rig: tuple[PtyLine, SerialSlaves],
) -> None:
    pty, _ = rig
    # pymodbus's simulator answers unknown ids with an exception; a real line stays silent.
    pty.corrupt = lambda direction, data: b"" if data[:1] == b"\x09" else data
    sink = Sink()
    good, dead = rtu_device("ok", 1, pty.a), rtu_device("gone", 9, pty.a, retries=2)
    line = make_line(good, clock=lambda: 5.0)
    d1 = ModbusRtuDevice(good, ids_of(good, 0), sink.batches.append, sink.events.append, line=line)
    d9 = ModbusRtuDevice(dead, ids_of(dead, 10), sink.batches.append, sink.events.append,
                         line=line)  # fmt: skip
    await d1.start()
    await d9.start()
    try:
        await wait_for(lambda: "offline" in sink.kinds("gone"), 5.0, "the absent slave offline")
        n = len(sink.values(0))
        await wait_for(lambda: len(sink.values(0)) >= n + 3, 5.0, "the good slave still polled")
    finally:
        await d1.stop()
        await d9.stop()
    st = d9.stats()
    assert st["timeouts"] >= 9 and st["retries"] >= 6  # 3 polls x 3 attempts
    assert sink.kinds("gone") == ["offline"] and sink.kinds("ok") == ["online"]
    assert math.isnan(sink.values(10, good=False)[-1])


@run_in_loop
async def test_writes_reach_the_slave_and_read_back(rig: tuple[PtyLine, SerialSlaves]) -> None:
    pty, _ = rig
    sink = Sink()
    cfg = rtu_device("d1", 1, pty.a)
    dev = ModbusRtuDevice(cfg, ids_of(cfg, 0), sink.batches.append, sink.events.append)
    await dev.start()
    try:
        await wait_for(lambda: bool(sink.values(2)), 5.0, "first poll")
        await dev.write("d1.sp", 42.5)
        await dev.write("d1.run", 1)
        await wait_for(lambda: sink.values(2)[-1] == pytest.approx(42.5), 5.0, "setpoint echo")
        await wait_for(lambda: sink.values(3)[-1] == 1.0, 5.0, "coil echo")
        with pytest.raises(WriteError) as err:
            await dev.write("d1.a", 1)
        assert err.value.refused
    finally:
        await dev.stop()
    assert dev.stats()["writes"] == 2


@run_in_loop
async def test_one_based_addresses_and_garbage_on_the_line(
    rig: tuple[PtyLine, SerialSlaves],
) -> None:
    pty, _ = rig
    sink = Sink()
    cfg = rtu_device("d1", 1, pty.a, address_base=1)
    cfg = dataclasses.replace(cfg, points=(PointConfig("first", 1), PointConfig("fifth", 5)))
    flips = {"left": 3}

    def corrupt(direction: str, data: bytes) -> bytes:  # three responses get a flipped byte
        if direction == "b->a" and flips["left"] and len(data) > 4:
            flips["left"] -= 1
            return data[:3] + bytes((data[3] ^ 0xFF,)) + data[4:]
        return data

    pty.corrupt = corrupt
    dev = ModbusRtuDevice(cfg, ids_of(cfg, 0), sink.batches.append, sink.events.append)
    await dev.start()
    try:
        await wait_for(lambda: len(sink.values(0)) >= 5, 5.0, "good polls after the garbage")
    finally:
        await dev.stop()
    assert set(sink.values(0)) == {100.0} and set(sink.values(1)) == {104.0}
    assert dev.stats()["crc_errors"] >= 1


@run_in_loop
async def test_unopenable_port_reports_offline_with_the_reason() -> None:
    sink = Sink()
    cfg = dataclasses.replace(rtu_device("d1", 1, "/dev/does-not-exist"), reconnect_min=0.01,
                              reconnect_max=0.02)  # fmt: skip
    dev = ModbusRtuDevice(cfg, ids_of(cfg, 0), sink.batches.append, sink.events.append)
    await dev.start()
    try:
        await wait_for(lambda: "offline" in sink.kinds("d1"), 5.0, "offline event")
        await wait_for(lambda: dev.stats()["line_open_failures"] >= 3, 5.0, "reopen attempts")
    finally:
        await dev.stop()
    assert "/dev/does-not-exist" in sink.events[0].detail


@run_in_loop
async def test_rtu_over_tcp() -> None:
    server = ModbusTcpServer([sim_slave(4, HOLDING)], address=("127.0.0.1", 0),
                             framer=FramerType.RTU)  # fmt: skip
    task = asyncio.create_task(server.serve_forever())
    try:
        await wait_for(lambda: server.transport is not None, 5.0, "server listening")
        port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sink = Sink()
        cfg = dataclasses.replace(rtu_device("t", 4, "-", transport="tcp"), port=port)
        dev = ModbusRtuDevice(cfg, ids_of(cfg, 0), sink.batches.append, sink.events.append)
        await dev.start()
        try:
            await wait_for(lambda: len(sink.values(1)) >= 3, 5.0, "polls over TCP")
        finally:
            await dev.stop()
        assert set(sink.values(0)) == {100.0}
    finally:
        await server.shutdown()
        task.cancel()


@run_in_loop
async def test_sniffer_decodes_another_masters_traffic(rig: tuple[PtyLine, SerialSlaves]) -> None:
    pty, _ = rig
    assert pty.tap is not None
    master_sink, sniff_sink = Sink(), Sink()
    cfg = rtu_device("d1", 1, pty.a)
    master = ModbusRtuDevice(cfg, ids_of(cfg, 0), master_sink.batches.append,
                             master_sink.events.append)  # fmt: skip
    sniffed = dataclasses.replace(cfg, rtu=RtuConfig(port=pty.tap, baudrate=115200, sniff=True),
                                  points=cfg.points[:2])  # fmt: skip
    sniffer = SniffedRtuDevice(sniffed, ids_of(sniffed, 0), sniff_sink.batches.append,
                               sniff_sink.events.append)  # fmt: skip
    await sniffer.start()
    await wait_for(sniffer.line.opened.is_set, 5.0, "sniffer open")
    await master.start()
    try:
        await wait_for(lambda: len(sniff_sink.values(1)) >= 3, 5.0, "sniffed samples")
        await master.write("d1.sp", 3.0)  # a write is seen too, but sp is not a sniffed point
    finally:
        await master.stop()
        await sniffer.stop()
    assert set(sniff_sink.values(0)) == {100.0}
    assert set(sniff_sink.values(1)) == {float((103 << 16) | 104)}
    assert sniff_sink.kinds("d1") == ["online"]
    with pytest.raises(WriteError):
        await sniffer.write("d1.a", 1)
    assert sniffer.stats()["crc_errors"] == 0


def _rtu(pdu: bytes) -> bytes:
    crc = pure_modbus.crc16(pdu)
    return pdu + bytes((crc & 0xFF, crc >> 8))


@run_in_loop
async def test_sniffer_emits_one_batch_per_serial_read(rig: tuple[PtyLine, SerialSlaves]) -> None:
    """Two exchanges arriving in one read: one batch with both, in the order seen."""
    pty, _ = rig
    assert pty.tap is not None
    sink = Sink()
    cfg = rtu_device("d9", 9, pty.tap)
    sniffed = dataclasses.replace(cfg, rtu=RtuConfig(port=pty.tap, baudrate=115200, sniff=True),
                                  points=cfg.points[:2])  # fmt: skip
    sniffer = SniffedRtuDevice(sniffed, ids_of(sniffed, 0), sink.batches.append,
                               sink.events.append)  # fmt: skip
    await sniffer.start()
    try:
        await wait_for(sniffer.line.opened.is_set, 5.0, "sniffer open")
        request = _rtu(bytes((9, 3, 0, 0, 0, 5)))
        burst = b"".join(
            request + _rtu(bytes((9, 3, 10)) + struct.pack(">5H", a, 0, 0, 0, b))
            for a, b in ((100, 7), (200, 8))
        )
        os.write(pty.mt, burst)
        await wait_for(lambda: sniffer.stats()["sniffed_responses"] >= 2, 5.0, "two exchanges")
    finally:
        await sniffer.stop()
    assert len(sink.batches) == 1
    b = sink.batches[0]
    assert b.point_ids.tolist() == [0, 1, 0, 1] and b.values.tolist() == [100, 7, 200, 8]
