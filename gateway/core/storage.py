"""Local persistence that degrades instead of failing: a full or broken disk is a condition.

The gateway persists in one place, the uplink's queue: records, and the alarm state committed in
the same transaction as its alarm events. Its writer thread keeps a failed batch in memory and
retries it, so a full, read-only or failing disk never stops acquisition. :class:`StorageMonitor`
turns the queue's I/O state into one answer, "degraded because ...", which the runtime raises as
the local alarm ``storage_degraded`` and reports on ``/health``.
"""

from __future__ import annotations

from typing import Any


def queue_io(uplink: Any) -> tuple[int, str | None]:
    """The queue's I/O state: (failed commits so far, why it cannot be used now or None)."""
    stats = uplink.stats() if hasattr(uplink, "stats") else {}
    return int(stats.get("write_errors", 0) or 0), getattr(uplink, "io_error", None)


class StorageMonitor:
    """Whether local persistence works now.

    Parameters
    ----------
    uplink : the uplink whose queue is watched (``io_error``, ``stats()["write_errors"]``).
    """

    def __init__(self, uplink: Any) -> None:
        self.uplink = uplink

    def check(self) -> str | None:
        """None when storage works, else why not (for the alarm and ``/health``)."""
        errors, error = queue_io(self.uplink)
        if error is None:
            return None
        return f"queue unusable ({error}; {errors} failed commits so far), records held in memory"
