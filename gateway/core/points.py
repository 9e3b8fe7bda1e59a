"""The point table: every known point, its metadata, last value and ring buffer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gateway.core.model import Quality, SampleBatch
from gateway.impl import ringbuf

if TYPE_CHECKING:
    from gateway._pure.ringbuf import RingBuffer


@dataclass(frozen=True, slots=True)
class PointInfo:
    """Metadata of one point, as announced upstream in the point model."""

    id: int
    name: str  # full name, "device.point"
    device: str
    type: str  # register type or "bool"
    unit: str = ""
    writable: bool = False
    deadband: float | None = None
    description: str = ""

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "device": self.device,
            "type": self.type,
            "unit": self.unit,
            "writable": self.writable,
            "description": self.description,
        }


class PointNames(list[str]):
    """Point names (index = id) and the other names rules may use for them: asset paths such as
    ``line1/press1.temperature`` (``aliases``: name -> id)."""

    def __init__(self, names: list[str], aliases: dict[str, int] | None = None) -> None:
        super().__init__(names)
        self.aliases = aliases or {}


class PointTable:
    """Point ids are dense indices; per-point state is kept in typed columns."""

    def __init__(self, ring_capacity: int = 4096) -> None:
        self._ring_capacity = ring_capacity
        self._bank = ringbuf.RingBank(ring_capacity)  # one storage block for many rings
        self.infos: list[PointInfo] = []
        self._ids: dict[str, int] = {}
        self.rings: list[RingBuffer] = []
        self.last_value = np.empty(0, np.float64)
        self.last_ts = np.empty(0, np.float64)
        self.last_quality = np.empty(0, np.uint8)
        self.aliases: dict[str, str] = {}  # asset path name -> point name (gateway.model)

    def names(self) -> PointNames:
        """The names rules resolve: point names by id, plus the asset-path aliases."""
        names = [info.name for info in self.infos]
        ids = {n: i for i, n in enumerate(names)}
        aliases = {a: ids[p] for a, p in self.aliases.items() if p in ids}
        return PointNames(names, aliases)

    def add(self, name: str, device: str, type: str, **meta: object) -> int:
        """Register a point; returns its id. Adding an existing name is an error."""
        if name in self._ids:
            raise ValueError(f"duplicate point {name!r}")
        pid = len(self.infos)
        self.infos.append(PointInfo(pid, name, device, type, **meta))  # type: ignore[arg-type]
        self._ids[name] = pid
        self.rings.append(self._bank.new_ring())
        self.last_value = np.append(self.last_value, np.nan)
        self.last_ts = np.append(self.last_ts, np.nan)
        self.last_quality = np.append(self.last_quality, np.uint8(Quality.BAD))
        return pid

    def __len__(self) -> int:
        return len(self.infos)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def id_of(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"unknown point {name!r}") from None

    def ensure_capacity(self, pid: int, samples: int) -> int:
        """Grow the ring of point ``pid`` to at least ``samples`` (keeping its contents).

        Rings start at ``ring_capacity`` (rows of the table's bank); the rule engine asks for more
        for the points its windows read, which then get a ring of their own, so memory stays
        small for all other points. Returns the capacity.
        """
        ring = self.rings[pid]
        if ring.capacity >= samples:
            return int(ring.capacity)
        bigger = ringbuf.RingBuffer(samples)
        if len(ring):
            ts, values = ring.last(len(ring))
            bigger.extend(ts, values)
        self.rings[pid] = bigger
        return samples

    def ingest(self, batch: SampleBatch) -> None:
        """Record a batch: good numeric samples go into the rings, last values are updated.

        One call into the ring module per batch (a C loop when compiled), whatever its size.
        """
        if not len(batch):
            return
        ringbuf.ingest(
            self.rings,
            batch.point_ids,
            batch.ts,
            batch.values,
            batch.quality,
            Quality.GOOD,
            self.last_value,
            self.last_ts,
            self.last_quality,
        )
