"""ModbusRtuDevice: one slave on a shared RTU line, polled on the same plan as Modbus TCP.

The poll plan (coalesced reads, decoders, point ids) is the Modbus TCP driver's
:func:`~gateway.drivers.modbus_tcp.plan.build_plan`; only the transport differs: each block's
request becomes ``unit + PDU + CRC`` once, at start, and goes through the line's single
in-flight slot. Link state (events on transitions only)::

    unknown --first answer--> online --3 polls failed after retries--> offline
    any --line cannot open / lost--> offline --first answer--> online

Offline emits one BAD/NaN batch for every point. Unlike TCP there is no connection to reset, so
an offline slave keeps being polled at its period; the line's t3.5 pacing and timeouts bound
what a dead slave costs the others on the line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from gateway.config import DeviceConfig
from gateway.core.guard import cancel_and_wait, ended_task
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.linkstate import LinkState
from gateway.drivers.modbus_rtu.line import (
    LineClosed,
    RtuLine,
    TransactionTimeout,
    make_line,
    rtu_frame,
)
from gateway.drivers.modbus_tcp.device import OFFLINE_AFTER_FAILURES, WriteError, write_adu
from gateway.drivers.modbus_tcp.plan import PollGroup, ReadBlock, build_plan
from gateway.impl import modbus

_log = logging.getLogger(__name__)


def wire_config(config: DeviceConfig) -> DeviceConfig:
    """The config with 1-based point addresses (``rtu.address_base: 1``) made 0-based."""
    if config.rtu is None or config.rtu.address_base == 0:
        return config
    points = []
    for p in config.points:
        if p.address is None or p.address < 1:
            raise ValueError(
                f"{config.name}.{p.name}: address {p.address} is not 1-based "
                "(rtu.address_base is 1, so addresses start at 1)"
            )
        points.append(dataclasses.replace(p, address=p.address - 1))
    return dataclasses.replace(config, points=tuple(points))


class ModbusRtuDevice:
    """One Modbus RTU slave.

    Parameters
    ----------
    config : the device's configuration (``driver: modbus_rtu`` with an ``rtu`` section).
    point_ids : full point name -> PointTable id, for every point of the device.
    on_batch, on_event, clock : as for :class:`~gateway.drivers.modbus_tcp.ModbusTcpDevice`.
    line : the shared line; the driver factory passes one per port, else the device opens its own.
    """

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
        line: RtuLine | None = None,
    ) -> None:
        if config.rtu is None:
            raise ValueError(f"{config.name}: driver modbus_rtu needs an rtu section")
        self.config = config
        self.rtu = config.rtu
        self.plan = build_plan(wire_config(config), point_ids)
        self.line = line if line is not None else make_line(config, clock)
        self.line.users.append(self)
        self._clock = clock
        self._frames = {id(b): rtu_frame(config.unit_id, b.adu_tail[5:]) for g in self.plan.groups
                        for b in g.blocks}  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []
        self._link = LinkState(config.name, self.plan.point_ids, clock, on_batch, on_event)
        self.faults = self._link.faults  # a raising callback or poll step never ends a task
        self._on_batch = self.faults.wrap(f"device {self.name}: on_batch", on_batch)
        self._failures = 0
        self._last_rtt = float("nan")
        self.requests = self.responses = self.timeouts = self.retries = 0
        self.exceptions = self.bad_responses = self.skipped_polls = 0
        self.writes = self.write_errors = 0

    polled = True  # every poll group yields a batch each period while online

    @property
    def name(self) -> str:
        return self.config.name

    def cycle_bound(self, group: str) -> float:
        """Longest a healthy poll cycle of ``group`` may take: each request, with its retries,
        may wait behind one of every poll group of every slave on the line, all timing out."""
        blocks = next((len(g.blocks) for g in self.plan.groups if g.name == group), 1)
        groups = sum(len(u.plan.groups) for u in self.line.users if isinstance(u, ModbusRtuDevice))
        per_request = (self.rtu.retries + 1) * (self.config.timeout + 256 * self.line.char_s)
        return blocks * max(groups, 1) * per_request

    def task_failure(self) -> str | None:
        """Why a poll task or the line's task ended while it should run (None otherwise)."""
        for task in self._tasks:
            why = ended_task(task)
            if why:
                return why
        return self.line.task_failure() if self._tasks else None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the line (shared) and start one poll task per poll group."""
        if self._tasks:
            return
        await self.line.start()
        self._tasks = [
            asyncio.create_task(self._poll_group(g), name=f"poll:{self.name}:{g.name}")
            for g in self.plan.groups
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        for t in tasks:
            await cancel_and_wait(t)
        await self.line.stop()

    # ---------------------------------------------------------------- link state
    def line_down(self, reason: str) -> None:
        self._set_offline(reason)

    def _set_online(self) -> None:
        self._failures = 0
        self._link.up()

    def _set_offline(self, reason: str) -> None:
        self._link.down(reason)

    # ---------------------------------------------------------------- requests
    async def _request(self, frame: bytes) -> tuple[int, bytes, float]:
        """One request with the device's retries; raises the last TransactionTimeout."""
        attempts = self.rtu.retries + 1
        for attempt in range(attempts):
            self.requests += 1
            if attempt:
                self.retries += 1
            start = time.perf_counter()
            try:
                got = await self.line.transact(frame, self.config.timeout)
            except TransactionTimeout:
                self.timeouts += 1
                if attempt == attempts - 1:
                    raise
                continue
            self._last_rtt = time.perf_counter() - start
            self.responses += 1
            return got
        raise AssertionError("unreachable")

    async def _poll_group(self, group: PollGroup) -> None:
        loop = asyncio.get_running_loop()
        if self.rtu.connect_delay:
            await asyncio.sleep(self.rtu.connect_delay)
        period = group.period
        due = loop.time()
        place = f"device {self.name}: poll {group.name}"
        while True:
            if not self.line.opened.is_set():
                await self.line.opened.wait()
                if self.rtu.connect_delay:
                    await asyncio.sleep(self.rtu.connect_delay)
                due = loop.time()
            for block in group.blocks:
                try:
                    await self._poll_block(block)
                except Exception as exc:  # a bug or a callback: count it, keep polling
                    self.faults.failed(place, exc)
                else:
                    self.faults.ok(place)
            due += period
            now = loop.time()
            if now - due >= period:
                missed = int((now - due) // period)
                self.skipped_polls += missed
                due += missed * period
            await asyncio.sleep(due - now)

    async def read_once(self, block: ReadBlock) -> tuple[int, bytes]:
        """Read ``block`` once now for the API's commissioning view (see the TCP device)."""
        function, body, _ts = await self._request(self._frames[id(block)])
        return function, body

    async def _poll_block(self, block: ReadBlock) -> None:
        try:
            function, body, ts = await self._request(self._frames[id(block)])
        except TransactionTimeout as exc:
            self._bad(block)
            self._failed(str(exc))
            return
        except LineClosed:
            return  # the line told us (line_down) and polls resume when it reopens
        if function == block.function and len(body) == block.byte_count + 1:
            values = np.empty(len(block.point_ids), np.float64)
            if block.decoder is not None:
                block.decoder.decode(body[1:], values)  # type: ignore[attr-defined]
            else:
                bits = np.empty(block.count, np.float64)
                modbus.unpack_bits(body[1:], block.count, bits)
                values = bits[block.bit_index]
            self._set_online()
            self._on_batch(SampleBatch.uniform(block.point_ids, ts, values))
            return
        self._set_online()
        if function == block.function | 0x80:
            self.exceptions += 1
        else:
            self.bad_responses += 1
        self._bad(block, ts)

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures >= OFFLINE_AFTER_FAILURES:
            self._set_offline(f"{self._failures} consecutive failed polls, last: {reason}")

    def _bad(self, block: ReadBlock, ts: float | None = None) -> None:
        n = len(block.point_ids)
        self._on_batch(SampleBatch.uniform(
            block.point_ids, self._clock() if ts is None else ts, np.full(n, np.nan), Quality.BAD
        ))  # fmt: skip

    # ---------------------------------------------------------------- writes
    async def write(self, point: str, value: float) -> None:
        """Write an engineering value to a writable point (full name).

        Raises
        ------
        WriteError : ``refused`` for an unknown or read-only point or a value out of range;
            not refused when the slave answers with an exception, times out or the line is down.
        """
        try:
            frame, function, echo = self._write_request(point, value)
        except WriteError:
            self.write_errors += 1
            raise
        if self.rtu.sniff:
            self.write_errors += 1
            raise WriteError(f"{point}: device {self.name} is sniffed, not polled", refused=True)
        try:
            got, body, _ts = await self._request(frame)
        except TransactionTimeout:
            self.write_errors += 1
            self._failed("write timeout")
            raise WriteError(f"{point}: no answer within {self.config.timeout}s") from None
        except LineClosed as exc:
            self.write_errors += 1
            raise WriteError(f"{point}: {exc}") from None
        self._set_online()
        if got == function | 0x80:
            self.exceptions += 1
            self.write_errors += 1
            raise WriteError(f"{point}: device answered exception code {body[0] if body else -1}")
        if got != function or body[:4] != echo:
            self.bad_responses += 1
            self.write_errors += 1
            raise WriteError(f"{point}: unexpected answer to write (function {got})")
        self.writes += 1

    def _write_request(self, point: str, value: float) -> tuple[bytes, int, bytes]:
        """RTU frame, function code and the echo the answer must carry."""
        adu = write_adu(self.plan, self.name, point, value)
        return rtu_frame(self.plan.unit_id, adu[7:]), adu[7], adu[8:12]

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict[str, float | int | bool | str]:
        rtt = self._last_rtt
        return {
            "connected": self.line.opened.is_set(),
            "online": self._link.online is True,
            "state": self._link.state,
            "requests": self.requests,
            "responses": self.responses,
            "timeouts": self.timeouts,
            "retries": self.retries,
            "exceptions": self.exceptions,
            "bad_responses": self.bad_responses,
            "skipped_polls": self.skipped_polls,
            "last_rtt_ms": rtt * 1000.0 if rtt == rtt else float("nan"),
            "writes": self.writes,
            "write_errors": self.write_errors,
            "task_errors": self.faults.count,
            **self.line.stats(),
        }
