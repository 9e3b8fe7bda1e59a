"""What the Modbus driver tests share: a recorder of a driver's batches and events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gateway.core.model import DeviceEvent, SampleBatch

TIMEOUT = 5.0  # bound of every wait; the happy path takes milliseconds


class Recorder:
    """Collects batches and events; waits are bounded and say what they waited for."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []
        self._changed = asyncio.Event()

    def on_batch(self, b: SampleBatch) -> None:
        self.batches.append(b)
        self._changed.set()

    def on_event(self, e: DeviceEvent) -> None:
        self.events.append(e)
        self._changed.set()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    async def wait(self, cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        async def loop() -> None:
            while not cond():
                self._changed.clear()
                # Woken by every batch/event; the short re-check covers driver counters.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.01)

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    def latest(self, ids: dict[str, int]) -> dict[str, tuple[float, int]]:
        by_id = {v: k for k, v in ids.items()}
        out: dict[str, tuple[float, int]] = {}
        for b in self.batches:
            for pid, val, q in zip(b.point_ids, b.values, b.quality, strict=True):
                out[by_id[int(pid)]] = (float(val), int(q))
        return out
