"""ModbusTcpDevice: polls one Modbus TCP device on its poll plan and writes its points.

Link state machine (events are raised on transitions only, so each is raised once)::

    unknown --first answer--> online --N consecutive timeouts / connection lost--> offline
    unknown --connect fails--> offline --reconnected and first answer--> online

Going offline closes the socket (a device that stops answering is often behind a half-open
connection), emits one BAD/NaN batch for every point of the device and reconnects with
exponential backoff and jitter. While offline no further batches are emitted.

A poll group is read in windows of ``max_in_flight`` blocks (default 1: one request at a time).
A pipelined window's answers are matched and decoded by one ResponseMatcher and, when all are
good, emitted as one SampleBatch; a window that timed out counts one failure.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.base import Stats, WriteError
from gateway.drivers.modbus_tcp.client import (
    BAD,
    EXCEPTION,
    OK,
    WAITING,
    ConnectionClosed,
    ModbusTcpConnection,
    Slots,
    TransactionTimeout,
)
from gateway.drivers.modbus_tcp.plan import PollGroup, ReadBlock, build_plan
from gateway.drivers.modbus_tcp.polled import (
    OFFLINE_AFTER_FAILURES,
    ModbusDevice,
    decode_block,
    write_adu,
)
from gateway.impl import modbus


@dataclass(frozen=True, slots=True)
class Window:
    """Blocks of one poll group sent together (pipelined) and matched by one ResponseMatcher."""

    blocks: tuple[ReadBlock, ...]
    tails: tuple[bytes, ...]
    slots: Slots  # the ResponseMatcher and its arrays; bit blocks come back raw
    offsets: tuple[int, ...]  # where each block's values start in the window's value array
    point_ids: npt.NDArray[np.uint32]  # every block's ids, in slot order
    n_values: int


def windows(group: PollGroup, max_in_flight: int) -> list[Window]:
    """``group``'s blocks cut into windows of at most ``max_in_flight`` (config time)."""
    out = []
    blocks = group.blocks
    for start in range(0, len(blocks), max_in_flight):
        part = tuple(blocks[start : start + max_in_flight])
        offsets, end = [], 0
        for b in part:
            offsets.append(end)
            end += len(b.point_ids)
        matcher = modbus.ResponseMatcher(
            [b.function for b in part],
            [b.byte_count for b in part],
            [b.decoder for b in part],  # type: ignore[misc]  # RegisterDecoder | None
            offsets,
        )
        ids = np.concatenate([b.point_ids for b in part]).astype(np.uint32, copy=False)
        raw = tuple(k for k, b in enumerate(part) if b.decoder is None)
        out.append(Window(part, tuple(b.adu_tail for b in part), Slots(matcher, raw),
                          tuple(offsets), ids, end))  # fmt: skip
    return out


__all__ = ["OFFLINE_AFTER_FAILURES", "ModbusTcpDevice", "WriteError", "write_adu"]


