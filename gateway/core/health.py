"""The gateway's own conditions (storage degraded, a driver stalled) and the ``/health`` answer.

A condition is raised with a reason and cleared when its cause goes away; each change is a local
alarm upstream (rule ``storage_degraded``, ``driver_stalled:<device>``), a log line, and counted.
While any condition is active ``/health`` answers 503 with the reasons, so a container
orchestrator or an operator sees that the gateway runs but does not do its whole job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.core.metrics import Labels
from gateway.core.storage import StorageMonitor
from gateway.core.supervisor import Supervisor

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime

_log = logging.getLogger("gateway.health")

HEALTH_STALE_S = 2.0  # /health turns 503 when the run loop has not ticked for this long


@dataclass(slots=True)
class Condition:
    reason: str
    severity: str
    since: float  # wall clock, as in the alarm


class Conditions:
    """Active conditions by name; ``emit(name, state, severity, message)`` gets every change."""

    def __init__(
        self,
        emit: Callable[[str, str, str, str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self.active: dict[str, Condition] = {}
        self.raised: dict[str, int] = {}  # name -> episodes since start

    def set(self, name: str, reason: str | None, severity: str = "major") -> None:
        """Raise ``name`` with ``reason`` (a changed reason is not a new episode), or clear it
        when ``reason`` is None."""
        cur = self.active.get(name)
        if reason is None:
            if cur is not None:
                del self.active[name]
                _log.warning("%s cleared (was: %s)", name, cur.reason)
                self._emit(name, "cleared", cur.severity, f"cleared (was: {cur.reason})")
            return
        if cur is not None:
            cur.reason = reason
            return
        self.active[name] = Condition(reason, severity, self._clock())
        self.raised[name] = self.raised.get(name, 0) + 1
        _log.error("%s: %s", name, reason)
        self._emit(name, "raised", severity, reason)

    def metrics(self) -> list[tuple[str, Labels, float]]:
        out: list[tuple[str, Labels, float]] = []
        for name, n in self.raised.items():
            labels = (("condition", name),)
            out.append(("condition_active", labels, 1.0 if name in self.active else 0.0))
            out.append(("condition_episodes_total", labels, float(n)))
        return out


class SelfCheck:
    """The runtime's checks of itself, run from its loop: storage and driver supervision."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.conditions = Conditions(self._alarm, rt.clock)
        self.storage = StorageMonitor(rt.uplink)
        self.supervisor = Supervisor(
            rt.devices, rt.config.devices,
            {name: rt.points.id_of(name) for name in rt.device_of_point},
            rt.config.stall_periods, self._stalled,
        )  # fmt: skip

    def tick(self) -> None:
        faults = self.rt.faults
        faults.call("supervisor", self.supervisor.check)
        faults.call("storage check", self._storage)

    async def stop(self) -> None:
        await self.supervisor.stop()

    def _storage(self) -> None:
        self.conditions.set("storage_degraded", self.storage.check(), "critical")

    def _stalled(self, device: str, why: str | None) -> None:
        self.conditions.set(f"driver_stalled:{device}", why)

    def _alarm(self, name: str, state: str, severity: str, message: str) -> None:
        """A condition of the gateway itself as a local alarm, like the rules' alarms."""
        rt = self.rt
        rt.metrics.inc("alarms_total", labels=(("rule", name), ("state", state)))
        rt.event("alarm", rt.clock(), rule=name, state=state, severity=severity,
                 message=message, values={})  # fmt: skip


def health(rt: Runtime) -> tuple[bool, dict[str, Any]]:
    """``/health``: 200 while started, the run loop turns and no condition is active."""
    age = time.monotonic() - rt._last_tick
    live = rt._running and age < HEALTH_STALE_S
    problems = {name: c.reason for name, c in rt.selfcheck.conditions.active.items()}
    ok = live and not problems
    if not rt._running:
        state = "not running"
    elif not live:
        state = "stale"
    else:
        state = "degraded" if problems else "ok"
    try:
        link = rt.uplink.stats().get("link")
    except Exception as exc:  # the queue's reads fail on a broken disk: still answer
        link = f"unknown ({type(exc).__name__})"
    return ok, {
        "status": state,
        "gateway": rt.config.id,
        "loop_age_s": round(age, 3) if rt._running else None,
        "uplink": link,
        "problems": problems,
    }
