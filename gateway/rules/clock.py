"""The one way to drive a :class:`~gateway.rules.engine.RuleEngine` in time, live and in replay.

The engine's time-based behaviour (``for:`` holds, ``clear_for``, cooldowns, ``stale()``, and the
time windows a hold re-evaluates) depends on *when* :meth:`RuleEngine.tick` runs between samples.
If the gateway ticked on its wall-clock loop and ``gateway rules test`` ticked on its own
schedule, a replay would see windows at other instants and could miss or move a firing (it did:
a replay of the demo missed a ``press1_restart`` the live gateway made). So both call the engine
only through :class:`RuleClock`, whose ticks are a function of the samples alone:

* ticks fall on a fixed grid, the multiples of ``1 / rate`` seconds of sample time (10 per
  second), never on "whenever the loop woke up";
* before a batch, every grid instant up to and including its first timestamp is ticked, then the
  batch is processed (samples in arrival order, as the runtime received them);
* the runtime's loop also calls :meth:`RuleClock.advance` with its clock, so timers elapse when no
  samples come; it ticks only up to ``now - holdback``, so a batch stamped a little before it was
  delivered (a poll's response, a model's window end) still finds its grid instants unticked.

A replay of the samples in the order the gateway processed them therefore makes exactly the same
engine calls as the gateway did, and the same effects at the same times, provided no batch was
delivered more than ``holdback`` after its timestamp while no later batch had come (a batch from
a model, stamped with its window's end, comes after the input samples that ticked the grid: that
order is recorded and replayed as it was). :attr:`RuleClock.late` counts the exceptions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway.core.model import SampleBatch
from gateway.rules.effects import Effect

if TYPE_CHECKING:
    from gateway.rules.engine import RuleEngine

#: Grid ticks per second of sample time.
TICK_RATE = 10
#: The runtime's loop ticks only up to this many seconds behind its clock (see module doc).
HOLDBACK_S = 1.0
#: Most grid instants ticked at once: after a longer silence only the last ones are ticked
#: (live and in replay alike), so a clock jump or a gap of days cannot stall the gateway.
MAX_TICKS = 10_000


class RuleClock:
    """Feeds batches and grid ticks to an engine; the engine is passed in on every call so a
    hot reload (a new engine) keeps the same grid position."""

    def __init__(self, rate: int = TICK_RATE, holdback: float = HOLDBACK_S) -> None:
        if rate <= 0:
            raise ValueError("tick rate must be > 0")
        self.rate = int(rate)
        self.holdback = float(holdback)
        self._k: int | None = None  # index of the last grid instant ticked
        self._k_fed: int | None = None  # ... by a batch (a replay ticks only those)
        #: batches stamped before instants the loop had already ticked on its own (without a
        #: later batch): only there can a replay of the recording differ from the live run
        self.late = 0

    def grid_index(self, t: float) -> int:
        """The largest ``k`` with ``k / rate <= t``, exact despite float rounding."""
        k = math.floor(t * self.rate)
        if (k + 1) / self.rate <= t:
            k += 1
        elif k / self.rate > t:
            k -= 1
        return k

    def feed(self, engine: RuleEngine, batch: SampleBatch) -> list[Effect]:
        """Tick the grid up to the batch's first timestamp, then process the batch."""
        if not len(batch):
            return []
        t = float(batch.ts[0])
        if t != t:
            return engine.process(batch)
        if self._k is not None and self._k_fed is not None:
            if self._k > max(self.grid_index(t), self._k_fed):
                self.late += 1
        out = self._until(engine, t)
        self._k_fed = self._k
        out.extend(engine.process(batch))
        return out

    def advance(self, engine: RuleEngine, now: float) -> list[Effect]:
        """Tick the grid up to ``now - holdback`` (the runtime's loop, without samples)."""
        return self._until(engine, now - self.holdback)

    def finish(self, engine: RuleEngine, now: float) -> list[Effect]:
        """Tick the grid up to ``now`` itself (the end of a replay)."""
        return self._until(engine, now)

    def _until(self, engine: RuleEngine, t: float) -> list[Effect]:
        k_end = self.grid_index(t)
        k = k_end - 1 if self._k is None else self._k
        if k_end <= k:
            return []
        k = max(k, k_end - MAX_TICKS)
        out: list[Effect] = []
        while k < k_end:
            k += 1
            self._k = k  # before the call: a tick that raises is not retried forever
            out.extend(engine.tick(k / self.rate))
        return out
