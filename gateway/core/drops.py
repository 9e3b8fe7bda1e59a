"""Telemetry dropped at the source: counted per device, logged once per episode.

When the uplink cannot take more (its buffer is full because the disk is slower than the load, or
a stream is at its quota under policy ``block``), the runtime drops a batch's upstream record
before encoding it. Each drop is counted in ``gateway_samples_dropped_total{device, reason}``
(samples, not records) and announced upstream as a gap by the uplink; this class keeps the log
quiet: one warning when an episode starts, one line with the totals when records are taken again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.core.metrics import Metrics


class SourceDrops:
    """Counts and reports the samples the runtime could not hand to the uplink."""

    def __init__(self, metrics: Metrics, log: logging.Logger, clock: Callable[[], float]) -> None:
        metrics.describe(
            "samples_dropped_total", "counter",
            "Samples dropped at the source because the uplink could not take them, by device "
            "and reason (backpressure: buffer full; blocked: quota; overflow)",
        )  # fmt: skip
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._since: float | None = None  # start of the current episode (None: none)
        self._samples = 0
        self._devices: set[str] = set()
        self._reasons: set[str] = set()
        self.episodes = 0

    def dropped(self, device: str, samples: int, reason: str) -> None:
        self._metrics.inc(
            "samples_dropped_total", samples, labels=(("device", device), ("reason", reason))
        )
        if self._since is None:
            self._since = self._clock()
            self.episodes += 1
            self._log.warning(
                "uplink cannot keep up (%s): dropping telemetry at the source, counted in "
                "gateway_samples_dropped_total and announced upstream as gaps",
                reason,
            )
        self._samples += samples
        self._devices.add(device)
        self._reasons.add(reason)

    def accepted(self) -> None:
        """A record was taken: ends the episode, if one is running."""
        if self._since is None:
            return
        self._log.warning(
            "uplink keeps up again: %d samples of %d devices dropped in %.1f s (%s)",
            self._samples, len(self._devices), self._clock() - self._since,
            ", ".join(sorted(self._reasons)),
        )  # fmt: skip
        self._since = None
        self._samples = 0
        self._devices.clear()
        self._reasons.clear()

    @property
    def active(self) -> bool:
        return self._since is not None
