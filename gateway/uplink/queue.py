"""DurableQueue: the gateway's store-and-forward buffer, one SQLite file.

A record is accepted once :meth:`DurableQueue.append` returned: the transaction that holds it was
committed with ``journal_mode=WAL`` and ``synchronous=FULL``, i.e. the WAL was fsync'd. Records
leave the file only through :meth:`DurableQueue.ack` with a high-water mark the cloud confirmed.

Sequence numbers are assigned at commit, per stream, gap-free, starting at 1 within the stream's
epoch. The epoch is a random 63-bit id drawn when the file (or a stream) is created, so a wiped or
replaced queue never reuses (epoch, seq) pairs the cloud has already deduplicated.

The object is shared by two threads: a writer (``append``/``ack``/``rotate_epoch``, which fsync)
and a reader (``read``, stats). Each has its own connection; in WAL mode a reader never waits for
the writer's fsync. The on-disk schema is drawn in docs/store-and-forward.md.

Deliberate holes (quota deletes, records refused before they got here) are gap rows: seqs
without records that the sender announces upstream as DROP.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.uplink.queue_schema import SCHEMA as _SCHEMA
from gateway.uplink.queue_schema import V1_UPGRADE as _V1_UPGRADE

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: streams.records/bytes, gaps, commands; version 1 is upgraded
COMMANDS_KEPT = 10_000  # downlink command ids remembered for deduplication


class QueueError(RuntimeError):
    """The queue file is unusable (foreign schema version) or an operation contradicts it."""


class QueueCorrupt(QueueError):
    """The file is not a readable queue (not SQLite, failed quick_check, unknown version)."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Snapshot of one stream. ``depth``/``bytes``: records (payload bytes) in the file."""

    epoch: int
    next_seq: int
    acked_hw: int
    depth: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Quota:
    """Per-stream limit of payload bytes in the file; ``drop_oldest`` deletes in segments."""

    max_bytes: int
    policy: str = "drop_oldest"  # or "block" (enforced by the producer side, see client.py)

    @property
    def segment(self) -> int:
        return max(1, self.max_bytes // 16)


@dataclass(frozen=True, slots=True)
class Gap:
    stream: str
    first: int
    last: int
    reason: str


def new_epoch() -> int:
    """A random non-zero 63-bit id (SQLite INTEGER is signed 64-bit)."""
    return secrets.randbits(63) or 1


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class DurableQueue:
    """SQLite-backed, fsync'd, per-stream sequenced record queue.

    Parameters
    ----------
    path
        The SQLite file; created (with a fresh epoch) if it does not exist.
    clock
        Source of record timestamps (seconds since the epoch) when ``append`` gets none.
    quota
        Per-stream limit; with policy ``drop_oldest`` a commit above it deletes the oldest
        records of that stream (one segment at a time) and writes a gap row for them.
    check
        Run ``PRAGMA quick_check`` at open (a corrupt file raises :class:`QueueCorrupt`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        quota: Quota | None = None,
        check: bool = True,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self.quota = quota
        created = not os.path.exists(self.path)
        parent = Path(self.path).resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        try:
            self._w = _connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise QueueCorrupt(f"{self.path}: {exc}") from None
        self._wlock = threading.Lock()
        self._state_lock = threading.Lock()
        try:
            if check and not created:
                result = self._w.execute("PRAGMA quick_check").fetchone()
                if result is None or result[0] != "ok":
                    raise QueueCorrupt(f"{self.path}: quick_check: {result and result[0]}")
            self._w.execute("BEGIN IMMEDIATE")
            has_streams = self._w.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'streams'"
            ).fetchone()
            version = None
            if has_streams:
                row = self._w.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                version = row and row[0]
                if version == 1:
                    for stmt in _V1_UPGRADE:
                        self._w.execute(stmt)
                    version = SCHEMA_VERSION
                elif version != SCHEMA_VERSION:
                    raise QueueCorrupt(
                        f"{self.path}: queue schema version {version!r}, "
                        f"this runtime reads version {SCHEMA_VERSION}"
                    )
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._w.execute(stmt)
            rows = dict(self._w.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                rows = {"schema_version": SCHEMA_VERSION, "epoch": new_epoch(), "created": clock()}
                self._w.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows.items())
            # A command still "running" was cut off by a crash: never run it again.
            self._w.execute("UPDATE commands SET outcome = 'interrupted' WHERE outcome IS NULL")
            self._w.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._abort()
            raise QueueCorrupt(f"{self.path}: {exc}") from None
        except BaseException:
            self._abort()
            raise
        if created:
            # The new file's directory entry must survive a power cut too.
            fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        #: The queue's epoch: new streams start in it.
        self.epoch = int(rows["epoch"])
        self._streams: dict[str, StreamInfo] = {
            s: StreamInfo(e, n, a, c, b)
            for s, e, n, a, c, b in self._w.execute(
                "SELECT stream, epoch, next_seq, acked_hw, records, bytes FROM streams"
            ).fetchall()
        }
        self._r = _connect(self.path)
        self._rlock = threading.Lock()
        self._closed = False
        #: Seqs dropped by this object's quota deletes, per stream (for metrics).
        self.quota_dropped: dict[str, int] = {}

    def _abort(self) -> None:
        try:
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._w.close()

    # --- writer side (fsync) -----------------------------------------------------------------

    def append(
        self, records: list[tuple[str, bytes]], ts: float | None = None
    ) -> dict[str, tuple[int, int]]:
        """Append records in one fsync'd transaction; returns ``{stream: (first_seq, last_seq)}``."""
        return self.apply(records, {}, ts)

    def ack(self, stream: str, hw: int) -> None:
        """Delete every record of ``stream`` with seq <= ``hw`` (the cloud committed them)."""
        self.apply([], {stream: hw})

    def apply(
        self,
        records: list[tuple[str, bytes]],
        acks: dict[str, int],
        ts: float | Sequence[float] | None = None,
        refused: Sequence[tuple[str, int, str]] = (),
    ) -> dict[str, tuple[int, int]]:
        """Append ``records``, record ``refused`` as gaps and apply ``acks``, in ONE transaction.

        ``ts`` is one timestamp for all records, one per record, or None for the clock's now.
        ``refused`` lists (stream, count, reason): records turned away before they reached the
        queue; they get sequence numbers without rows (a gap row), so the cloud learns of them.
        Then the quota (``drop_oldest``) trims each stream it touched.

        Acks below the stream's current acked hw are ignored; an ack above its last assigned
        sequence raises :class:`QueueError` (the cloud claims records this file never held).
        """
        if ts is None or isinstance(ts, float | int):
            stamps: Sequence[float] = [self._clock() if ts is None else float(ts)] * len(records)
        else:
            stamps = ts
            if len(stamps) != len(records):
                raise ValueError(f"{len(records)} records but {len(stamps)} timestamps")
        now = self._clock()
        with self._state_lock:
            state = dict(self._streams)
        ranges: dict[str, tuple[int, int]] = {}
        rows: list[tuple[str, int, float, bytes]] = []
        next_of: dict[str, int] = {}
        first_of: dict[str, int] = {}
        added: dict[str, list[int]] = {}  # stream -> [records, bytes] inserted
        for (stream, payload), stamp in zip(records, stamps, strict=True):
            seq = next_of.get(stream)
            if seq is None:
                info = state.get(stream)
                seq = first_of[stream] = 1 if info is None else info.next_seq
                added[stream] = [0, 0]
            rows.append((stream, seq, stamp, payload))
            next_of[stream] = seq + 1
            added[stream][0] += 1
            added[stream][1] += len(payload)
        for stream, nxt in next_of.items():
            info = state.get(stream) or StreamInfo(self.epoch, 1, 0)
            n, b = added[stream]
            state[stream] = replace(info, next_seq=nxt, depth=info.depth + n, bytes=info.bytes + b)
            ranges[stream] = (first_of[stream], nxt - 1)
        gaps: list[tuple[str, int, int, str, float]] = []
        for stream, count, reason in refused:
            if count <= 0:
                continue
            info = state.get(stream) or StreamInfo(self.epoch, 1, 0)
            gaps.append((stream, info.next_seq, info.next_seq + count - 1, reason, now))
            state[stream] = replace(info, next_seq=info.next_seq + count)
        ack_to: dict[str, int] = {}
        for stream, hw in acks.items():
            info = state.get(stream)
            if info is None or hw <= info.acked_hw:
                continue
            if hw > info.next_seq - 1:
                raise QueueError(
                    f"ack of {stream!r} up to {hw} but only {info.next_seq - 1} records were assigned"
                )
            ack_to[stream] = hw
        if not rows and not ack_to and not gaps:
            return ranges
        touched = set(ranges) | set(ack_to) | {g[0] for g in gaps}
        with self._wlock:
            self._check_open()
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    w.executemany(
                        "INSERT INTO records(stream, seq, ts, payload) VALUES (?, ?, ?, ?)", rows
                    )
                if gaps:
                    w.executemany(
                        "INSERT INTO gaps(stream, first, last, reason, ts) VALUES (?, ?, ?, ?, ?)",
                        gaps,
                    )
                for stream, hw in ack_to.items():
                    n, b = w.execute(
                        "SELECT count(*), coalesce(sum(length(payload)), 0) FROM records "
                        "WHERE stream = ? AND seq <= ?",
                        (stream, hw),
                    ).fetchone()
                    if n:
                        w.execute("DELETE FROM records WHERE stream = ? AND seq <= ?", (stream, hw))
                    w.execute("DELETE FROM gaps WHERE stream = ? AND last <= ?", (stream, hw))
                    info = state[stream]
                    state[stream] = replace(
                        info, acked_hw=hw, depth=info.depth - n, bytes=info.bytes - b
                    )
                trimmed: dict[str, int] = {}
                if self.quota is not None and self.quota.policy == "drop_oldest":
                    for stream in ranges:
                        if state[stream].bytes > self.quota.max_bytes:
                            state[stream], trimmed[stream] = self._trim(
                                w, stream, state[stream], now
                            )
                w.executemany(
                    "INSERT INTO streams(stream, epoch, next_seq, acked_hw, records, bytes) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(stream) DO UPDATE SET "
                    "next_seq = excluded.next_seq, acked_hw = excluded.acked_hw, "
                    "records = excluded.records, bytes = excluded.bytes",
                    [
                        (s, state[s].epoch, state[s].next_seq, state[s].acked_hw, state[s].depth,
                         state[s].bytes)
                        for s in touched
                    ],
                )  # fmt: skip
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            with self._state_lock:
                for s in touched:
                    self._streams[s] = state[s]
            for s, n in trimmed.items():
                self.quota_dropped[s] = self.quota_dropped.get(s, 0) + n
        return ranges

    def _trim(
        self, w: sqlite3.Connection, stream: str, info: StreamInfo, now: float
    ) -> tuple[StreamInfo, int]:
        """Delete the oldest records of ``stream`` until a segment below the quota; gap row."""
        assert self.quota is not None
        target = info.bytes - (self.quota.max_bytes - self.quota.segment)
        freed = count = 0
        first = cut = None
        for seq, size in w.execute(
            "SELECT seq, length(payload) FROM records WHERE stream = ? ORDER BY seq", (stream,)
        ):
            if first is None:
                first = seq
            freed += size
            count += 1
            cut = seq
            if freed >= target:
                break
        if first is None or cut is None:
            return info, 0
        w.execute("DELETE FROM records WHERE stream = ? AND seq <= ?", (stream, cut))
        w.execute(
            "INSERT INTO gaps(stream, first, last, reason, ts) VALUES (?, ?, ?, 'quota', ?)",
            (stream, first, cut, now),
        )
        return replace(info, depth=info.depth - count, bytes=info.bytes - freed), cut - first + 1

    def rotate_epoch(self, stream: str) -> int:
        """Give ``stream`` a fresh epoch and renumber its queued records from 1.

        Used when the cloud's history of the stream contradicts this file (e.g. the file was
        restored from an older copy): the unacked records then travel as a new, unambiguous
        history instead of being mistaken for duplicates. Gap rows of the old epoch are dropped
        (their seqs had no records); the records close ranks. Returns the new epoch.
        """
        with self._wlock:
            self._check_open()
            with self._state_lock:
                info = self._streams.get(stream)
            if info is None:
                raise QueueError(f"no stream {stream!r}")
            epoch = new_epoch()
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                # Two steps so that no intermediate row collides with the (stream, seq) key.
                w.execute("CREATE TEMP TABLE IF NOT EXISTS renumber(old INTEGER PRIMARY KEY, new)")
                w.execute("DELETE FROM renumber")
                w.execute(
                    "INSERT INTO renumber SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) "
                    "FROM records WHERE stream = ?",
                    (stream,),
                )
                w.execute(
                    "UPDATE records SET seq = -(SELECT new FROM renumber WHERE old = records.seq) "
                    "WHERE stream = ?",
                    (stream,),
                )
                w.execute("UPDATE records SET seq = -seq WHERE stream = ?", (stream,))
                w.execute("DELETE FROM gaps WHERE stream = ?", (stream,))
                new = StreamInfo(epoch, info.depth + 1, 0, info.depth, info.bytes)
                w.execute(
                    "UPDATE streams SET epoch = ?, next_seq = ?, acked_hw = 0 WHERE stream = ?",
                    (epoch, new.next_seq, stream),
                )
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            with self._state_lock:
                self._streams[stream] = new
        return epoch

    # --- downlink command log ------------------------------------------------------------------

    def command_begin(self, command_id: str, kind: str) -> tuple[str, str] | None:
        """Record ``command_id`` as running (fsync'd); its stored (outcome, detail) if seen before."""
        with self._wlock:
            self._check_open()
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                row = w.execute(
                    "SELECT outcome, detail FROM commands WHERE id = ?", (command_id,)
                ).fetchone()
                if row is None:
                    w.execute(
                        "INSERT INTO commands(id, kind, outcome, detail, ts) "
                        "VALUES (?, ?, NULL, NULL, ?)",
                        (command_id, kind, self._clock()),
                    )
                    w.execute(
                        "DELETE FROM commands WHERE id IN (SELECT id FROM commands "
                        "ORDER BY ts DESC LIMIT -1 OFFSET ?)",
                        (COMMANDS_KEPT,),
                    )
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
        if row is None:
            return None
        return (row[0] or "running", row[1] or "")

    def command_end(self, command_id: str, outcome: str, detail: str) -> None:
        with self._wlock:
            self._check_open()
            self._w.execute(
                "UPDATE commands SET outcome = ?, detail = ? WHERE id = ?",
                (outcome, detail, command_id),
            )

    # --- reader side -------------------------------------------------------------------------

    def read(self, stream: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` queued records of ``stream`` with seq > ``after_seq``, in order."""
        with self._rlock:
            self._check_open()
            rows: list[tuple[int, bytes]] = self._r.execute(
                "SELECT seq, payload FROM records WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                (stream, after_seq, limit),
            ).fetchall()
        return rows  # sqlite3 already yields (int, bytes) for these columns

    def gap_at(self, stream: str, seq: int) -> Gap | None:
        """The gap row covering ``seq`` of ``stream``, if any."""
        with self._rlock:
            self._check_open()
            row = self._r.execute(
                "SELECT first, last, reason FROM gaps WHERE stream = ? AND first <= ? "
                "ORDER BY first DESC LIMIT 1",
                (stream, seq),
            ).fetchone()
        if row is None or row[1] < seq:
            return None
        return Gap(stream, int(row[0]), int(row[1]), str(row[2]))

    def oldest_ts(self, stream: str) -> float | None:
        """Timestamp of the oldest queued record of ``stream``, None when it is empty."""
        with self._rlock:
            self._check_open()
            row = self._r.execute(
                "SELECT ts FROM records WHERE stream = ? ORDER BY seq LIMIT 1", (stream,)
            ).fetchone()
        return None if row is None else float(row[0])

    def streams(self) -> list[str]:
        with self._state_lock:
            return sorted(self._streams)

    def info(self, stream: str) -> StreamInfo:
        """Epoch, next sequence and acked hw of ``stream`` (a never-used stream is all fresh)."""
        with self._state_lock:
            return self._streams.get(stream) or StreamInfo(self.epoch, 1, 0)

    def infos(self) -> dict[str, StreamInfo]:
        with self._state_lock:
            return dict(self._streams)

    def depth(self, stream: str) -> int:
        return self.info(stream).depth

    def epoch_of(self, stream: str) -> int:
        return self.info(stream).epoch

    def close(self) -> None:
        """Close both connections (waits for a running commit to finish). Idempotent."""
        with self._wlock, self._rlock:
            if self._closed:
                return
            self._closed = True
            self._r.close()
            self._w.close()

    def _check_open(self) -> None:
        if self._closed:
            raise QueueError(f"{self.path}: queue is closed")

    def __enter__(self) -> DurableQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_or_quarantine(
    path: str | os.PathLike[str],
    clock: Callable[[], float] = time.time,
    quota: Quota | None = None,
) -> tuple[DurableQueue, str | None]:
    """Open the queue; a corrupt file is moved aside (never deleted) and a fresh one started.

    Returns the queue and the quarantine path (None when the file was fine). The fresh file has
    a new epoch, so the cloud never deduplicates its records against the old history.
    """
    try:
        return DurableQueue(path, clock, quota), None
    except QueueCorrupt as exc:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock()))
        dest = f"{path}.corrupt-{stamp}"
        n = 1
        while os.path.exists(dest):
            n += 1
            dest = f"{path}.corrupt-{stamp}-{n}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.replace(f"{path}{suffix}", f"{dest}{suffix}")
        _log.critical("uplink queue %s is unusable (%s); quarantined as %s", path, exc, dest)
        return DurableQueue(path, clock, quota), dest
