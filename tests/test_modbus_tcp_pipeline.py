"""ModbusTcpDevice with ``max_in_flight > 1`` against a real loopback server whose answers each
test scripts: order, drops, delays, exceptions and a connection closed mid-window."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from modbus_support import Recorder

from gateway.config import DeviceConfig, PointConfig
from gateway.core.model import Quality
from gateway.drivers.modbus_tcp import ModbusTcpDevice

#: (transaction id, unit, function, address, count or value)
Request = tuple[int, int, int, int, int]
#: What the server does with a read's requests: (delay s, frame) pairs; frame None closes.
Policy = Callable[["Server", list[Request]], list[tuple[float, bytes | None]]]

BLOCKS, SIZE = 4, 10  # 4 reads of 10 registers per poll: one pipelined window of 4


def answer(req: Request) -> bytes:
    """The register at address a holds a (uint16); writes are echoed."""
    tid, unit, fc, addr, count = req
    if fc in (3, 4):
        regs = b"".join((addr + i).to_bytes(2, "big") for i in range(count))
        pdu = bytes((fc, len(regs))) + regs
    else:
        pdu = bytes((fc,)) + addr.to_bytes(2, "big") + count.to_bytes(2, "big")
    return (
        tid.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big") + bytes((unit,)) + pdu
    )


def exception(req: Request, code: int) -> bytes:
    tid, unit, fc = req[:3]
    return tid.to_bytes(2, "big") + b"\0\0\0\3" + bytes((unit, fc | 0x80, code))


def in_order(server: Server, reqs: list[Request]) -> list[tuple[float, bytes | None]]:
    return [(0.0, answer(r)) for r in reqs]


class Server:
    """A Modbus TCP server on 127.0.0.1; ``policy`` decides the answers to each read."""

    def __init__(self, policy: Policy = in_order) -> None:
        self.policy = policy
        self.reads: list[list[Request]] = []  # the requests of each socket read
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()


class _Conn(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        reqs: list[Request] = []
        while len(self.buf) >= 12:
            b = self.buf
            reqs.append((int.from_bytes(b[0:2], "big"), b[6], b[7],
                         int.from_bytes(b[8:10], "big"), int.from_bytes(b[10:12], "big")))  # fmt: skip
            self.buf = b[6 + int.from_bytes(b[4:6], "big") :]
        if not reqs:
            return
        self.server.reads.append(reqs)
        now = b""
        for delay, frame in self.server.policy(self.server, reqs):
            if delay:
                asyncio.get_running_loop().call_later(delay, self._send, frame)
            elif frame is None:
                self._send(now)
                now = b""
                self._send(None)
            else:
                now += frame
        self._send(now)

    def _send(self, frame: bytes | None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if frame is None:
            self.transport.close()
        elif frame:
            self.transport.write(frame)


def _config(port: int, in_flight: int = BLOCKS, **kw: object) -> DeviceConfig:
    points = tuple(PointConfig(f"r{a}", a, type="uint16") for a in range(BLOCKS * SIZE))
    return DeviceConfig(
        name="dev", port=port, timeout=0.2, max_registers=SIZE, max_gap=0,
        max_in_flight=in_flight, poll_groups={"default": 0.05}, points=points,
        reconnect_min=0.02, reconnect_max=0.05, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@asynccontextmanager
async def rig(policy: Policy = in_order, in_flight: int = BLOCKS) -> AsyncIterator[
    tuple[Server, ModbusTcpDevice, Recorder]
]:  # fmt: skip
    server = Server(policy)
    await server.start()
    cfg = _config(server.port, in_flight)
    rec = Recorder()
    dev = ModbusTcpDevice(cfg, {f"dev.r{a}": a for a in range(len(cfg.points))},
                          rec.on_batch, rec.on_event)  # fmt: skip
    await dev.start()
    try:
        yield server, dev, rec
    finally:
        await dev.stop()
        await server.close()


def samples(rec: Recorder, since: int = 0) -> list[tuple[int, float, int]]:
    return [
        (int(p), float(v), int(q))
        for b in rec.batches[since:]
        for p, v, q in zip(b.point_ids, b.values, b.quality, strict=True)
    ]


def good_values_right(rec: Recorder) -> bool:
    """Every GOOD sample holds its own register's value (point id == address)."""
    return all(v == p for p, v, q in samples(rec) if q == Quality.GOOD)


def test_window_goes_out_in_one_write_and_comes_back_as_one_batch() -> None:
    async def main() -> None:
        async with rig() as (server, dev, rec):
            await rec.wait(lambda: len(rec.batches) >= 3, "three polls")
            assert all(len(r) == BLOCKS for r in server.reads), server.reads[:3]
            assert all(len(b) == BLOCKS * SIZE for b in rec.batches)
            assert good_values_right(rec) and samples(rec)[0][2] == Quality.GOOD
            tids = [r[0] for r in server.reads[0]]
            assert len(set(tids)) == BLOCKS
            stats = dev.stats()
            assert stats["timeouts"] == 0 and stats["bad_frames"] == 0
            assert (
                stats["responses"] == stats["requests"]
                or stats["requests"] - stats["responses"] <= BLOCKS
            )  # a window may be on the wire

        async with rig(in_flight=1) as (server, dev, rec):
            await rec.wait(lambda: len(rec.batches) >= 8, "eight polls, one block each")
            assert all(len(r) == 1 for r in server.reads)
            assert all(len(b) == SIZE for b in rec.batches) and good_values_right(rec)

    asyncio.run(main())


