"""ModbusTcpDevice: polls one Modbus TCP device on its poll plan and writes its points.

Link state machine (events are raised on transitions only, so each is raised once)::

    unknown --first answer--> online --N consecutive timeouts / connection lost--> offline
    unknown --connect fails--> offline --reconnected and first answer--> online

Going offline closes the socket (a device that stops answering is often behind a half-open
connection), emits one BAD/NaN batch for every point of the device and reconnects with
exponential backoff and jitter. While offline no further batches are emitted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping

import numpy as np

from gateway.config import DeviceConfig
from gateway.core.guard import cancel_and_wait, ended_task
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.linkstate import LinkState
from gateway.drivers.modbus_tcp.client import (
    ConnectionClosed,
    ModbusTcpConnection,
    TransactionTimeout,
)
from gateway.drivers.modbus_tcp.plan import PollGroup, PollPlan, ReadBlock, build_plan
from gateway.impl import modbus

_log = logging.getLogger(__name__)

#: Consecutive timed-out requests after which the device is declared offline.
OFFLINE_AFTER_FAILURES = 3


class WriteError(Exception):
    """A write was not carried out.

    ``refused`` is True when the gateway refused it without asking the device (unknown or
    read-only point, value out of the type's range) and False when the device failed it
    (exception response, timeout, device offline).
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def write_adu(plan: PollPlan, device: str, point: str, value: float) -> bytes:
    """The MBAP ADU (transaction id 0) that writes ``value`` to ``point``: fc 5 for a coil, fc 6
    or 16 for registers. WriteError(refused=True) when the gateway itself must refuse it; shared
    by every Modbus transport (RTU frames reuse the PDU)."""
    spec = plan.points.get(point)
    if spec is None:
        raise WriteError(f"{point}: not a point of device {device}", refused=True)
    if not spec.writable:
        raise WriteError(f"{point}: not writable", refused=True)
    value = float(value)
    if not math.isfinite(value):
        raise WriteError(f"{point}: value {value} is not finite", refused=True)
    unit = plan.unit_id
    if spec.table == "coil":
        return bytes(modbus.build_write_single_coil(0, unit, spec.address, value != 0.0))
    try:
        words = modbus.encode_value(spec.type_code, spec.flags, spec.scale, spec.bias, value)
    except (ValueError, OverflowError) as exc:
        raise WriteError(f"{point}: {value} out of range ({exc})", refused=True) from None
    if len(words) == 1:
        return bytes(modbus.build_write_single_register(0, unit, spec.address, words[0]))
    return bytes(modbus.build_write_multiple_registers(0, unit, spec.address, list(words)))


class ModbusTcpDevice:
    """One Modbus TCP device: one connection, one poll task per poll group, writes on demand.

    Polled (``polled``): while online, every poll group yields a batch each period, so the
    runtime's supervisor takes a silent group for a wedged task (gateway.core.supervisor).

    Parameters
    ----------
    config : the device's configuration.
    point_ids : full point name ("dev.pt") -> PointTable id, for every point of the device.
    on_batch : receives one SampleBatch per poll response (and one BAD batch per failure).
    on_event : receives DeviceEvent("online" | "offline") on link state transitions.
    clock : wall clock for sample and event timestamps (epoch seconds).
    """

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.plan: PollPlan = build_plan(config, point_ids)
        self._clock = clock
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._conn: ModbusTcpConnection | None = None
        self._link = LinkState(config.name, self.plan.point_ids, clock, on_batch, on_event)
        self.faults = self._link.faults  # a raising callback or poll step never ends a task
        self._on_batch = self.faults.wrap(f"device {self.name}: on_batch", on_batch)
        self._failures = 0
        self._attempt = 0  # reconnect backoff exponent; reset by the first answer
        self._close_reason = ""
        self._ever_connected = False
        # Totals of retired connections; the live connection's counters are added in stats().
        self._closed_totals = {"requests": 0, "responses": 0, "timeouts": 0, "bad_frames": 0}
        self._last_rtt = float("nan")
        self.exceptions = 0
        self.bad_responses = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.skipped_polls = 0
        self.writes = 0
        self.write_errors = 0

    polled = True

    @property
    def name(self) -> str:
        return self.config.name

    def cycle_bound(self, group: str) -> float:
        """Longest a healthy poll cycle of ``group`` may take: each of its requests may wait
        behind one request of every other group (one in flight), each taking its timeout."""
        blocks = next((len(g.blocks) for g in self.plan.groups if g.name == group), 1)
        return blocks * len(self.plan.groups) * self.config.timeout

    def task_failure(self) -> str | None:
        """Why the connection task ended while it should run (None while it runs or stopped)."""
        return ended_task(self._task)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start connecting and polling in the background; never raises for a dead device."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name=f"modbus_tcp:{self.name}")

    async def stop(self) -> None:
        """Cancel the poll tasks and close the socket. Raises no events."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _supervise(self) -> None:
        try:
            while True:
                conn = ModbusTcpConnection(self.config.unit_id, self.config.timeout, self._clock)
                try:
                    await conn.open(
                        self.config.host, self.config.port, max(2 * self.config.timeout, 1.0)
                    )
                except Exception as exc:  # OSError, TimeoutError; anything else alike
                    self.connect_failures += 1
                    self._set_offline(f"connect to {self.config.host}:{self.config.port}: {exc}")
                    await asyncio.sleep(self._backoff())
                    continue
                if self._ever_connected:
                    self.reconnects += 1
                self._ever_connected = True
                self._close_reason = ""
                self._failures = 0
                self._conn = conn
                tasks = [
                    asyncio.create_task(
                        self._poll_group(conn, g), name=f"poll:{self.name}:{g.name}"
                    )
                    for g in self.plan.groups
                ]
                try:
                    lost = await conn.closed
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    conn.close()
                    self._retire(conn)
                self._set_offline(self._close_reason or f"connection lost: {lost or 'closed'}")
                await asyncio.sleep(self._backoff())
        finally:
            if self._conn is not None:
                self._conn.close()
                self._retire(self._conn)

    def _backoff(self) -> float:
        """Exponential backoff with jitter (50-100 % of the step) so devices do not reconnect
        in lockstep after a switch restart."""
        step = min(self.config.reconnect_max, self.config.reconnect_min * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 62)
        return step * (0.5 + 0.5 * self._rng.random())

    def _retire(self, conn: ModbusTcpConnection) -> None:
        if self._conn is not conn:
            return
        self._conn = None
        t = self._closed_totals
        t["requests"] += conn.requests
        t["responses"] += conn.responses
        t["timeouts"] += conn.timeouts
        t["bad_frames"] += conn.bad_frames

    # ---------------------------------------------------------------- link state
    def _set_online(self) -> None:
        self._failures = 0
        self._attempt = 0
        self._link.up()

    def _set_offline(self, reason: str) -> None:
        self._link.down(reason)

    def _failed(self, conn: ModbusTcpConnection, reason: str) -> None:
        self._failures += 1
        if self._failures >= OFFLINE_AFTER_FAILURES and conn.connected:
            self._close_reason = f"{self._failures} consecutive failures, last: {reason}"
            conn.close()

    # ---------------------------------------------------------------- polling
    async def _poll_group(self, conn: ModbusTcpConnection, group: PollGroup) -> None:
        loop = asyncio.get_running_loop()
        period = group.period
        due = loop.time()
        place = f"device {self.name}: poll {group.name}"
        try:
            while True:
                for block in group.blocks:
                    try:
                        await self._poll_block(conn, block)
                    except ConnectionClosed:
                        raise
                    except Exception as exc:  # a bug or a callback: count it, keep polling
                        self.faults.failed(place, exc)
                    else:
                        self.faults.ok(place)
                due += period
                now = loop.time()
                if now - due >= period:  # whole ticks missed: skip them, run one late tick
                    missed = int((now - due) // period)
                    self.skipped_polls += missed
                    due += missed * period
                await asyncio.sleep(due - now)
        except ConnectionClosed:
            return

    async def _poll_block(self, conn: ModbusTcpConnection, block: ReadBlock) -> None:
        try:
            function, body, ts = await conn.request(block.adu_tail)
        except TransactionTimeout:
            self._bad(block)
            self._failed(conn, "timeout")
            return
        self._last_rtt = conn.last_rtt
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
        self._set_online()  # a device that answers is alive, even when the answer is bad
        if function == block.function | 0x80:
            self.exceptions += 1
        else:
            self.bad_responses += 1
        self._bad(block, ts)

    def _bad(self, block: ReadBlock, ts: float | None = None) -> None:
        n = len(block.point_ids)
        self._on_batch(
            SampleBatch.uniform(
                block.point_ids,
                self._clock() if ts is None else ts,
                np.full(n, np.nan),
                Quality.BAD,
            )
        )

    async def read_once(self, block: ReadBlock) -> tuple[int, bytes]:
        """Read ``block`` once now, ahead of polls, for the API's commissioning view: the
        answer's function code and PDU body; nothing goes to ``on_batch``."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise ConnectionError(f"device {self.name} is offline")
        function, body, _ts = await conn.request(block.adu_tail, high_priority=True)
        return function, body

    # ---------------------------------------------------------------- writes
    async def write(self, point: str, value: float) -> None:
        """Write an engineering value to a writable point (full name), ahead of any polls.

        Raises
        ------
        WriteError : ``refused`` for an unknown or read-only point or a value out of range;
            not refused when the device answers with an exception, times out or is offline.
        """
        try:
            tail, function, echo = self._write_request(point, value)
        except WriteError:
            self.write_errors += 1
            raise
        conn = self._conn
        if conn is None or not conn.connected:
            self.write_errors += 1
            raise WriteError(f"{point}: device {self.name} is offline")
        try:
            got, body, _ts = await conn.request(tail, high_priority=True)
        except TransactionTimeout:
            self.write_errors += 1
            self._failed(conn, "write timeout")
            raise WriteError(f"{point}: no answer within {self.config.timeout}s") from None
        except ConnectionClosed as exc:
            self.write_errors += 1
            raise WriteError(f"{point}: connection closed during write ({exc})") from None
        self._set_online()
        if got == function | 0x80:
            self.exceptions += 1
            self.write_errors += 1
            code = body[0] if body else -1
            raise WriteError(f"{point}: device answered exception code {code}")
        if got != function or body[:4] != echo:
            self.bad_responses += 1
            self.write_errors += 1
            raise WriteError(f"{point}: unexpected answer to write (function {got})")
        self.writes += 1

    def _write_request(self, point: str, value: float) -> tuple[bytes, int, bytes]:
        """Request tail (ADU without tid), function code and the echo the answer must carry."""
        adu = write_adu(self.plan, self.name, point, value)
        # MBAP is 7 bytes, then the function code; fc 5/6/16 answers echo the next 4 bytes.
        return adu[2:], adu[7], adu[8:12]

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict[str, float | int | bool | str]:
        """Counters since construction, summed over every connection."""
        t = self._closed_totals
        conn = self._conn
        live = (
            (conn.requests, conn.responses, conn.timeouts, conn.bad_frames)
            if conn is not None
            else (0, 0, 0, 0)
        )
        rtt = self._last_rtt
        return {
            "connected": conn is not None and conn.connected,
            "online": self._link.online is True,
            "state": self._link.state,
            "requests": t["requests"] + live[0],
            "responses": t["responses"] + live[1],
            "timeouts": t["timeouts"] + live[2],
            "exceptions": self.exceptions,
            "bad_responses": self.bad_responses,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "bad_frames": t["bad_frames"] + live[3],
            "skipped_polls": self.skipped_polls,
            "last_rtt_ms": rtt * 1000.0 if rtt == rtt else float("nan"),
            "writes": self.writes,
            "write_errors": self.write_errors,
            "task_errors": self.faults.count,
        }
