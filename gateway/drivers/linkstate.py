"""A device's link state, shared by every driver: online/offline announced once per change.

Going offline also hands the runtime one bad-quality NaN sample per point, so rules and the uplink
see the outage as data and not only as an event. The callbacks are guarded (gateway.core.guard):
one that raises is counted in ``faults`` and logged once, and never ends the caller's task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from gateway.core.guard import Faults
from gateway.core.model import DeviceEvent, Quality, SampleBatch

_log = logging.getLogger("gateway.drivers")


class LinkState:
    def __init__(
        self,
        name: str,
        point_ids: npt.NDArray[np.uint32],
        clock: Callable[[], float],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        kind: str = "device",
    ) -> None:
        self.name = name
        self.kind = kind
        self._ids = point_ids
        self._clock = clock
        self.faults = Faults(_log)
        self.on_batch = self.faults.wrap(f"{kind} {name}: on_batch", on_batch)
        self.on_event = self.faults.wrap(f"{kind} {name}: on_event", on_event)
        self.online: bool | None = None  # None until the first answer or failure

    @property
    def state(self) -> str:
        return {None: "unknown", True: "online", False: "offline"}[self.online]

    def up(self, ts: float | None = None, detail: str = "") -> None:
        """The device answered: announce "online" if it was not."""
        if self.online is not True:
            self.online = True
            _log.info("%s %s online", self.kind, self.name)
            self.on_event(
                DeviceEvent(self.name, "online", self._clock() if ts is None else ts, detail)
            )

    def down(self, reason: str) -> None:
        """The device is unreachable: bad samples for its points and one "offline" event."""
        if self.online is False:
            return
        self.online = False
        ts = self._clock()
        _log.warning("%s %s offline: %s", self.kind, self.name, reason)
        n = len(self._ids)
        if n:
            self.on_batch(SampleBatch.uniform(self._ids, ts, np.full(n, np.nan), Quality.BAD))
        self.on_event(DeviceEvent(self.name, "offline", ts, reason))
