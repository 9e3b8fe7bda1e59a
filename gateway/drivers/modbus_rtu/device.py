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
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.base import Stats, WriteError
from gateway.drivers.modbus_rtu.line import (
    LineClosed,
    RtuLine,
    TransactionTimeout,
    line_key,
    make_line,
    rtu_frame,
)
from gateway.drivers.modbus_tcp.plan import ReadBlock, build_plan
from gateway.drivers.modbus_tcp.polled import OFFLINE_AFTER_FAILURES, ModbusDevice


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


class ModbusRtuDevice(ModbusDevice):
    """One Modbus RTU slave; constructor arguments as :class:`~gateway.drivers.base.DriverBase`,
    plus ``line``: the shared line (the factory passes one per port, else the device opens its
    own). A config with ``rtu.sniff`` makes a :class:`SniffedRtuDevice` through :meth:`create`.
    """

    @classmethod
    def create(
        cls,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float],
        shared: dict[str, Any],
    ) -> Any:
        """One line per port (or RTU-over-TCP endpoint), shared by the devices on it."""
        from gateway.drivers.modbus_rtu.sniffer import SniffedRtuDevice

        key = line_key(config)
        line = shared.get(key)
        if line is None:
            line = shared[key] = make_line(config, clock)
        assert config.rtu is not None
        kind = SniffedRtuDevice if config.rtu.sniff else ModbusRtuDevice
        return kind(config, point_ids, on_batch, on_event, clock, line=line)

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
        plan = build_plan(wire_config(config), point_ids)
        super().__init__(config, point_ids, on_batch, on_event, clock, plan=plan)
        self.rtu = config.rtu
        self.line = line if line is not None else make_line(config, clock)
        self.line.users.append(self)
        self._frames = {id(b): rtu_frame(config.unit_id, b.adu_tail[5:]) for g in self.plan.groups
                        for b in g.blocks}  # fmt: skip
        self.requests = self.responses = self.timeouts = self.retries = 0

    def cycle_bound(self, group: str) -> float:
        """Longest a healthy poll cycle of ``group`` may take: each request, with its retries,
        may wait behind one of every poll group of every slave on the line, all timing out."""
        blocks = next((len(g.blocks) for g in self.plan.groups if g.name == group), 1)
        groups = sum(len(u.plan.groups) for u in self.line.users if isinstance(u, ModbusRtuDevice))
        per_request = (self.rtu.retries + 1) * (self.config.timeout + 256 * self.line.char_s)
        return blocks * max(groups, 1) * per_request

    def task_failure(self) -> str | None:
        """Why a poll task or the line's task ended while it should run (None otherwise)."""
        return super().task_failure() or (self.line.task_failure() if self._tasks else None)

    # ---------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        await self.line.start()

    async def close(self) -> None:
        await self.line.stop()

    def tasks(self) -> list[tuple[str, Any]]:
        return [(f"poll:{g.name}", self._poll_group(g)) for g in self.plan.groups]

    def line_down(self, reason: str) -> None:
        self.set_offline(reason)

    async def _poll_group(self, group: Any) -> None:
        if self.rtu.connect_delay:
            await asyncio.sleep(self.rtu.connect_delay)
        await self.every(group.period, functools.partial(self.poll_cycle, group), self._line_open)

    async def _line_open(self) -> bool:
        """Wait for the line to be open; True when it had to (the schedule restarts)."""
        if self.line.opened.is_set():
            return False
        await self.line.opened.wait()
        if self.rtu.connect_delay:
            await asyncio.sleep(self.rtu.connect_delay)
        return True

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

    async def read_once(self, block: ReadBlock) -> tuple[int, bytes]:
        """Read ``block`` once now for the API's commissioning view (see the TCP device)."""
        function, body, _ts = await self._request(self._frames[id(block)])
        return function, body

    async def read_block(self, block: ReadBlock) -> tuple[int, bytes, float] | None:
        try:
            return await self._request(self._frames[id(block)])
        except TransactionTimeout as exc:
            self.emit_bad(block.point_ids)
            self.failed(str(exc))
        except LineClosed:
            pass  # the line told us (line_down) and polls resume when it reopens
        return None

    def failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures >= OFFLINE_AFTER_FAILURES:
            self.set_offline(f"{self._failures} consecutive failed polls, last: {reason}")

    async def send_write(self, point: str, adu: bytes) -> tuple[int, bytes]:
        if self.rtu.sniff:
            raise WriteError(f"{point}: device {self.name} is sniffed, not polled", refused=True)
        try:
            got, body, _ts = await self._request(rtu_frame(self.plan.unit_id, adu[7:]))
        except TransactionTimeout:
            self.failed("write timeout")
            raise WriteError(f"{point}: no answer within {self.config.timeout}s") from None
        except LineClosed as exc:
            raise WriteError(f"{point}: {exc}") from None
        return got, body

    # ---------------------------------------------------------------- stats
    def connected(self) -> bool:
        return self.line.opened.is_set()

    def counters(self) -> Stats:
        return {
            "requests": self.requests,
            "responses": self.responses,
            "timeouts": self.timeouts,
            "retries": self.retries,
            **super().counters(),
            **self.line.stats(),
        }
