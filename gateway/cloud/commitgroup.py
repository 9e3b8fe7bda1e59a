"""The receiver's group commit: many DATA messages, one transaction, one fsync.

The receiver reads every message already waiting on its ROUTER (up to ``max_messages``, waiting
at most ``max_delay`` for more) before it commits. DATA messages of that group are checked
against the hw they will have once the earlier ones are stored (:meth:`CommitGroup.hw`), their
records go into one :meth:`~gateway.cloud.store.CloudStore.commit_many`, and only then are
their replies sent, in arrival order. So an ACK still means "stored", a crash before the commit
loses only what was never acknowledged (the gateway resends it), and a duplicate is still
recognised by its seq. Any other message (HELLO, DROP, RESULT) first commits the group before it,
so replies never overtake each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import zmq
import zmq.asyncio

from gateway.cloud.store import CommitItem, SequenceGap

Frames = list[zmq.Frame]

#: What to do once the group is durable, given each item's result (new hw or SequenceGap).
After = Callable[[list[int | SequenceGap]], Awaitable[None]]


@dataclass
class CommitGroup:
    """DATA staged for the next group commit, and the replies that wait for it."""

    items: list[CommitItem] = field(default_factory=list)
    after: list[After] = field(default_factory=list)
    _hw: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def hw(self, key: tuple[str, str, int]) -> int | None:
        """The hw ``key`` will have once this group is stored (None: the group has no DATA of
        it, ask the store or its cache)."""
        return self._hw.get(key)

    def stage(self, item: CommitItem, last_seq: int) -> int:
        """Add one DATA message's records; returns its index in the results."""
        self.items.append(item)
        gateway, stream, epoch = item[0], item[1], item[2]
        self._hw[(gateway, stream, epoch)] = last_seq
        return len(self.items) - 1

    def then(self, fn: After) -> None:
        """Run ``fn`` after the commit (replies, fan-out); in staging order."""
        self.after.append(fn)

    def take(self) -> CommitGroup:
        """Hand over what is staged; this group starts empty again."""
        out = CommitGroup(self.items, self.after, self._hw)
        self.items, self.after, self._hw = [], [], {}
        return out

    def __bool__(self) -> bool:
        return bool(self.after)


async def gather(
    router: zmq.asyncio.Socket,
    first: Frames,
    stopper: asyncio.Future[Any],
    max_messages: int,
    max_delay: float,
) -> tuple[list[Frames], asyncio.Future[Any] | None]:
    """``first`` and the messages waiting behind it (one group commit's worth): up to
    ``max_messages``, waiting at most ``max_delay`` s for more. Returns them and the receive still
    pending, if the wait for more ended without a message (the caller awaits it next)."""
    group = [first]
    deadline = time.monotonic() + max_delay
    while len(group) < max_messages:
        now = cast("asyncio.Future[Frames]", router.recv_multipart(flags=zmq.NOBLOCK, copy=False))
        try:  # a non-blocking receive is resolved at once
            group.append(now.result())
            continue
        except zmq.Again:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        recv = asyncio.ensure_future(router.recv_multipart(copy=False))
        await asyncio.wait({stopper, recv}, timeout=remaining, return_when="FIRST_COMPLETED")
        if not recv.done():
            return group, recv
        group.append(recv.result())
    return group, None
