"""GroupCommitWriter: the one thread that fsyncs the durable queue.

The event loop hands it records (``submit``), cloud acks (``ack``) and epoch rotations; it turns
whatever is pending into one transaction, at the latest ``max_delay`` after the oldest pending
item arrived or as soon as ``max_records`` are waiting. Results go back to the loop with
``call_soon_threadsafe``, so the loop never blocks on the disk.

Memory is bounded by configuration, never by load: at most ``pending_cap`` records and
``max_bytes`` bytes (payload plus a fixed per-record overhead) wait in memory, counted until their
commit succeeds. Producers ask :attr:`GroupCommitWriter.full` first and drop at the source while
it is set (the runtime's back-pressure); ``submit`` itself takes up to an eighth more (room for
alarms and events behind a telemetry flood) and beyond that drops the NEW record and counts it
(``dropped``, reason ``overflow``): the records already accepted keep their place, and a producer
that outruns the disk loses its freshest data rather than blocking the loop. Refused records (overflow here, quota ``block`` in the client) are not silent:
the next commit gives them sequence numbers in a gap row, announced upstream as DROP.

State that must agree with records (the alarm state and its alarm events) is staged with
:meth:`GroupCommitWriter.stage_state` and released at the end of the loop turn: the records
submitted between the first staging and the release, and the state, always commit in ONE
transaction, so a crash keeps both or neither. A failed commit (disk full, I/O error, read-only
filesystem) keeps everything in memory and retries; ``io_error`` says why until a commit works.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.uplink.queue import DurableQueue

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Batch:
    records: list[tuple[str, bytes]]
    stamps: list[float]
    acks: dict[str, int]
    rotations: dict[str, int]  # stream -> records up to this seq are deleted first
    refused: dict[tuple[str, str], int]
    states: list[tuple[int, int, dict[str, bytes]]]  # (first, end) submission range, values
    mark: bool = False  # nothing to commit: write the queue's high-water marker


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one group commit did, handed to the loop."""

    records: int  # submitted records made durable by this commit (in submission order)
    ranges: dict[str, tuple[int, int]]
    rotated: dict[str, int]  # stream -> new epoch
    elapsed_ms: float


