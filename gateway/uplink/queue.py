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
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value
);
CREATE TABLE IF NOT EXISTS streams (
    stream   TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    acked_hw INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    stream  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    ts      REAL    NOT NULL,
    payload BLOB    NOT NULL,
    PRIMARY KEY (stream, seq)
);
"""


class QueueError(RuntimeError):
    """The queue file is unusable (foreign schema version) or an operation contradicts it."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Snapshot of one stream. ``depth`` counts records in the file, i.e. not yet acked."""

    epoch: int
    next_seq: int
    acked_hw: int

    @property
    def depth(self) -> int:
        return self.next_seq - 1 - self.acked_hw


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
    """

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time
    ) -> None:
        self.path = str(path)
        self._clock = clock
        created = not os.path.exists(self.path)
        parent = Path(self.path).resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        self._w = _connect(self.path)
        self._wlock = threading.Lock()
        self._state_lock = threading.Lock()
        try:
            self._w.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._w.execute(stmt)
            rows = dict(self._w.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                rows = {"schema_version": SCHEMA_VERSION, "epoch": new_epoch(), "created": clock()}
                self._w.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows.items())
            self._w.execute("COMMIT")
        except BaseException:
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
            self._w.close()
            raise
        if rows.get("schema_version") != SCHEMA_VERSION:
            self._w.close()
            raise QueueError(
                f"{self.path}: queue schema version {rows.get('schema_version')!r}, "
                f"this runtime reads version {SCHEMA_VERSION}"
            )
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
            s: StreamInfo(e, n, a)
            for s, e, n, a in self._w.execute(
                "SELECT stream, epoch, next_seq, acked_hw FROM streams"
            ).fetchall()
        }
        self._r = _connect(self.path)
        self._rlock = threading.Lock()
        self._closed = False

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
    ) -> dict[str, tuple[int, int]]:
        """Append ``records`` and apply ``acks`` (stream -> hw) in ONE fsync'd transaction.

        ``ts`` is one timestamp for all records, one per record, or None for the clock's now.

        Acks below the stream's current acked hw are ignored; an ack above its last assigned
        sequence raises :class:`QueueError` (the cloud claims records this file never held).
        """
        if ts is None or isinstance(ts, float | int):
            stamps: Sequence[float] = [self._clock() if ts is None else float(ts)] * len(records)
        else:
            stamps = ts
            if len(stamps) != len(records):
                raise ValueError(f"{len(records)} records but {len(stamps)} timestamps")
        with self._state_lock:
            state = dict(self._streams)
        ranges: dict[str, tuple[int, int]] = {}
        rows: list[tuple[str, int, float, bytes]] = []
        next_of: dict[str, int] = {}
        first_of: dict[str, int] = {}
        for (stream, payload), stamp in zip(records, stamps, strict=True):
            seq = next_of.get(stream)
            if seq is None:
                info = state.get(stream)
                seq = first_of[stream] = 1 if info is None else info.next_seq
            rows.append((stream, seq, stamp, payload))
            next_of[stream] = seq + 1
        for stream, nxt in next_of.items():
            info = state.get(stream)
            if info is None:
                state[stream] = StreamInfo(self.epoch, nxt, 0)
            else:
                state[stream] = StreamInfo(info.epoch, nxt, info.acked_hw)
            ranges[stream] = (first_of[stream], nxt - 1)
        deletes: list[tuple[str, int]] = []
        for stream, hw in acks.items():
            info = state.get(stream)
            if info is None or hw <= info.acked_hw:
                continue
            if hw > info.next_seq - 1:
                raise QueueError(
                    f"ack of {stream!r} up to {hw} but only {info.next_seq - 1} records were assigned"
                )
            state[stream] = StreamInfo(info.epoch, info.next_seq, hw)
            deletes.append((stream, hw))
        if not rows and not deletes:
            return ranges
        touched = set(ranges) | {s for s, _ in deletes}
        with self._wlock:
            self._check_open()
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    w.executemany(
                        "INSERT INTO records(stream, seq, ts, payload) VALUES (?, ?, ?, ?)", rows
                    )
                if deletes:
                    w.executemany("DELETE FROM records WHERE stream = ? AND seq <= ?", deletes)
                w.executemany(
                    "INSERT INTO streams(stream, epoch, next_seq, acked_hw) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(stream) DO UPDATE SET next_seq = excluded.next_seq, "
                    "acked_hw = excluded.acked_hw",
                    [(s, state[s].epoch, state[s].next_seq, state[s].acked_hw) for s in touched],
                )
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            with self._state_lock:
                for s in touched:
                    self._streams[s] = state[s]
        return ranges

    def rotate_epoch(self, stream: str) -> int:
        """Give ``stream`` a fresh epoch and renumber its queued records from 1.

        Used when the cloud's history of the stream contradicts this file (e.g. the file was
        restored from an older copy): the unacked records then travel as a new, unambiguous
        history instead of being mistaken for duplicates. Returns the new epoch.
        """
        with self._wlock:
            self._check_open()
            with self._state_lock:
                info = self._streams.get(stream)
            if info is None:
                raise QueueError(f"no stream {stream!r}")
            epoch = new_epoch()
            hw = info.acked_hw
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                # Two steps so that no intermediate row collides with the (stream, seq) key.
                w.execute(
                    "UPDATE records SET seq = -(seq - ?) WHERE stream = ? AND seq > ?",
                    (hw, stream, hw),
                )
                w.execute("DELETE FROM records WHERE stream = ? AND seq > 0", (stream,))
                w.execute("UPDATE records SET seq = -seq WHERE stream = ?", (stream,))
                new = StreamInfo(epoch, info.next_seq - hw, 0)
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
