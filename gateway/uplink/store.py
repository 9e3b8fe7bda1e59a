"""Cloud-side record store: the interface and its embedded SQLite implementation.

Exactly-once storage rests on one rule: a commit writes the records and the stream's new
high-water mark (hw) in the same transaction, and only records with seq > hw are written. A
retransmitted DATA therefore never stores a record twice, whatever the network did. Another
database (PostgreSQL/TimescaleDB) can sit behind :class:`CloudStore` with the same rule.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCHEMA_VERSION = 2  # 2 added `gaps`; a version-1 file is upgraded at open

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
    """CREATE TABLE IF NOT EXISTS streams (
        gateway    TEXT    NOT NULL,
        stream     TEXT    NOT NULL,
        epoch      INTEGER NOT NULL,
        hw         INTEGER NOT NULL,
        updated_ts REAL    NOT NULL,
        PRIMARY KEY (gateway, stream, epoch)
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        gateway     TEXT    NOT NULL,
        stream      TEXT    NOT NULL,
        epoch       INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        payload     BLOB    NOT NULL,
        received_ts REAL    NOT NULL,
        PRIMARY KEY (gateway, stream, epoch, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS gaps (
        gateway     TEXT    NOT NULL,
        stream      TEXT    NOT NULL,
        epoch       INTEGER NOT NULL,
        first       INTEGER NOT NULL,
        last        INTEGER NOT NULL,
        reason      TEXT    NOT NULL,
        received_ts REAL    NOT NULL,
        PRIMARY KEY (gateway, stream, epoch, first)
    )""",
)


class SequenceGap(ValueError):
    """A commit whose first record is beyond hw + 1: accepting it would leave a hole."""

    def __init__(self, hw: int, first_seq: int) -> None:
        super().__init__(f"gap: hw is {hw}, first_seq {first_seq}")
        self.hw = hw
        self.first_seq = first_seq


@dataclass(frozen=True, slots=True)
class StoredRecord:
    gateway: str
    stream: str
    epoch: int
    seq: int
    payload: bytes
    received_ts: float


@dataclass(frozen=True, slots=True)
class StoredGap:
    """Seqs ``first``..``last`` were dropped on purpose by the gateway (announced by DROP)."""

    gateway: str
    stream: str
    epoch: int
    first: int
    last: int
    reason: str
    received_ts: float


@dataclass(frozen=True, slots=True)
class StreamStatus:
    gateway: str
    stream: str
    epoch: int
    hw: int
    updated_ts: float


class CloudStore(Protocol):
    """What the receiver needs from a store. Implementations must be usable from one worker
    thread other than the one that opened them (the receiver commits off its event loop)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def hw(self, gateway: str, stream: str, epoch: int) -> int:
        """Highest committed seq of (gateway, stream, epoch); 0 when unknown."""
        ...

    def commit(
        self, gateway: str, stream: str, epoch: int, first_seq: int, payloads: Sequence[bytes]
    ) -> int:
        """Store the records above hw and the new hw atomically; return the new hw.

        Raises :class:`SequenceGap` when ``first_seq > hw + 1``.
        """
        ...

    def drop(
        self, gateway: str, stream: str, epoch: int, first: int, last: int, reason: str
    ) -> int:
        """Record a deliberate gap and move hw to ``last`` atomically; return the new hw.

        Raises :class:`SequenceGap` when ``first > hw + 1``; a gap already below hw is a no-op.
        """
        ...

    def gaps(self, gateway: str, stream: str, epoch: int) -> list[StoredGap]:
        """Announced gaps of (gateway, stream, epoch) in seq order."""
        ...

    def records(
        self,
        gateway: str,
        stream: str,
        epoch: int | None = None,
        after_seq: int = 0,
        limit: int = 10000,
    ) -> list[StoredRecord]:
        """Stored records with seq > ``after_seq``; all epochs in commit order when epoch is None."""
        ...

    def gateways(self) -> list[StreamStatus]:
        """Every known (gateway, stream, epoch) with its hw."""
        ...


class SQLiteCloudStore:
    """:class:`CloudStore` in one SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            Path(self.path).resolve().parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
                conn.execute(  # version 1 only lacked the gaps table, created above
                    "UPDATE meta SET value = ? WHERE key = 'schema_version' AND value = 1",
                    (SCHEMA_VERSION,),
                )
                conn.execute("COMMIT")
                (version,) = conn.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                if version != SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self.path}: store schema version {version!r}, expected {SCHEMA_VERSION}"
                    )
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self.path}: store is not open")
        return self._conn

    def hw(self, gateway: str, stream: str, epoch: int) -> int:
        with self._lock:
            return _read_hw(self._db(), gateway, stream, epoch)

    def commit(
        self, gateway: str, stream: str, epoch: int, first_seq: int, payloads: Sequence[bytes]
    ) -> int:
        now = self._clock()
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                hw = _read_hw(db, gateway, stream, epoch)
                if first_seq > hw + 1:
                    raise SequenceGap(hw, first_seq)
                skip = hw + 1 - first_seq  # leading duplicates
                fresh = payloads[skip:]
                if not fresh:
                    db.execute("ROLLBACK")
                    return hw
                db.executemany(
                    "INSERT INTO records(gateway, stream, epoch, seq, payload, received_ts) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(gateway, stream, epoch, hw + 1 + i, p, now) for i, p in enumerate(fresh)],
                )
                new_hw = hw + len(fresh)
                db.execute(
                    "INSERT INTO streams(gateway, stream, epoch, hw, updated_ts) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(gateway, stream, epoch) "
                    "DO UPDATE SET hw = excluded.hw, updated_ts = excluded.updated_ts",
                    (gateway, stream, epoch, new_hw, now),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return new_hw

    def drop(
        self, gateway: str, stream: str, epoch: int, first: int, last: int, reason: str
    ) -> int:
        now = self._clock()
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                hw = _read_hw(db, gateway, stream, epoch)
                if first > hw + 1:
                    raise SequenceGap(hw, first)
                if last <= hw:
                    db.execute("ROLLBACK")
                    return hw
                db.execute(
                    "INSERT INTO gaps(gateway, stream, epoch, first, last, reason, received_ts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (gateway, stream, epoch, hw + 1, last, reason, now),
                )
                db.execute(
                    "INSERT INTO streams(gateway, stream, epoch, hw, updated_ts) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(gateway, stream, epoch) "
                    "DO UPDATE SET hw = excluded.hw, updated_ts = excluded.updated_ts",
                    (gateway, stream, epoch, last, now),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return last

    def gaps(self, gateway: str, stream: str, epoch: int) -> list[StoredGap]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT gateway, stream, epoch, first, last, reason, received_ts FROM gaps "
                    "WHERE gateway = ? AND stream = ? AND epoch = ? ORDER BY first",
                    (gateway, stream, epoch),
                )
                .fetchall()
            )
        return [
            StoredGap(g, s, int(e), int(a), int(b), r, float(t)) for g, s, e, a, b, r, t in rows
        ]

    def records(
        self,
        gateway: str,
        stream: str,
        epoch: int | None = None,
        after_seq: int = 0,
        limit: int = 10000,
    ) -> list[StoredRecord]:
        sql = (
            "SELECT gateway, stream, epoch, seq, payload, received_ts FROM records "
            "WHERE gateway = ? AND stream = ? AND seq > ?"
        )
        args: tuple[object, ...] = (gateway, stream, after_seq)
        if epoch is not None:
            sql += " AND epoch = ? ORDER BY seq"
            args += (epoch,)
        else:
            sql += " ORDER BY rowid"
        sql += " LIMIT ?"
        with self._lock:
            rows = self._db().execute(sql, (*args, limit)).fetchall()
        return [StoredRecord(g, s, int(e), int(q), bytes(p), float(t)) for g, s, e, q, p, t in rows]

    def gateways(self) -> list[StreamStatus]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT gateway, stream, epoch, hw, updated_ts FROM streams "
                    "ORDER BY gateway, stream, updated_ts"
                )
                .fetchall()
            )
        return [StreamStatus(g, s, int(e), int(h), float(t)) for g, s, e, h, t in rows]

    def __enter__(self) -> SQLiteCloudStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_hw(db: sqlite3.Connection, gateway: str, stream: str, epoch: int) -> int:
    """The committed high-water mark of one (gateway, stream, epoch); 0 before its first record."""
    row = db.execute(
        "SELECT hw FROM streams WHERE gateway = ? AND stream = ? AND epoch = ?",
        (gateway, stream, epoch),
    ).fetchone()
    return 0 if row is None else int(row[0])
