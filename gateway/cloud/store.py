"""Cloud-side record store: the interface and its embedded SQLite implementation.

Exactly-once storage rests on one rule: a commit writes the records and the stream's new
high-water mark (hw) in the same transaction, and only records with seq > hw are written. A
retransmitted DATA therefore never stores a record twice, whatever the network did. PostgreSQL
sits behind the same interface with the same rule (:mod:`gateway.cloud.store_pg`), for many
receivers on one database; :func:`store_for` picks the store ``--db`` names.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: One DATA message for :meth:`CloudStore.commit_many`: (gateway, stream, epoch, first_seq,
#: payloads).
CommitItem = tuple[str, str, int, int, Sequence[bytes]]

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2 added `gaps`, 3 `alarms`; older files are upgraded at open

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
    """CREATE TABLE IF NOT EXISTS alarms (
        id      INTEGER PRIMARY KEY,
        gateway TEXT    NOT NULL,
        kind    TEXT    NOT NULL,
        detail  TEXT    NOT NULL,
        ts      REAL    NOT NULL
    )""",
)

#: A DROP reason the receiver writes itself: seqs acked into a store file that was then deleted
#: or replaced (the gateway had already deleted them).
STORE_LOST = "store_lost"


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
class StoredAlarm:
    """Something an operator must see later: ``duplicate_identity``, ``store_replaced``, ...

    ``gateway`` is empty for receiver-wide alarms.
    """

    gateway: str
    kind: str
    detail: str
    ts: float


class StoreReplaced(RuntimeError):
    """The file at the store's path is no longer the one this store wrote (deleted or replaced).

    Nothing written since may be acknowledged. ``unacked`` lists ``(gateway, stream, epoch, hw)``
    per stream of a (group) commit that went into the old file but must not count (its ACKs were
    never sent): ``hw`` is the stream's hw before that commit.
    """

    def __init__(self, what: str, unacked: Sequence[tuple[str, str, int, int]] = ()) -> None:
        super().__init__(what)
        self.unacked = list(unacked)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    gateway: str
    stream: str
    epoch: int
    hw: int
    updated_ts: float


class StoreReader(Protocol):
    """The reads of a store: what subscribers' catch-up and the cloud tools need. Called from one
    worker thread, never concurrently."""

    def gateways(self) -> list[StreamStatus]:
        """Every known (gateway, stream, epoch) with its committed high-water mark."""
        ...

    def records(
        self,
        gateway: str,
        stream: str,
        epoch: int | None = None,
        after_seq: int = 0,
        limit: int = 10000,
    ) -> list[StoredRecord]:
        """Stored records with seq > ``after_seq`` in seq order; all epochs in commit order when
        epoch is None."""
        ...

    def gaps(self, gateway: str, stream: str, epoch: int) -> list[StoredGap]:
        """Seqs the gateway dropped on purpose (DROP) in (gateway, stream, epoch), by ``first``."""
        ...

    def close(self) -> None: ...


class CloudStore(StoreReader, Protocol):
    """What the receiver needs from a store. Implementations must be usable from one worker
    thread other than the one that opened them (the receiver commits off its event loop)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the store is, for logs and status lines (never a password)."""
        ...

    def hw(self, gateway: str, stream: str, epoch: int) -> int:
        """Highest committed seq of (gateway, stream, epoch); 0 when unknown."""
        ...

    def hw_many(self, gateway: str, streams: dict[str, int]) -> dict[str, int]:
        """:meth:`hw` of every ``{stream: epoch}`` in one call (a HELLO's lookups)."""
        ...

    def has_records(self, gateway: str, stream: str) -> bool:
        """Whether any record of ``stream`` of ``gateway`` is stored (any epoch)."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreReplaced` if the store can no longer keep what it acknowledges."""
        ...

    def reopen(self) -> list[StreamStatus]:
        """After :class:`StoreReplaced`: open the store anew at its location; return the streams
        (with hw) the lost one had, so their acknowledged seqs can be announced as lost."""
        ...

    def alarm(self, gateway: str, kind: str, detail: str) -> None:
        """Store an alarm for operators."""
        ...

    def alarms(self, gateway: str | None = None) -> list[StoredAlarm]:
        """Stored alarms (of one gateway, or all), oldest first."""
        ...

    def commit(
        self, gateway: str, stream: str, epoch: int, first_seq: int, payloads: Sequence[bytes]
    ) -> int:
        """Store the records above hw and the new hw atomically; return the new hw.

        Raises :class:`SequenceGap` when ``first_seq > hw + 1``.
        """
        ...

    def commit_many(self, items: Sequence[CommitItem]) -> list[int | SequenceGap]:
        """Group commit: several DATA messages' records and hws in ONE transaction (one fsync).

        Per item, in order, as :meth:`commit` does it: the new hw, or a :class:`SequenceGap`
        (that item is not stored; the others are). All or nothing on any other error.
        """
        ...

    def drop(
        self, gateway: str, stream: str, epoch: int, first: int, last: int, reason: str
    ) -> int:
        """Record a deliberate gap and move hw to ``last`` atomically; return the new hw.

        Raises :class:`SequenceGap` when ``first > hw + 1``; a gap already below hw is a no-op.
        """
        ...


class CommitOne:
    """:meth:`CloudStore.commit` as a one-item :meth:`CloudStore.commit_many` (every store)."""

    def commit_many(self, items: Sequence[CommitItem]) -> list[int | SequenceGap]:
        raise NotImplementedError

    def commit(
        self, gateway: str, stream: str, epoch: int, first_seq: int, payloads: Sequence[bytes]
    ) -> int:
        (result,) = self.commit_many([(gateway, stream, epoch, first_seq, payloads)])
        if isinstance(result, SequenceGap):
            raise result
        return result


class SQLiteCloudStore(CommitOne):
    """:class:`CloudStore` in one SQLite file (WAL, ``synchronous=FULL``).

    The file's device and inode are taken at open and compared with the path's before every
    answer that lets a gateway delete records (hw lookups, and after each commit): a file deleted
    or replaced under a running receiver raises :class:`StoreReplaced` instead of acknowledging
    into an unlinked file. One ``stat`` per call.
    """

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._file_id: tuple[int, int] | None = None
        self._salvaged: tuple[int, int] | None = None

    def describe(self) -> str:
        return self.path

    def open(self) -> None:
        with self._lock:
            self._open()

    def _open(self) -> None:
        """Caller holds the lock."""
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
            conn.execute(  # versions 1 and 2 only lacked tables created above
                "UPDATE meta SET value = ? WHERE key = 'schema_version' AND value IN (1, 2)",
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
            st = os.stat(self.path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._file_id = (st.st_dev, st.st_ino)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _replaced(self) -> str | None:
        """Why the path no longer names our file, or None. Caller holds the lock."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted"
        except OSError as exc:
            return f"{self.path} cannot be checked: {exc}"
        if (st.st_dev, st.st_ino) != self._file_id:
            return f"{self.path} was replaced by another file"
        return None

    def _verify(self, unacked: Sequence[tuple[str, str, int, int]] = ()) -> None:
        why = self._replaced() if self._conn is not None else None
        if why is not None:
            raise StoreReplaced(why, unacked)

    def check(self) -> None:
        with self._lock:
            self._verify()

    def reopen(self) -> list[StreamStatus]:
        with self._lock:  # one step for readers sharing this object: never seen closed
            old = self._conn
            lost = self._streams() if old is not None else []
            if old is not None and self._salvaged != self._file_id:
                self._salvage()
                self._salvaged = self._file_id
            self._conn = None
            try:
                self._open()
            except BaseException:
                self._conn = old  # keep the old handle: a retry still knows what was lost
                raise
            if old is not None:
                old.close()
        return lost

    def _salvage(self) -> None:
        """Copy the deleted file's content (still readable through our handle) next to the path,
        so what it acknowledged can be recovered by hand. Best effort; caller holds the lock."""
        aside = f"{self.path}.lost-{int(self._clock())}"
        try:
            dest = sqlite3.connect(aside)
            try:
                self._db().backup(dest)
            finally:
                dest.close()
        except (sqlite3.Error, OSError) as exc:
            _log.error("cloud store: could not save the lost store to %s: %s", aside, exc)
        else:
            _log.error("cloud store: the lost store's content was saved to %s", aside)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self.path}: store is not open")
        return self._conn

    def hw(self, gateway: str, stream: str, epoch: int) -> int:
        with self._lock:
            self._verify()
            return _read_hw(self._db(), gateway, stream, epoch)

    def hw_many(self, gateway: str, streams: dict[str, int]) -> dict[str, int]:
        with self._lock:
            self._verify()
            db = self._db()
            return {s: _read_hw(db, gateway, s, e) for s, e in streams.items()}

    def has_records(self, gateway: str, stream: str) -> bool:
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT 1 FROM records WHERE gateway = ? AND stream = ? LIMIT 1",
                    (gateway, stream),
                )
                .fetchone()
            )
        return row is not None

    def alarm(self, gateway: str, kind: str, detail: str) -> None:
        with self._lock:
            self._db().execute(
                "INSERT INTO alarms(gateway, kind, detail, ts) VALUES (?, ?, ?, ?)",
                (gateway, kind, detail, self._clock()),
            )

    def alarms(self, gateway: str | None = None) -> list[StoredAlarm]:
        sql = "SELECT gateway, kind, detail, ts FROM alarms"
        args: tuple[str, ...] = ()
        if gateway is not None:
            sql += " WHERE gateway = ?"
            args = (gateway,)
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY id", args).fetchall()
        return [StoredAlarm(g, k, d, float(t)) for g, k, d, t in rows]

    def commit_many(self, items: Sequence[CommitItem]) -> list[int | SequenceGap]:
        now = self._clock()
        results: list[int | SequenceGap] = []
        before: dict[tuple[str, str, int], int] = {}  # hw of each stream before this commit
        with self._lock:
            self._verify()
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                hws: dict[tuple[str, str, int], int] = {}
                rows: list[tuple[str, str, int, int, bytes, float]] = []
                for gateway, stream, epoch, first_seq, payloads in items:
                    key = (gateway, stream, epoch)
                    hw = hws.get(key)
                    if hw is None:
                        hw = before[key] = _read_hw(db, gateway, stream, epoch)
                    if first_seq > hw + 1:
                        results.append(SequenceGap(hw, first_seq))
                        continue
                    fresh = payloads[hw + 1 - first_seq :]  # leading duplicates skipped
                    rows.extend(
                        (gateway, stream, epoch, hw + 1 + i, p, now) for i, p in enumerate(fresh)
                    )
                    hws[key] = hw + len(fresh)
                    results.append(hws[key])
                changed = [(*k, hw, now) for k, hw in hws.items() if hw > before[k]]
                if not changed:
                    db.execute("ROLLBACK")
                    return results
                db.executemany(
                    "INSERT INTO records(gateway, stream, epoch, seq, payload, received_ts) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                db.executemany(
                    "INSERT INTO streams(gateway, stream, epoch, hw, updated_ts) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(gateway, stream, epoch) "
                    "DO UPDATE SET hw = excluded.hw, updated_ts = excluded.updated_ts",
                    changed,
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            # Deleted while we committed? Then none of these may be acknowledged.
            self._verify([(*k, before[k]) for k, hw in hws.items() if hw > before[k]])
        return results

    def drop(
        self, gateway: str, stream: str, epoch: int, first: int, last: int, reason: str
    ) -> int:
        now = self._clock()
        with self._lock:
            self._verify()
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
            self._verify([(gateway, stream, epoch, hw)])
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
            return self._streams()

    def _streams(self) -> list[StreamStatus]:
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


def is_postgres(db: str) -> bool:
    """Whether ``--db`` names a PostgreSQL database rather than an SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def redacted(db: str) -> str:
    """``--db`` for a message: a URL's password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db)


def store_for(
    db: str, *, partition: str = "day", retention: float | None = None, points: bool = True
) -> CloudStore:
    """The store ``gateway cloud --db`` names: a ``postgresql://`` URL, else an SQLite file
    (``partition``/``retention``/``points`` apply to PostgreSQL only)."""
    if is_postgres(db):
        from gateway.cloud.store_pg import PostgresCloudStore  # psycopg only when asked for

        return PostgresCloudStore(db, partition=partition, retention=retention, points=points)
    return SQLiteCloudStore(db)
