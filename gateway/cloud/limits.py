"""What a peer may make the receiver hold: the limits, and the bounded per-gateway state.

Everything a gateway controls (streams, names, epochs, commands, how many gateways in plaintext
mode) is bounded here, so hostile input costs a bounded amount of memory and work per message.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")

RATE_WINDOW = 10.0  # seconds over which records/s is computed


@dataclass(frozen=True)
class Limits:
    """Receiver limits (``CloudReceiver(limits=...)``); every one is counted when hit."""

    #: Streams in one HELLO, and streams one gateway may use (HELLO plus new streams in DATA).
    max_streams: int = 64
    #: Gateways kept in memory (status, counters); the least recently seen disconnected ones go.
    max_gateways: int = 10_000
    #: Cached (gateway, stream, epoch) -> hw entries (a cache: the store is the truth).
    max_hw_cache: int = 65_536
    #: Commands waiting for a RESULT, in total and per gateway.
    max_commands: int = 10_000
    max_commands_per_gateway: int = 100
    #: Longest RESULT detail kept; longer ones are cut.
    max_result_detail: int = 4096
    #: Duplicate-identity detection: signals within this many seconds, and takeovers needed.
    duplicate_window: float = 30.0
    duplicate_takeovers: int = 3

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_gateways", "max_hw_cache", "max_commands"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1")


class LimitExceeded(Exception):
    """A peer asked for more than :class:`Limits` allow; answered ``ERROR{limit}``."""


class BoundedDict(collections.OrderedDict[_K, _V], Generic[_K, _V]):
    """A dict that forgets its least recently used entries beyond ``maxsize``.

    ``evictable(key, value)`` may veto evicting an entry (e.g. a connected gateway); then the
    dict may stay above ``maxsize`` and :meth:`full` tells the caller to refuse new entries.
    """

    def __init__(self, maxsize: int, evictable: Callable[[_K, _V], bool] | None = None) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._evictable = evictable

    def touch(self, key: _K) -> None:
        self.move_to_end(key)

    def put(self, key: _K, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        self._shrink()

    def _shrink(self) -> None:
        if len(self) <= self.maxsize:
            return
        for key in list(self.keys()):
            if len(self) <= self.maxsize:
                return
            if self._evictable is None or self._evictable(key, self[key]):
                del self[key]

    def full(self) -> bool:
        self._shrink()
        return len(self) >= self.maxsize


@dataclass
class GatewayState:
    """Per-gateway counters and stream positions; bounded by :class:`Limits`."""

    last_seen: float = 0.0
    last_commit: float = 0.0  # when its last new record was committed
    #: stream -> last seq the gateway said it had queued at its latest HELLO (wire.Hello.last)
    announced_last: dict[str, int] | None = None  # None: the gateway announces nothing
    #: stream -> records it owed then (announced last - hw)
    announced: dict[str, int] | None = None
    records: int = 0
    duplicates: int = 0
    nacks: int = 0
    dropped: int = 0  # seqs announced as deliberate gaps
    sessions: int = 0
    meta_checked: bool = False  # the store has its point model (or it was asked to resend it)
    hw: dict[str, tuple[int, int]] = field(default_factory=dict)  # stream -> (epoch, hw)
    # (whole second, records): one entry per second, so a window is a few dozen entries.
    recent: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=int(RATE_WINDOW) + 2)
    )

    def backlog(self) -> int | None:
        """Records announced at HELLO and not committed yet (None: nothing announced). A lower
        bound: what the gateway queued since its HELLO is not known here."""
        if self.announced_last is None:
            return None
        return sum(
            max(0, last - self.hw[s][1]) for s, last in self.announced_last.items() if s in self.hw
        )

    def count_recent(self, now: float, n: int) -> None:
        second = float(int(now))
        if self.recent and self.recent[-1][0] == second:
            self.recent[-1] = (second, self.recent[-1][1] + n)
        else:
            self.recent.append((second, n))
        self.prune(now)

    def prune(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - RATE_WINDOW:
            self.recent.popleft()

    def rate(self, now: float) -> float:
        self.prune(now)
        return sum(n for _, n in self.recent) / RATE_WINDOW