def test_answers_out_of_order_are_matched_by_transaction_id() -> None:
    def reverse(server: Server, reqs: list[Request]) -> list[tuple[float, bytes | None]]:
        return [(0.0, answer(r)) for r in reversed(reqs)]

    async def main() -> None:
        async with rig(reverse) as (server, dev, rec):
            await rec.wait(lambda: len(rec.batches) >= 3, "three polls")
            assert [len(r) for r in server.reads[:3]] == [BLOCKS] * 3
            got = samples(rec)
            assert got and all(q == Quality.GOOD for _, _, q in got)
            assert good_values_right(rec)

    asyncio.run(main())


def test_one_request_of_a_window_timing_out_fails_only_its_points() -> None:
    def drop_second(server: Server, reqs: list[Request]) -> list[tuple[float, bytes | None]]:
        return [(0.0, answer(r)) for r in reqs if r[3] != SIZE]

    async def main() -> None:
        async with rig(drop_second) as (server, dev, rec):
            await rec.wait(lambda: dev.stats()["timeouts"] >= 4, "four timeouts of block 2")
            got = samples(rec)
            bad = {p for p, v, q in got if q == Quality.BAD}
            assert bad == set(range(SIZE, 2 * SIZE))
            assert all(math.isnan(v) for p, v, q in got if q == Quality.BAD)
            assert good_values_right(rec)
            assert dev.online and "offline" not in rec.kinds()  # the device answers
            assert dev.stats()["timeouts"] <= dev.stats()["requests"] / BLOCKS + 1

    asyncio.run(main())


def test_late_answer_is_stale_and_never_taken_for_the_next_window() -> None:
    def late_once(server: Server, reqs: list[Request]) -> list[tuple[float, bytes | None]]:
        late = len(server.reads) == 2  # the second window: its block 3 answers after timeout
        return [(0.35 if late and r[3] == 2 * SIZE else 0.0, answer(r)) for r in reqs]

    async def main() -> None:
        async with rig(late_once) as (server, dev, rec):
            await rec.wait(lambda: dev.stats()["bad_frames"] >= 1, "the late answer, counted")
            n = len(rec.batches)
            await rec.wait(lambda: len(rec.batches) >= n + 3, "three more polls")
            assert dev.stats()["timeouts"] == 1
            assert good_values_right(rec)
            bad = {p for p, _, q in samples(rec) if q == Quality.BAD}
            assert bad == set(range(2 * SIZE, 3 * SIZE))
            assert all(q == Quality.GOOD for _, _, q in samples(rec, n))

    asyncio.run(main())


def test_exception_answer_in_a_window_fails_only_its_block() -> None:
    def refuse_last(server: Server, reqs: list[Request]) -> list[tuple[float, bytes | None]]:
        return [(0.0, exception(r, 2) if r[3] == 3 * SIZE else answer(r)) for r in reqs]

    async def main() -> None:
        async with rig(refuse_last) as (server, dev, rec):
            await rec.wait(lambda: dev.stats()["exceptions"] >= 3, "three exception answers")
            bad = {p for p, _, q in samples(rec) if q == Quality.BAD}
            assert bad == set(range(3 * SIZE, 4 * SIZE)) and good_values_right(rec)
            assert dev.stats()["timeouts"] == 0 and dev.online

    asyncio.run(main())


def test_connection_closed_mid_window_reconnects_and_polls_again() -> None:
    def cut_third(server: Server, reqs: list[Request]) -> list[tuple[float, bytes | None]]:
        if len(server.reads) != 3:
            return in_order(server, reqs)
        return [(0.0, answer(reqs[0])), (0.0, answer(reqs[1])), (0.0, None)]

    async def main() -> None:
        async with rig(cut_third) as (server, dev, rec):
            await rec.wait(lambda: dev.stats()["reconnects"] >= 1, "a reconnect")
            n = len(rec.batches)
            await rec.wait(lambda: len(rec.batches) >= n + 3 and dev.online, "polls again")
            assert server.connections == 2 and rec.kinds()[:3] == ["online", "offline", "online"]
            assert good_values_right(rec)
            assert all(q == Quality.GOOD for _, _, q in samples(rec, n + 1))

    asyncio.run(main())


def test_write_between_pipelined_polls() -> None:
    async def main() -> None:
        cfg_points = (PointConfig("sp", 100, type="uint16", writable=True),)
        server = Server()
        await server.start()
        cfg = dataclasses.replace(_config(server.port), points=_config(0).points + cfg_points)
        rec = Recorder()
        ids = {f"dev.{p.name}": (p.address if p.name != "sp" else 999) for p in cfg.points}
        dev = ModbusTcpDevice(cfg, ids, rec.on_batch, rec.on_event)
        await dev.start()
        try:
            await rec.wait(lambda: len(rec.batches) >= 2, "two polls")
            await asyncio.wait_for(dev.write("dev.sp", 42.0), 5.0)
            assert [(r[2], r[3], r[4]) for rd in server.reads for r in rd if r[2] == 6] == [
                (6, 100, 42)
            ]
        finally:
            await dev.stop()
            await server.close()

    asyncio.run(main())
