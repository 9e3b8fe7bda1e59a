"""The driver supervisor: a device that says "online" but has stopped delivering is restarted.

What "stalled" means depends on the driver:

* **Polled** drivers (``polled = True``: Modbus TCP, Modbus RTU master) hand over a batch for
  every poll group every period while online, good or bad (a timeout gives a BAD batch). A group
  silent for ``stall_periods`` of its periods plus its cycle bound has a wedged or dead
  task. The group of a batch is known from its first point. "Period" includes what a healthy
  cycle may take at worst (``cycle_bound(group)``: requests queued behind others on the same
  connection or line, each taking its timeout), so a slow device or a busy RTU line is not a
  stall.
* **Event-driven** drivers (CAN, the RTU sniffer, nodes) may be legitimately silent: a quiet bus
  or a master that stopped polling is the link state's business (offline after ``stale_after``).
  For them, and for every driver, stalled means the driver reports a task that ended or stopped
  turning (optional ``task_failure()``).
* A device that is not online (offline, or unknown before its first answer) is never stalled.

A stalled device's tasks are restarted (``stop()`` then ``start()``), with a backoff that doubles
while restarts do not help. The condition ``driver_stalled:<device>`` lasts from detection until
batches flow again (or the device goes offline); it is a local alarm and shows on ``/health``.
If the event loop itself was late (a long GC pause, a blocked callback) every deadline is pushed
out instead, so one slow moment never restarts every device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config import DeviceConfig
from gateway.core.guard import Faults
from gateway.drivers.registry import Device

_log = logging.getLogger("gateway.supervisor")

CHECK_S = 0.25  # devices are checked this often
LATE_S = 1.0  # a check this late means the loop stalled: deadlines restart instead of devices
STOP_TIMEOUT_S = 5.0  # a device's stop() that takes longer is abandoned and start() called anyway
MAX_BACKOFF_S = 300.0


@dataclass(slots=True)
class _Group:
    name: str
    limit: float  # seconds without a batch that make it stalled
    last: float = 0.0


@dataclass(slots=True)
class _Watched:
    device: Device
    groups: dict[str, _Group]
    polled: bool
    stalled: str | None = None  # why, while stalled
    restarts: int = 0  # since start
    failed_restarts: int = 0  # in a row, for the backoff
    next_restart: float = 0.0
    restarting: asyncio.Task[None] | None = None


async def stop_device(name: str, device: Device) -> None:
    """``device.stop()``, bounded and never raising: whatever it does, the caller goes on (to
    start it again, or to stop the next device and the uplink)."""
    try:
        await asyncio.wait_for(device.stop(), STOP_TIMEOUT_S)
    except TimeoutError:
        _log.error("device %s did not stop within %gs; going on", name, STOP_TIMEOUT_S)
    except Exception:
        _log.exception("stopping device %s failed; going on", name)


class Supervisor:
    """Watches devices, restarts stalled ones.

    Parameters
    ----------
    devices : name -> device object (the runtime's).
    configs : the devices' configurations (poll groups, timeouts).
    point_ids : full point name -> point id (maps a batch to its poll group).
    stall_periods : poll periods without a batch that make a polled group stalled; 0 turns
        the supervisor off.
    on_change : ``(device, reason or None)`` when a device becomes stalled or recovers.
    clock : monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        devices: Mapping[str, Device],
        configs: list[DeviceConfig] | tuple[DeviceConfig, ...],
        point_ids: Mapping[str, int],
        stall_periods: int,
        on_change: Callable[[str, str | None], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.stall_periods = stall_periods
        self._on_change = on_change
        self._watched: dict[str, _Watched] = {}
        self.faults = Faults(_log)
        self._group_of: dict[int, _Group] = {}
        now = clock()
        n = stall_periods
        for cfg in configs if n > 0 else ():
            dev = devices[cfg.name]
            polled = bool(getattr(dev, "polled", False))
            bound = getattr(dev, "cycle_bound", None)
            groups: dict[str, _Group] = {}
            for p in cfg.points if polled else ():  # a group without points never delivers
                pid = point_ids.get(f"{cfg.name}.{p.name}")
                period = cfg.poll_groups.get(p.poll)
                if pid is None or period is None:
                    continue
                if p.poll not in groups:
                    slack = bound(p.poll) if bound else 3.0 * cfg.timeout
                    groups[p.poll] = _Group(p.poll, n * period + slack, now)
                self._group_of[pid] = groups[p.poll]
            self._watched[cfg.name] = _Watched(dev, groups, polled)
        self._last_check = now

    def seen(self, point_id: int) -> None:
        """A batch starting with ``point_id`` arrived (hot path: one dict lookup)."""
        group = self._group_of.get(point_id)
        if group is not None:
            group.last = self.clock()

    def check(self) -> None:
        """Find stalled devices and restart them; call often (it paces itself)."""
        now = self.clock()
        if now - self._last_check < CHECK_S:
            return
        late = now - self._last_check > LATE_S
        self._last_check = now
        for name, w in self._watched.items():
            if late:
                self._rebase(w, now)
            elif w.restarting is None:
                # One device's failing stats() must not keep the others from being checked.
                self.faults.call(f"supervisor: device {name}", self._check, name, w, now)

    def _check(self, name: str, w: _Watched, now: float) -> None:
        state = w.device.stats().get("state")
        failure = getattr(w.device, "task_failure", None)
        why = failure() if callable(failure) else None
        if why is None and state == "online":
            late = [g for g in w.groups.values() if now - g.last > g.limit]
            if late:
                why = "; ".join(
                    f"poll group {g.name}: no batch for {now - g.last:.1f}s (limit {g.limit:g}s)"
                    for g in late
                )
        elif state != "online":
            self._rebase(w, now)  # the clock of a group starts when the device is online
        if why is None:
            if w.stalled is not None:
                _log.warning("device %s delivers again (was stalled: %s)", name, w.stalled)
                w.stalled = None
                w.failed_restarts = 0
                self._on_change(name, None)
            return
        if w.stalled is None:
            w.stalled = why
            self._on_change(name, why)
        if now >= w.next_restart:
            w.restarts += 1
            backoff = max((g.limit for g in w.groups.values()), default=5.0)
            w.next_restart = now + min(MAX_BACKOFF_S, backoff * 2.0**w.failed_restarts)
            w.failed_restarts = min(w.failed_restarts + 1, 30)
            _log.error("device %s stalled (%s); restarting its tasks (restart %d)",
                       name, why, w.restarts)  # fmt: skip
            w.restarting = asyncio.get_running_loop().create_task(
                self._restart(name, w), name=f"restart:{name}"
            )

    async def _restart(self, name: str, w: _Watched) -> None:
        try:
            await stop_device(name, w.device)
            await w.device.start()
        except Exception:
            _log.exception("starting device %s again failed; retried after the backoff", name)
        finally:
            self._rebase(w, self.clock())
            w.restarting = None

    def _rebase(self, w: _Watched, now: float) -> None:
        for g in w.groups.values():
            g.last = now

    async def stop(self) -> None:
        """Wait for restarts in progress (the runtime stops the devices next)."""
        tasks = [w.restarting for w in self._watched.values() if w.restarting is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S + 1.0)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per device: polled, stalled (reason or None), restarts."""
        return {
            name: {"polled": w.polled, "stalled": w.stalled, "restarts": w.restarts}
            for name, w in self._watched.items()
        }
