"""Passive RTU sniffing: decode another master's traffic on a line into samples.

The line's framer runs in ``sniff`` role and hands over both directions. A read request
(fc 1-4) is remembered per slave; the response that follows is decoded for every configured
point of that slave inside the requested range, with a :class:`RegisterDecoder` compiled once
per distinct (function, address, count) the master uses. Write requests (fc 5, 6, 16) update
the written points as soon as the slave echoes them. Nothing is ever sent.

The exchanges of one serial read come out as one SampleBatch per device (the read's timestamp,
the points in the order seen), not one per response.

A sniffed device is online from its first decoded response and goes offline when none came
for three periods of its slowest poll group (the period the other master is expected to poll at).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.base import DriverBase, Stats, WriteError
from gateway.drivers.modbus_rtu.device import wire_config
from gateway.drivers.modbus_rtu.line import RtuLine, make_line
from gateway.drivers.modbus_tcp.plan import BIT_TABLES, READ_FUNCTION, PointSpec, build_plan
from gateway.impl import modbus

_TABLE_OF = {v: k for k, v in READ_FUNCTION.items()}
MAX_CACHED_LAYOUTS = 256


class _Dispatch:
    """One per sniffed line: pairs requests with responses and routes them by slave id."""

    def __init__(self, line: RtuLine) -> None:
        self.devices: dict[int, SniffedRtuDevice] = {}
        self.requests: dict[int, tuple[int, bytes]] = {}
        self.unmatched = 0
        line.sniffer = self

    def __call__(self, frames: list[Any], ts: float) -> None:
        touched: list[SniffedRtuDevice] = []
        for direction, unit, function, body in frames:
            if direction == 0:
                self.requests[unit] = (function, body)
                continue
            req = self.requests.pop(unit, None)
            device = self.devices.get(unit)
            if req is None or device is None or function & 0x7F != req[0]:
                self.unmatched += 1
                continue
            if device.pending is None:
                device.pending = []
                touched.append(device)
            place = f"device {device.name}: sniffed exchange"
            try:
                device.exchange(req[0], req[1], function, body, ts)
            except Exception as exc:  # one device's fault must not cost the others their frames
                device.faults.failed(place, exc)
            else:
                device.faults.ok(place)
        for device in touched:
            device.flush(ts)


class SniffedRtuDevice(DriverBase):
    """A slave whose traffic with another master is decoded into this device's points."""

    polled = False  # another master polls: silence is not a fault of ours

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
        line: RtuLine | None = None,
    ) -> None:
        self.plan = build_plan(wire_config(config), point_ids)
        super().__init__(config, point_ids, on_batch, on_event, clock, ids=self.plan.point_ids)
        self.line = line if line is not None else make_line(config, clock)
        self.line.users.append(self)
        dispatch = self.line.sniffer
        if not isinstance(dispatch, _Dispatch):
            dispatch = _Dispatch(self.line)
        dispatch.devices[config.unit_id] = self
        self._by_table: dict[str, list[PointSpec]] = {}
        for spec in self.plan.points.values():
            self._by_table.setdefault(spec.table, []).append(spec)
        self._layouts: dict[tuple[int, int, int], tuple[Any, npt.NDArray[np.uint32], Any]] = {}
        self._last = 0.0
        self.decoded = self.ignored = self.exceptions = 0
        #: Samples of the serial read being dispatched: (ids, values), emitted by flush().
        self.pending: list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64]]] | None = None

    def task_failure(self) -> str | None:
        """Why the staleness watchdog or the line's task ended while running (None otherwise)."""
        return super().task_failure() or (self.line.task_failure() if self._tasks else None)

    async def open(self) -> None:
        await self.line.start()

    async def close(self) -> None:
        await self.line.stop()

    def tasks(self) -> list[tuple[str, Any]]:
        return [("watchdog", self._watchdog())]

    async def write_value(self, point: str, value: float) -> None:
        raise WriteError(f"{point}: device {self.name} is sniffed, not polled", refused=True)

    def line_down(self, reason: str) -> None:
        self.set_offline(reason)

    async def _watchdog(self) -> None:
        stale = 3.0 * max(self.config.poll_groups.values())
        while True:
            await asyncio.sleep(stale / 4)
            if self.online and time.monotonic() - self._last > stale:
                self.set_offline(f"no traffic for {stale:g}s")

    # -- decoding -----------------------------------------------------------------------------
    def exchange(self, fc: int, request: bytes, function: int, body: bytes, ts: float) -> None:
        """A request and its response, seen on the line."""
        self._last = time.monotonic()
        self.set_online(ts, "sniffed")
        if function & 0x80:
            self.exceptions += 1
            return
        if len(request) < 4:
            self.ignored += 1
            return
        address = int.from_bytes(request[0:2], "big")
        if 1 <= fc <= 4:
            count = int.from_bytes(request[2:4], "big")
            self._read(fc, address, count, body, ts)
        elif fc == 6:
            self._registers("holding", address, 1, request[2:4], ts)
        elif fc == 16 and len(request) >= 5:
            count = int.from_bytes(request[2:4], "big")
            self._registers("holding", address, count, request[5:], ts)
        elif fc == 5:
            self._bits("coil", address, 1, bytes((request[2] == 0xFF,)), ts)
        else:
            self.ignored += 1

    def _read(self, fc: int, address: int, count: int, body: bytes, ts: float) -> None:
        if not body or body[0] != len(body) - 1:
            self.ignored += 1
            return
        table = _TABLE_OF[fc]
        if table in BIT_TABLES:
            self._bits(table, address, count, body[1:], ts)
        else:
            self._registers(table, address, count, body[1:], ts)

    def _layout(self, table: str, address: int, count: int) -> tuple[Any, Any, Any]:
        key = (READ_FUNCTION[table], address, count)
        hit = self._layouts.get(key)
        if hit is not None:
            return hit
        inside = [s for s in self._by_table.get(table, ())
                  if s.address >= address and s.address + s.words <= address + count]  # fmt: skip
        ids = np.fromiter((s.point_id for s in inside), np.uint32, len(inside))
        decoder: Any = None
        offsets: Any = np.fromiter((s.address - address for s in inside), np.intp, len(inside))
        if inside and table not in BIT_TABLES:
            decoder = modbus.RegisterDecoder(
                [s.address - address for s in inside], [s.type_code for s in inside],
                [s.flags for s in inside], [s.scale for s in inside], [s.bias for s in inside],
            )  # fmt: skip
        if len(self._layouts) >= MAX_CACHED_LAYOUTS:
            self._layouts.clear()
        self._layouts[key] = (decoder, ids, offsets)
        return decoder, ids, offsets

    def _registers(self, table: str, address: int, count: int, data: bytes, ts: float) -> None:
        decoder, ids, _ = self._layout(table, address, count)
        if not len(ids) or len(data) < 2 * count:
            self.ignored += 1
            return
        values = np.empty(len(ids), np.float64)
        decoder.decode(data, values)
        self.decoded += 1
        self.emit_values(ids, ts, values)

    def _bits(self, table: str, address: int, count: int, data: bytes, ts: float) -> None:
        _, ids, offsets = self._layout(table, address, count)
        if not len(ids) or len(data) * 8 < count:
            self.ignored += 1
            return
        bits = np.empty(count, np.float64)
        modbus.unpack_bits(data, count, bits)
        self.decoded += 1
        self.emit_values(ids, ts, bits[offsets])

    def emit_values(
        self, ids: npt.NDArray[np.uint32], ts: float, values: npt.NDArray[np.float64]
    ) -> None:
        if self.pending is not None:
            self.pending.append((ids, values))
        else:
            super().emit_values(ids, ts, values)

    def flush(self, ts: float) -> None:
        """One batch of everything decoded from one serial read (a raising callback is
        counted by the base class's guard, like any batch)."""
        pending, self.pending = self.pending, None
        if not pending:
            return
        if len(pending) == 1:
            super().emit_values(pending[0][0], ts, pending[0][1])
            return
        ids = np.concatenate([p[0] for p in pending])
        super().emit_values(ids, ts, np.concatenate([p[1] for p in pending]))

    def connected(self) -> bool:
        return self.line.opened.is_set()

    def counters(self) -> Stats:
        return {
            "sniffed_responses": self.decoded,
            "sniffed_ignored": self.ignored,
            "exceptions": self.exceptions,
            "task_errors": self.faults.count + self.line.faults.count,
            **self.line.stats(),
        }