class ModbusTcpDevice(ModbusDevice):
    """One Modbus TCP device: one connection, one poll task per poll group, writes on demand.

    Polled (``polled``): while online, every poll group yields a batch each period, so the
    runtime's supervisor takes a silent group for a wedged task (gateway.core.supervisor).
    Constructor arguments: see :class:`~gateway.drivers.base.DriverBase`.
    """

    passthrough = (ConnectionClosed,)

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        plan = build_plan(config, point_ids)
        super().__init__(config, point_ids, on_batch, on_event, clock, plan=plan)
        self._conn: ModbusTcpConnection | None = None
        self._close_reason = ""
        self._ever_connected = False
        # Totals of retired connections; the live connection's counters are added in stats().
        self._closed_totals = {"requests": 0, "responses": 0, "timeouts": 0, "bad_frames": 0}
        self.reconnects = self.connect_failures = 0
        n = max(1, config.max_in_flight)
        self._windows = {g.name: windows(g, n) for g in plan.groups}

    def cycle_bound(self, group: str) -> float:
        """Longest a healthy poll cycle of ``group`` may take: each of its transactions (a
        request, or a pipelined window) may wait behind one of every other group, each taking
        its timeout."""
        n = len(self._windows.get(group, ())) or 1
        return n * len(self.plan.groups) * self.config.timeout

    # ---------------------------------------------------------------- connection
    def tasks(self) -> list[tuple[str, Any]]:
        return [("connection", self._supervise())]

    async def _supervise(self) -> None:
        c = self.config
        try:
            while True:
                conn = ModbusTcpConnection(c.unit_id, c.timeout, self._clock)
                try:
                    await conn.open(c.host, c.port, max(2 * c.timeout, 1.0))
                except Exception as exc:  # OSError, TimeoutError; anything else alike
                    self.connect_failures += 1
                    self.set_offline(f"connect to {c.host}:{c.port}: {exc}")
                    await asyncio.sleep(self.backoff())
                    continue
                if self._ever_connected:
                    self.reconnects += 1
                self._ever_connected = True
                self._close_reason = ""
                self._failures = 0
                self._conn = conn
                tasks = [asyncio.create_task(self._poll_group(g), name=f"poll:{self.name}:{g.name}")
                         for g in self.plan.groups]  # fmt: skip
                try:
                    lost = await conn.closed
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    conn.close()
                    self._retire(conn)
                self.set_offline(self._close_reason or f"connection lost: {lost or 'closed'}")
                await asyncio.sleep(self.backoff())
        finally:
            if self._conn is not None:
                self._conn.close()
                self._retire(self._conn)

    async def _poll_group(self, group: Any) -> None:
        try:
            await self.every(group.period, functools.partial(self.poll_cycle, group))
        except ConnectionClosed:
            return

    def _retire(self, conn: ModbusTcpConnection) -> None:
        if self._conn is not conn:
            return
        self._conn = None
        t = self._closed_totals
        t["requests"] += conn.requests
        t["responses"] += conn.responses
        t["timeouts"] += conn.timeouts
        t["bad_frames"] += conn.bad_frames

    def failed(self, reason: str) -> None:
        """Enough failures in a row close the connection (often half-open): offline, reconnect."""
        self._failures += 1
        conn = self._conn
        if self._failures >= OFFLINE_AFTER_FAILURES and conn is not None and conn.connected:
            self._close_reason = f"{self._failures} consecutive failures, last: {reason}"
            conn.close()

    # ---------------------------------------------------------------- requests
    async def poll_cycle(self, group: PollGroup) -> None:
        """One transaction per window of ``group``; a bug or a raising callback is counted and
        the next window is read all the same."""
        place = f"device {self.name}: poll {group.name}"
        for w in self._windows[group.name]:
            try:
                await self.poll_window(w)
            except ConnectionClosed:
                raise
            except Exception as exc:
                self.faults.failed(place, exc)
            else:
                self.faults.ok(place)

    async def poll_window(self, w: Window) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionClosed("not connected")
        values = np.empty(w.n_values, np.float64)
        slots = w.slots
        ts = await conn.transact(w.tails, slots, values)
        self._last_rtt = conn.last_rtt
        status = slots.matcher.statuses()
        if OK in status or EXCEPTION in status or BAD in status:
            self.set_online()  # a device that answers is alive, even when the answer is bad
        for k in slots.raw_slots:
            raw = slots.raw[k]
            b = w.blocks[k]
            if status[k] == OK and raw is not None and len(raw) == b.byte_count + 2:
                off = w.offsets[k]
                values[off : off + len(b.point_ids)] = decode_block(b, raw[1:])
            elif status[k] == OK:
                status[k] = BAD  # a bit answer of the wrong length
        if status.count(OK) == len(status):
            self.emit_values(w.point_ids, ts, values)
            return
        timed_out = False
        for k, b in enumerate(w.blocks):
            s = status[k]
            if s == OK:
                off = w.offsets[k]
                self.emit_values(b.point_ids, ts, values[off : off + len(b.point_ids)])
            elif s == WAITING:
                self.emit_bad(b.point_ids)
                timed_out = True
            else:
                if s == EXCEPTION:
                    self.exceptions += 1
                else:
                    self.bad_responses += 1
                self.emit_bad(b.point_ids, ts)
        if timed_out:
            self.failed("timeout")

    async def read_once(self, block: ReadBlock) -> tuple[int, bytes]:
        """Read ``block`` once now, ahead of polls, for the API's commissioning view: the
        answer's function code and PDU body; nothing goes to ``on_batch``."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise ConnectionError(f"device {self.name} is offline")
        function, body, _ts = await conn.request(block.adu_tail, high_priority=True)
        return function, body

    async def send_write(self, point: str, adu: bytes) -> tuple[int, bytes]:
        conn = self._conn
        if conn is None or not conn.connected:
            raise WriteError(f"{point}: device {self.name} is offline")
        try:
            got, body, _ts = await conn.request(adu[2:], high_priority=True)  # ADU without tid
        except TransactionTimeout:
            self.failed("write timeout")
            raise WriteError(f"{point}: no answer within {self.config.timeout}s") from None
        except ConnectionClosed as exc:
            raise WriteError(f"{point}: connection closed during write ({exc})") from None
        return got, body

    # ---------------------------------------------------------------- stats
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    def counters(self) -> Stats:
        """Summed over every connection."""
        t = self._closed_totals
        conn = self._conn
        live = (conn.requests, conn.responses, conn.timeouts, conn.bad_frames) if conn else (0,) * 4
        return {
            "requests": t["requests"] + live[0],
            "responses": t["responses"] + live[1],
            "timeouts": t["timeouts"] + live[2],
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "bad_frames": t["bad_frames"] + live[3],
            **super().counters(),
        }
