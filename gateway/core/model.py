"""The data model shared by every stage: qualities, samples and columnar sample batches.

Inside the runtime samples travel as :class:`SampleBatch` (typed columns), never as one Python
object per reading; :class:`Sample` exists for edges (tests, logs, the rule replay tool).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt


class Quality(IntEnum):
    """OPC-style quality of a reading."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2  # timeout, CRC error, exception response, device offline


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one point: ``ts`` is float seconds since the epoch."""

    point: str
    ts: float
    value: float
    quality: Quality = Quality.GOOD


class SampleBatch:
    """Columnar batch of samples, in arrival order.

    Attributes
    ----------
    point_ids : uint32 array, index into the :class:`~gateway.core.points.PointTable`.
    ts : float64 array, seconds since the epoch.
    values : float64 array; booleans are 0.0/1.0. Bad-quality samples carry NaN.
    quality : uint8 array of :class:`Quality`.
    """

    __slots__ = ("point_ids", "ts", "values", "quality")

    def __init__(
        self,
        point_ids: npt.NDArray[np.uint32],
        ts: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint8],
    ) -> None:
        n = len(point_ids)
        if not (len(ts) == len(values) == len(quality) == n):
            raise ValueError("SampleBatch columns must have the same length")
        self.point_ids = point_ids
        self.ts = ts
        self.values = values
        self.quality = quality

    def __len__(self) -> int:
        return len(self.point_ids)

    @classmethod
    def empty(cls) -> SampleBatch:
        return cls(
            np.empty(0, np.uint32),
            np.empty(0, np.float64),
            np.empty(0, np.float64),
            np.empty(0, np.uint8),
        )

    @classmethod
    def uniform(
        cls,
        point_ids: npt.NDArray[np.uint32],
        ts: float,
        values: npt.NDArray[np.float64],
        quality: Quality = Quality.GOOD,
    ) -> SampleBatch:
        """A batch of readings taken at one instant (one poll response) with one quality."""
        n = len(point_ids)
        return cls(
            point_ids,
            np.full(n, ts, np.float64),
            values,
            np.full(n, int(quality), np.uint8),
        )

    @classmethod
    def concat(cls, batches: list[SampleBatch]) -> SampleBatch:
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            np.concatenate([b.point_ids for b in batches]),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.values for b in batches]),
            np.concatenate([b.quality for b in batches]),
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> SampleBatch:
        return SampleBatch(
            self.point_ids[mask], self.ts[mask], self.values[mask], self.quality[mask]
        )


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A change in a device's link state, raised by its driver."""

    device: str
    kind: str  # "online" | "offline"
    ts: float
    detail: str = ""
