"""Fault isolation: an exception where it would end a task is caught, counted and logged once.

A poll task, the run loop or a protocol callback that lets an exception escape stops for good,
usually without a word (an asyncio task's exception is only reported when it is collected). So
every place that calls code it does not control (callbacks, rules, models, stores) goes through
a :class:`Faults`: the exception is counted per place and logged once per *episode* (from the
first failure to the next success), with the traceback and the cause, and the caller carries on.
A fault repeating at the poll rate thus gives two log lines, not a flood.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Faults:
    """Counters and episode state of the places one component isolates.

    Parameters
    ----------
    log : where episodes are reported.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._open: dict[str, int] = {}  # place -> failures in its current episode
        self.total: dict[str, int] = {}  # place -> failures since start

    def failed(self, place: str, exc: BaseException) -> None:
        """Count a failure at ``place``; the first of an episode is logged with its traceback."""
        self.total[place] = self.total.get(place, 0) + 1
        n = self._open.get(place)
        if n is not None:
            self._open[place] = n + 1
            return
        self._open[place] = 1
        self._log.error(
            "%s failed (%s: %s); carrying on, logged again when it works",
            place, type(exc).__name__, exc, exc_info=exc,
        )  # fmt: skip

    def ok(self, place: str) -> None:
        """``place`` worked: end its episode, if one is open (a dict test otherwise)."""
        if self._open:
            n = self._open.pop(place, None)
            if n is not None:
                self._log.warning("%s works again after %d failures", place, n)

    def call(self, place: str, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``; None when it raised (counted and logged as above)."""
        try:
            result = fn(*args)
        except Exception as exc:
            self.failed(place, exc)
            return None
        self.ok(place)
        return result

    def wrap(self, place: str, fn: Callable[..., Any]) -> Callable[..., None]:
        """``fn`` as a callback that never raises (for drivers' on_batch/on_event)."""

        def guarded(*args: Any) -> None:
            self.call(place, fn, *args)

        return guarded

    @property
    def failing(self) -> dict[str, int]:
        """Places in an episode now -> failures so far in it."""
        return dict(self._open)

    @property
    def count(self) -> int:
        return sum(self.total.values())


def ended_task(task: asyncio.Task[Any] | None) -> str | None:
    """Why ``task`` ended, if it did: a driver's task runs until it is cancelled by stop()."""
    if task is None or not task.done():
        return None
    if task.cancelled():
        return "task was cancelled"
    exc = task.exception()
    return f"task ended: {type(exc).__name__}: {exc}" if exc else "task returned"


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end. An exception it had already ended with is logged,
    not raised: a device's ``stop()`` must always get through (the runtime still has the uplink
    to close, the supervisor a device to start again)."""
    if task is None:
        return
    task.cancel()
    # asyncio.wait never raises what the task raised; a cancellation of our own propagates.
    await asyncio.wait({task})
    if not task.cancelled() and (exc := task.exception()) is not None:
        logging.getLogger("gateway.drivers").warning(
            "task %s had ended with %s: %s", task.get_name(), type(exc).__name__, exc
        )