class GroupCommitWriter:
    """Batches records/acks into fsync'd transactions on a dedicated thread."""

    RETRY_DELAY = 1.0  # seconds before retrying a failed commit (disk full, I/O error)
    RECORD_OVERHEAD = 128  # bytes a pending record costs besides its payload (tuple, stamp, list)

    def __init__(
        self,
        queue: DurableQueue,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[CommitResult], None],
        max_records: int,
        max_delay: float,
        pending_cap: int,
        clock: Callable[[], float] = time.time,
        max_bytes: int | None = None,
    ) -> None:
        self._queue = queue
        self._loop = loop
        self._on_commit = on_commit
        self._max_records = max_records
        self._max_delay = max_delay
        self._cap = pending_cap
        self.max_bytes = max_bytes if max_bytes is not None else 1 << 62
        self._hard_bytes = self.max_bytes + self.max_bytes // 8
        self.buffered = 0  # bytes held for records not yet committed (see RECORD_OVERHEAD)
        self._clock = clock
        self._cond = threading.Condition()
        self._records: list[tuple[str, bytes]] = []
        self._stamps: list[float] = []
        self._acks: dict[str, int] = {}
        self._refused: dict[tuple[str, str], int] = {}  # (stream, reason) -> records
        self._pending_bytes: dict[str, int] = {}
        self._rotations: dict[str, int] = {}
        self._hold: int | None = None  # staged state waits for release; records from here wait
        self._held: dict[str, bytes] = {}
        self._states: list[tuple[int, int, dict[str, bytes]]] = []
        self._handed = 0  # submissions handed to a transaction (put back on failure)
        self._since: float | None = None  # monotonic time the oldest pending item arrived
        self._urgent_upto = 0  # commit without delay until this many submissions are durable
        self._taken = 0  # submissions handed to a transaction so far
        self._stopping = False
        self.submitted = 0
        self.dropped = 0
        self.dropped_by: dict[str, int] = {}  # reason -> records refused
        self.errors = 0
        #: Why the last commit failed (None once a commit succeeded): disk full, read-only, I/O.
        self.io_error: str | None = None
        self._thread = threading.Thread(target=self._main, name="uplink-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, stream: str, payload: bytes) -> bool:
        """Queue one record for the next commit; False if it was dropped (memory cap)."""
        with self._cond:
            size = len(payload) + self.RECORD_OVERHEAD
            if (
                len(self._records) >= self._cap
                or self.buffered + size > self._hard_bytes
                or self._stopping
            ):
                self._refuse(stream, "overflow")
                return False
            self._records.append((stream, payload))
            self._pending_bytes[stream] = self._pending_bytes.get(stream, 0) + len(payload)
            self.buffered += size
            self._stamps.append(self._clock())
            self.submitted += 1
            if self._since is None:
                self._since = time.monotonic()
                self._cond.notify()
            elif len(self._records) == self._max_records:  # once per full batch
                self._cond.notify()
        return True

    def submit_many(self, stream: str, payloads: list[bytes]) -> int:
        """Queue several records of one stream under one lock; returns how many were taken."""
        with self._cond:
            room = 0 if self._stopping else max(0, self._cap - len(self._records))
            take = payloads[:room]
            size = 0
            for i, p in enumerate(take):
                if self.buffered + size + len(p) + self.RECORD_OVERHEAD > self._hard_bytes:
                    take = take[:i]
                    break
                size += len(p) + self.RECORD_OVERHEAD
            if len(payloads) > len(take):
                self._refuse(stream, "overflow", len(payloads) - len(take))
            if not take:
                return 0
            before = len(self._records)
            self._records.extend((stream, p) for p in take)
            self._stamps.extend([self._clock()] * len(take))
            self._pending_bytes[stream] = self._pending_bytes.get(stream, 0) + sum(map(len, take))
            self.buffered += size
            self.submitted += len(take)
            if self._since is None:
                self._since = time.monotonic()
                self._cond.notify()
            elif before < self._max_records <= len(self._records):
                self._cond.notify()
            return len(take)

    def refuse(self, stream: str, reason: str, n: int = 1) -> None:
        """Count ``n`` records the producer side turned away (quota ``block``, back-pressure);
        they become one gap."""
        with self._cond:
            self._refuse(stream, reason, n)

    @property
    def full(self) -> bool:
        """True while the bytes waiting for a commit are at ``max_bytes``: producers drop at
        the source (back-pressure). One comparison, no lock: a stale answer only moves the
        moment of the first drop by one record."""
        return self.buffered >= self.max_bytes

    def _refuse(self, stream: str, reason: str, n: int = 1) -> None:
        self.dropped += n
        self.dropped_by[reason] = self.dropped_by.get(reason, 0) + n
        if self._stopping:
            return
        key = (stream, reason)
        self._refused[key] = self._refused.get(key, 0) + n
        if self._since is None:
            self._since = time.monotonic()
            self._cond.notify()

    def pending_bytes(self, stream: str) -> int:
        with self._cond:
            return self._pending_bytes.get(stream, 0)

    def ack(self, stream: str, hw: int) -> None:
        with self._cond:
            if hw > self._acks.get(stream, 0):
                self._acks[stream] = hw
                if self._since is None:
                    self._since = time.monotonic()
                    self._cond.notify()

    def rotate(self, stream: str, acked: int = 0) -> None:
        """Give ``stream`` a new epoch; records up to ``acked`` (the cloud has them) go first."""
        with self._cond:
            self._rotations[stream] = max(acked, self._rotations.get(stream, 0))
            self._acks.pop(stream, None)  # acks of the old epoch no longer apply
            self._cond.notify()

    def stage_state(self, key: str, value: bytes) -> None:
        """Hold ``value`` for ``key`` until :meth:`release_states`; records submitted from now
        until then commit in the same transaction as the state."""
        with self._cond:
            if self._hold is None:
                self._hold = self.submitted
            self._held[key] = value

    def release_states(self) -> None:
        """The staged state and the records submitted since the first staging are complete."""
        with self._cond:
            if self._hold is None:
                return
            self._states.append((self._hold, self.submitted, self._held))
            self._hold, self._held = None, {}
            if self._since is None:
                self._since = time.monotonic()
            self._cond.notify()

    @property
    def healthy(self) -> bool:
        """False while commits fail (see ``io_error``)."""
        return self.io_error is None

    def urge(self) -> int:
        """Commit what is pending now, without waiting out the delay; returns the target count."""
        with self._cond:
            self._urgent_upto = self.submitted
            self._cond.notify()
            return self.submitted

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._records)

    def stop(self, timeout: float) -> bool:
        """Commit everything pending, end the thread; False if it did not finish in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self) -> _Batch | None:
        """Wait for a batch to be due and take it; None when stopping and nothing is left."""
        with self._cond:
            while True:
                if self._stopping and self._hold is not None:
                    self._release_locked()
                n = self._batch_size()
                has_work = bool(
                    n or self._acks or self._rotations or self._refused or self._ready_states(n)
                )
                if not has_work:
                    if self._stopping and not self._records:
                        return None
                    due = self._queue.marker_due_in()
                    if due is not None and due <= 0:
                        return _Batch([], [], {}, {}, {}, [], mark=True)
                    self._cond.wait(due)
                    continue
                due = (
                    self._stopping
                    or bool(self._rotations)
                    or len(self._records) >= self._max_records
                    or self._taken < self._urgent_upto
                )
                if not due and self._since is not None:
                    remaining = self._since + self._max_delay - time.monotonic()
                    if remaining > 0:
                        self._cond.wait(remaining)
                        continue
                states = self._ready_states(n)
                del self._states[: len(states)]
                records, stamps = self._records[:n], self._stamps[:n]
                del self._records[:n], self._stamps[:n]
                self._handed += n
                acks, self._acks = self._acks, {}
                rotations, self._rotations = self._rotations, {}
                refused, self._refused = self._refused, {}
                self._since = time.monotonic() if (self._records or self._acks) else None
                return _Batch(records, stamps, acks, rotations, refused, states)

    def _batch_size(self) -> int:
        """Records for the next batch: up to max_records, never beyond a staged state still
        held, never splitting a released state's group (which may make it longer)."""
        n = min(self._max_records, len(self._records))
        if self._hold is not None:
            n = min(n, max(0, self._hold - self._handed))
        end = self._handed + n
        for first, last, _ in self._states:
            if first < end < last:
                end = last
        return min(end - self._handed, len(self._records))

    def _ready_states(self, n: int) -> list[tuple[int, int, dict[str, bytes]]]:
        end = self._handed + n
        ready = []
        for group in self._states:
            if group[1] > end:
                break
            ready.append(group)
        return ready

    def _release_locked(self) -> None:
        assert self._hold is not None
        self._states.append((self._hold, self.submitted, self._held))
        self._hold, self._held = None, {}

    def _put_back(self, b: _Batch) -> None:
        with self._cond:
            self._records[:0] = b.records
            self._stamps[:0] = b.stamps
            self._handed -= len(b.records)
            self._states[:0] = b.states
            for s, hw in b.acks.items():
                self._acks[s] = max(hw, self._acks.get(s, 0))
            for key, n in b.refused.items():
                self._refused[key] = self._refused.get(key, 0) + n
            for s, acked in b.rotations.items():
                self._rotations[s] = max(acked, self._rotations.get(s, 0))
            if self._since is None:
                self._since = time.monotonic()

    def _main(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch.mark:
                self._queue.write_marker()
                continue
            records = batch.records
            start = time.perf_counter()
            rotated: dict[str, int] = {}
            try:
                for stream, acked in sorted(batch.rotations.items()):
                    rotated[stream] = self._queue.rotate_epoch(stream, acked)
                    batch.acks.pop(stream, None)
                    del batch.rotations[stream]
                refused = [(s, n, reason) for (s, reason), n in sorted(batch.refused.items())]
                states: dict[str, bytes] = {}
                for _, _, values in batch.states:
                    states.update(values)
                ranges = self._queue.apply(records, batch.acks, batch.stamps, refused, states)
            except Exception as exc:
                self.errors += 1
                self.io_error = f"{type(exc).__name__}: {exc}"
                if self.errors == 1 or self.errors % 60 == 0:
                    _log.error(
                        "uplink queue commit failed (%s; %d failures so far); retrying every %.1fs",
                        exc, self.errors, self.RETRY_DELAY,
                    )  # fmt: skip
                self._put_back(batch)
                if rotated:
                    self._deliver(CommitResult(0, {}, rotated, 0.0))
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(self.RETRY_DELAY)
                continue
            self.io_error = None
            with self._cond:
                self._taken += len(records)
                # Counted until committed, so a quota check never misses bytes in transit.
                for stream, payload in records:
                    self._pending_bytes[stream] -= len(payload)
                    self.buffered -= len(payload) + self.RECORD_OVERHEAD
            elapsed = (time.perf_counter() - start) * 1000.0
            self._deliver(CommitResult(len(records), ranges, rotated, elapsed))
            self._queue.write_marker()  # if due: after the delivery, never delaying a flush

    def _deliver(self, result: CommitResult) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_commit, result)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
