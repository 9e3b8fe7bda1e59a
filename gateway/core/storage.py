"""Local persistence that degrades instead of failing: a full or broken disk is a condition.

The gateway persists in two places: the alarm state file (``alarms.json``, written by the rule
engine on every alarm transition) and the uplink's queue (committed by its writer thread, which
keeps failed batches in memory and retries them). Neither may stop acquisition when the disk is
full or failing. :class:`GuardedAlarmStore` keeps the latest alarm state in memory when a save
fails and retries it; :class:`StorageMonitor` folds both into one answer, "degraded because ...",
which the runtime raises as the local alarm ``storage_degraded`` and reports on ``/health``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.rules.alarms import AlarmState, AlarmStore

_log = logging.getLogger("gateway.storage")

RETRY_S = 1.0  # a failed alarm-state save is retried this often (and at every transition)


def queue_writer_io(uplink: Any) -> tuple[int, bool | None]:
    """The queue writer's I/O state: (failed commits so far, healthy now or None if unknown).

    The one place that reads the writer's attributes, so renaming them is a one-line change
    here. The writer retries a failed commit every ``RETRY_DELAY`` until it succeeds.
    """
    writer = getattr(uplink, "_writer", None)
    if writer is None:
        return 0, None
    return int(writer.errors), getattr(writer, "healthy", None)


class GuardedAlarmStore(AlarmStore):
    """An :class:`AlarmStore` whose ``save`` never raises.

    An ``OSError`` (disk full, read-only, I/O error) keeps the states in memory as ``pending``
    and records the cause in ``error``; :meth:`flush` retries, and every later save writes the
    newest states (a save always writes all of them, so nothing is lost by skipping one).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.pending: list[AlarmState] | None = None
        self.error = ""
        self.failures = 0

    def save(self, states: list[AlarmState]) -> None:
        self.pending = list(states)
        self.flush()

    def flush(self) -> bool:
        """Write the pending states, if any; True when nothing is left pending."""
        if self.pending is None:
            return True
        try:
            super().save(self.pending)
        except OSError as exc:
            self.failures += 1
            self.error = f"{self.path}: {exc.strerror or exc}"
            return False
        self.pending = None
        self.error = ""
        return True


class StorageMonitor:
    """Whether local persistence works now, retrying the alarm state while it does not.

    Parameters
    ----------
    alarms : the runtime's guarded alarm store.
    uplink : the uplink whose queue writer is watched (through :func:`queue_writer_io`).
    clock : monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        alarms: GuardedAlarmStore,
        uplink: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alarms = alarms
        self.uplink = uplink
        self.clock = clock
        self._next_retry = 0.0
        self._errors_seen = 0
        self._error_at: float | None = None

    def check(self) -> str | None:
        """None when storage works, else why not (for the alarm and ``/health``)."""
        now = self.clock()
        problems = []
        if self.alarms.pending is not None and now >= self._next_retry:
            self._next_retry = now + RETRY_S
            self.alarms.flush()
        if self.alarms.pending is not None:
            problems.append(f"alarm state not saved ({self.alarms.error}), kept in memory")
        errors, healthy = queue_writer_io(self.uplink)
        if healthy is None:
            # Without a flag, a writer is failing while its error count still grows: it
            # retries every RETRY_DELAY as long as a batch is pending.
            if errors > self._errors_seen:
                self._errors_seen = errors
                self._error_at = now
            retry = getattr(type(getattr(self.uplink, "_writer", None)), "RETRY_DELAY", 1.0)
            healthy = self._error_at is None or now - self._error_at > 2.5 * retry
        if not healthy:
            problems.append(
                f"queue commits failing ({errors} failed so far), records held in memory"
            )
        return "; ".join(problems) or None
