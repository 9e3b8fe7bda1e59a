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

Every record carries a CRC-32 fixed when it is accepted (:func:`record_crc`), checked when it is
read for sending (:meth:`DurableQueue.read_checked`) and again by the cloud. Open-time checks
(corruption vs. unreadable, lost commits) live in gateway.uplink.queue_integrity.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from gateway.uplink.queue_integrity import (
    Loss,
    QueueCorrupt,
    QueueError,
    QueueUnavailable,
    check_access,
    connect,
    describe,
    new_epoch,
    open_checked,
    open_or_quarantine,
    peek_state,
)
from gateway.uplink.queue_schema import SCHEMA_VERSION, Gap, Quota, StreamInfo, record_crc

__all__ = [
    "SCHEMA_VERSION", "DurableQueue", "Gap", "Loss", "Quota", "QueueCorrupt", "QueueError",
    "QueueUnavailable", "StreamInfo", "describe", "new_epoch", "open_or_quarantine", "peek_state",
    "record_crc",
]  # fmt: skip

_log = logging.getLogger(__name__)

COMMANDS_KEPT = 10_000  # downlink command ids remembered for deduplication


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
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueueUnavailable(
                f"uplink queue directory {parent}: cannot create or reach it: {exc.strerror}; "
                "make it (and the directories above it) accessible and writable for the "
                "gateway's user, or point uplink.queue elsewhere"
            ) from None
        check_access(self.path, str(parent))
        self._w, rows, self._marker, losses = open_checked(self.path, clock, check, created)
        #: Accepted records this file no longer holds, found at open (announced by the client).
        self.losses: list[Loss] = losses
        self._wlock = threading.Lock()
        self._state_lock = threading.Lock()
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
        #: The streams as opened: seqs up to ``next_seq - 1`` are this file's own history; what
        #: the cloud holds beyond that (same epoch) was lost here (see client.py).
        self.opened: dict[str, StreamInfo] = dict(self._streams)
        self._marker.note({s: (i.epoch, i.next_seq) for s, i in self._streams.items()})
        self._r = connect(self.path)
        self._rlock = threading.Lock()
        self._closed = False
        #: Seqs dropped by this object's quota deletes, per stream (for metrics).
        self.quota_dropped: dict[str, int] = {}

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
        states: dict[str, bytes] | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Append ``records``, record ``refused`` as gaps and apply ``acks``, in ONE transaction.

        ``states`` (key -> value) are written to the ``state`` table in the same transaction
        (the alarm state commits with its event: a crash keeps both or neither).

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
        rows: list[tuple[str, int, float, bytes, int]] = []
        next_of: dict[str, int] = {}
        first_of: dict[str, int] = {}
        added: dict[str, list[int]] = {}  # stream -> [records, bytes] inserted
        for (stream, payload), stamp in zip(records, stamps, strict=True):
            seq = next_of.get(stream)
            if seq is None:
                info = state.get(stream)
                seq = first_of[stream] = 1 if info is None else info.next_seq
                added[stream] = [0, 0]
            rows.append((stream, seq, stamp, payload, record_crc(payload)))
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
        if not rows and not ack_to and not gaps and not states:
            return ranges
        touched = set(ranges) | set(ack_to) | {g[0] for g in gaps}
        with self._wlock:
            self._check_open()
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    w.executemany(
                        "INSERT INTO records(stream, seq, ts, payload, crc) VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                if states:
                    w.executemany(
                        "INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", states.items()
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
                self._note_marker()
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

    def rotate_epoch(self, stream: str, acked: int = 0) -> int:
        """Give ``stream`` a fresh epoch and renumber its queued records from 1.

        Used when the cloud's history of the stream contradicts this file (e.g. the file was
        restored from an older copy or lost its newest commits): the unacked records then travel
        as a new, unambiguous history instead of being mistaken for duplicates. Records with seq
        <= ``acked`` are deleted first (the cloud holds them in the old epoch). Gap rows of the
        old epoch are dropped (their seqs had no records); the records close ranks. Returns the
        new epoch.
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
                if acked > info.acked_hw:
                    n, b = w.execute(
                        "SELECT count(*), coalesce(sum(length(payload)), 0) FROM records "
                        "WHERE stream = ? AND seq <= ?",
                        (stream, acked),
                    ).fetchone()
                    w.execute("DELETE FROM records WHERE stream = ? AND seq <= ?", (stream, acked))
                    info = replace(info, depth=info.depth - n, bytes=info.bytes - b)
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
                    "UPDATE streams SET epoch = ?, next_seq = ?, acked_hw = 0, records = ?, "
                    "bytes = ? WHERE stream = ?",
                    (epoch, new.next_seq, new.depth, new.bytes, stream),
                )
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            with self._state_lock:
                self._streams[stream] = new
                self._note_marker()
        return epoch

    def _note_marker(self) -> None:
        self._marker.note({s: (i.epoch, i.next_seq) for s, i in self._streams.items()})

    def marker_due_in(self) -> float | None:
        """Seconds until the high-water marker should be written (None: nothing to write)."""
        return self._marker.due_in()

    def write_marker(self, force: bool = False) -> None:
        """Fsync the high-water marker if due (the writer thread calls this when idle)."""
        with self._wlock:
            if not self._closed:
                self._marker.write_due(force)

    # --- state committed with records (alarm state) --------------------------------------------

    def get_state(self, key: str) -> bytes | None:
        """The value last committed for ``key`` by :meth:`apply` (``states``), None if never."""
        with self._rlock:
            self._check_open()
            row = self._r.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

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
        return [(seq, payload) for seq, payload, _ in self.read_checked(stream, after_seq, limit)]

    def read_checked(
        self, stream: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes, int | None]]:
        """Like :meth:`read` with each record's accept-time CRC, or None where the stored bytes
        no longer match it (corrupted on disk: never to be sent)."""
        with self._rlock:
            self._check_open()
            rows = self._r.execute(
                "SELECT seq, payload, crc FROM records WHERE stream = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (stream, after_seq, limit),
            ).fetchall()
        out: list[tuple[int, bytes, int | None]] = []
        for seq, payload, crc in rows:
            ok = isinstance(payload, bytes) and record_crc(payload) == crc
            out.append((seq, payload if ok else b"", crc if ok else None))
        return out

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

    def next_gap_first(self, stream: str, seq: int) -> int | None:
        """Where the first gap row of ``stream`` starting after ``seq`` starts, if any."""
        with self._rlock:
            self._check_open()
            row = self._r.execute(
                "SELECT min(first) FROM gaps WHERE stream = ? AND first > ?", (stream, seq)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

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
            self._marker.write_due(force=True)
            self._marker.close()
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
