"""The driver contract: what every device class shares, so a driver is its transport and decoder.

A driver subclasses :class:`DriverBase` and writes only what is its own: ``tasks()`` (the
coroutines that read its transport), optionally ``open()``/``close()`` for a shared medium,
``write_value()`` when it can write, ``connected()`` and ``counters()`` for its stats. The base
owns the rest, the same for every driver: the constructor arguments the runtime passes, link
state (one "online"/"offline" event per change, BAD/NaN samples for every point on going
offline), batch and event emission through the fault guard (a raising callback is counted in
``task_errors`` and never ends a task), start/stop of the tasks, the supervisor's
``task_failure()``, reconnect backoff with jitter, a drift-free poll schedule, the refusal of
writes to unknown, read-only or non-finite targets, and the common part of ``stats()``.

Registration (``gateway.drivers`` entry points) and the config hook (``config_section`` and
``parse_config``) are described in docs/drivers.md; :mod:`gateway.drivers.registry` loads them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from gateway.config import DeviceConfig, PointConfig
from gateway.core.guard import cancel_and_wait, ended_task
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.linkstate import LinkState

if TYPE_CHECKING:
    from yaml.nodes import Node

    from gateway.config.options import Section
    from gateway.config.reader import Parsed

_log = logging.getLogger("gateway.drivers")

Stats = dict[str, float | int | bool | str]


class WriteError(Exception):
    """A write was not carried out.

    ``refused`` is True when the gateway refused it without asking the device (unknown or
    read-only point, value out of the type's range) and False when the device failed it
    (exception response, timeout, device offline).
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class DriverBase:
    """One configured device of a driver. Subclass it; see the module docstring and
    docs/drivers.md.

    Parameters
    ----------
    config : the device's configuration (``config.settings`` holds what ``parse_config``
        returned for a driver with its own section).
    point_ids : full point name ("dev.pt") -> PointTable id, for every point of the device.
    on_batch : receives the device's SampleBatches (use :meth:`emit`).
    on_event : receives its DeviceEvents (use :meth:`event`, :meth:`set_online`...).
    clock : wall clock for sample and event timestamps (epoch seconds).
    ids : the ids that go BAD on going offline, in the driver's order (default: all of them).
    """

    #: Word in log lines and task names ("node 7 offline").
    kind: ClassVar[str] = "device"
    #: True when every poll group yields a batch each period while online: the supervisor then
    #: takes a silent group for a wedged task (needs ``cycle_bound(group)``).
    polled: bool = False
    #: Option table of the driver's own ``<driver name>:`` section of a device, or None when it
    #: has none. Third-party drivers declare it; the built-ins' tables live in gateway/config.
    config_section: ClassVar[Section | None] = None
    #: The point key every point of the driver must set (``address``, ``signal`` or
    #: ``channel``), or None when points need none of them.
    point_key: ClassVar[str | None] = None

    # ---------------------------------------------------------------- registration hooks
    @classmethod
    def create(
        cls,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float],
        shared: dict[str, Any],
    ) -> DriverBase:
        """The device object for ``config``. Override to hand devices a medium they share
        (keep it in ``shared``, which lives as long as the runtime's device factory)."""
        return cls(config, point_ids, on_batch, on_event, clock)

    @classmethod
    def parse_config(cls, parsed: Parsed, error: Callable[[Node, str, str], None]) -> Any:
        """The settings object stored in ``DeviceConfig.settings``, from the driver's section
        already read against ``config_section`` (types, bounds, unknown keys are checked).

        Check what a table cannot express here and report each problem with
        ``error(parsed.at(key), path, message)`` (shown as file:line:column: path: message);
        return None when anything was wrong. The default returns the section's values as a dict
        (key -> converted value or default).
        """
        return dict(parsed.fields())

    # ---------------------------------------------------------------- set-up
    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
        *,
        ids: npt.NDArray[np.uint32] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.point_ids = point_ids
        self.all_ids = np.fromiter(point_ids.values(), np.uint32, len(point_ids))
        #: full point name -> its config, for the write refusal and for drivers' lookups
        self.points: dict[str, PointConfig] = {f"{config.name}.{p.name}": p for p in config.points}
        self._link = LinkState(
            config.name, self.all_ids if ids is None else ids, clock, on_batch, on_event, self.kind
        )
        self.faults = self._link.faults
        self._on_batch = self._link.on_batch
        self._on_event = self._link.on_event
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self._attempt = 0  # reconnect backoff exponent
        self.writes = self.write_errors = self.skipped_polls = 0

    @property
    def name(self) -> str:
        return self.config.name

    def clock(self) -> float:
        """Wall-clock time for samples and events (the clock the runtime passed)."""
        return self._clock()

    # ---------------------------------------------------------------- emission
    def emit(self, batch: SampleBatch) -> None:
        """Hand a batch to the runtime (guarded: a raising consumer is counted, not raised)."""
        self._on_batch(batch)

    def emit_values(
        self, ids: npt.NDArray[np.uint32], ts: float, values: npt.NDArray[np.float64]
    ) -> None:
        """Good samples of ``ids``, all taken at ``ts``."""
        self._on_batch(SampleBatch.uniform(ids, ts, values))

    def emit_bad(self, ids: npt.NDArray[np.uint32], ts: float | None = None) -> None:
        """BAD/NaN samples for ``ids`` (a failed read of these points)."""
        ts = self._clock() if ts is None else ts
        self._on_batch(SampleBatch.uniform(ids, ts, np.full(len(ids), np.nan), Quality.BAD))

    def event(self, kind: str, detail: str = "", ts: float | None = None) -> None:
        """A device event other than online/offline (e.g. ``dtc``), for the events stream."""
        self._on_event(DeviceEvent(self.name, kind, self._clock() if ts is None else ts, detail))

    # ---------------------------------------------------------------- link state
    @property
    def online(self) -> bool:
        return self._link.online is True

    def set_online(self, ts: float | None = None, detail: str = "") -> None:
        """The device answered: "online" once per change; resets the reconnect backoff."""
        self._attempt = 0
        self._link.up(ts, detail)

    def set_offline(self, reason: str) -> None:
        """The device is unreachable: BAD samples for its points and "offline", once."""
        self._link.down(reason)

    def backoff(self) -> float:
        """Next reconnect delay: doubling from reconnect_min to reconnect_max, 50-100 % jitter
        so devices do not reconnect in lockstep after a switch restart."""
        c = self.config
        step = min(c.reconnect_max, c.reconnect_min * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 62)
        return step * (0.5 + 0.5 * self._rng.random())

    # ---------------------------------------------------------------- tasks
    def tasks(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """(name, coroutine) of each task that reads the transport; started by start()."""
        return []

    async def open(self) -> None:
        """Before the tasks start: e.g. open a shared line (default: nothing)."""

    async def close(self) -> None:
        """After the tasks were cancelled: e.g. release a shared line (default: nothing)."""

    async def start(self) -> None:
        """Start the driver's tasks; never raises for a dead device (it goes offline)."""
        if any(not t.done() for t in self._tasks):
            return
        await self.open()
        self._tasks = [asyncio.create_task(coro, name=f"{self.kind}:{self.name}:{label}")
                       for label, coro in self.tasks()]  # fmt: skip

    async def stop(self) -> None:
        """Cancel the tasks and close. Raises no events."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        for t in tasks:
            await cancel_and_wait(t)
        await self.close()

    def task_failure(self) -> str | None:
        """Why a task ended while it should run (None while they run or when stopped)."""
        for t in self._tasks:
            why = ended_task(t)
            if why:
                return why
        return None

    async def every(
        self,
        period: float,
        cycle: Callable[[], Awaitable[None]],
        ready: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Run ``cycle`` every ``period`` s on a fixed schedule. Ticks missed while a cycle ran
        long are skipped (counted in ``skipped_polls``) and one late tick runs. ``ready``, if
        given, is awaited before each tick; when it returns True (it waited, e.g. for a line to
        reopen) the schedule restarts from now."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if ready is not None and await ready():
                due = loop.time()
            await cycle()
            due += period
            now = loop.time()
            if now - due >= period:
                missed = int((now - due) // period)
                self.skipped_polls += missed
                due += missed * period
            await asyncio.sleep(due - now)

    # ---------------------------------------------------------------- writes
    async def write(self, point: str, value: float) -> None:
        """Write an engineering value to a writable point (full name).

        Raises
        ------
        WriteError : ``refused`` for an unknown or read-only point or a non-finite value (and
            whatever ``write_value`` refuses); not refused when the device failed it.
        """
        try:
            await self.write_value(point, self.check_write(point, value))
        except WriteError:
            self.write_errors += 1
            raise
        self.writes += 1

    def check_write(self, point: str, value: float) -> float:
        """The value as a float, or WriteError(refused=True) before anything goes out."""
        spec = self.points.get(point)
        if spec is None:
            raise WriteError(f"{point}: not a point of device {self.name}", refused=True)
        if not spec.writable:
            raise WriteError(f"{point}: not writable (set writable: true)", refused=True)
        value = float(value)
        if not math.isfinite(value):
            raise WriteError(f"{point}: value {value} is not finite", refused=True)
        return value

    async def write_value(self, point: str, value: float) -> None:
        """Carry out a checked write; raise WriteError when it fails (default: refuse)."""
        raise WriteError(f"{point}: the {self.config.driver} driver does not write", refused=True)

    # ---------------------------------------------------------------- stats
    def connected(self) -> bool:
        """Whether the transport is open (default: the device is online)."""
        return self.online

    def counters(self) -> Stats:
        """The driver's own counters, merged into stats()."""
        return {}

    def stats(self) -> Stats:
        """Counters since construction: the common ones, then the driver's."""
        return {
            "connected": self.connected(),
            "online": self.online,
            "state": self._link.state,
            "writes": self.writes,
            "write_errors": self.write_errors,
            "task_errors": self.faults.count,
            **self.counters(),
        }
