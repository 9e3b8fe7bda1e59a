"""Which samples go upstream: every one, or only changes beyond a point's deadband."""

from __future__ import annotations

import numpy as np

from gateway.core.model import SampleBatch
from gateway.core.points import PointTable


class DeadbandFilter:
    """Decides which samples go upstream: all of them, or only changes beyond a point's deadband."""

    def __init__(self, points: PointTable) -> None:
        n = len(points)
        self._has = np.array([p.deadband is not None for p in points.infos], bool)
        self._band = np.array([p.deadband or 0.0 for p in points.infos], np.float64)
        self._sent = np.full(n, np.nan)
        self._sent_q = np.full(n, 255, np.uint8)
        self.enabled = bool(self._has.any())

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        if not self.enabled:
            return batch
        ids = batch.point_ids
        sent = self._sent[ids]
        with np.errstate(invalid="ignore"):
            moved = ~(np.abs(batch.values - sent) <= self._band[ids])
        moved &= ~(np.isnan(batch.values) & np.isnan(sent))
        keep = ~self._has[ids] | moved | (batch.quality != self._sent_q[ids])
        self._sent[ids[keep]] = batch.values[keep]
        self._sent_q[ids[keep]] = batch.quality[keep]
        return batch if keep.all() else batch.select(keep)
