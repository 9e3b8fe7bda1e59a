""":class:`~gateway.cloud.store.CloudStore` on PostgreSQL (psycopg 3), for many receivers.

Exactly-once holds as in the SQLite store, and across any number of receivers on one database:
a commit locks the rows of its streams' high-water marks (``SELECT ... FOR UPDATE``, in a fixed
order so two receivers cannot deadlock), stores only records with seq > hw, and moves hw in the
same transaction. Two receivers that see the same gateway at once (a failover race) therefore
queue on that lock: the second one finds the first one's hw and stores nothing twice, and a
DATA beyond hw + 1 is refused (:class:`~gateway.cloud.store.SequenceGap`), never stored out of
order. The records' primary key refuses a duplicate within a partition as a second line.

Records go in with ``COPY`` (binary); telemetry and meta records are also decoded into the
``points`` and ``point_names`` tables in the same transaction (:mod:`gateway.cloud.pg_points`).
Schema and partitions: :mod:`gateway.cloud.pg_schema`.

A receiver stopped (SIGSTOP) inside a transaction holds its streams' locks: the server ends
such a session after ``idle_in_transaction_session_timeout``, and other receivers wait at most
``lock_timeout`` for a lock (then they do not acknowledge, and the gateway resends); no statement
runs longer than ``statement_timeout`` (a database that hangs). A lost connection (a database
restart) is reopened on the next call; nothing is acknowledged meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import psycopg

from gateway.cloud import pg_arrays, pg_points, pg_schema
from gateway.cloud.store import (
    CommitItem,
    CommitOne,
    SequenceGap,
    StoredAlarm,
    StoredGap,
    StoredRecord,
    StreamStatus,
)
from gateway.core.records import STREAM_META

_log = logging.getLogger(__name__)

_RECORD_TYPES = ["text", "text", "int8", "int8", "bytea", "float8", "timestamptz"]


class PostgresCloudStore(CommitOne):
    """:class:`~gateway.cloud.store.CloudStore` in a PostgreSQL database (``dsn``: a
    ``postgresql://`` URL or a libpq key=value string).

    ``partition`` ("day" or "hour") is fixed when the database is created; ``retention`` (s, or
    None to keep everything) drops whole partitions older than that, checked at open and when a
    new period starts. ``points=False`` skips the decoded rows (records only).
    """

    def __init__(
        self,
        dsn: str,
        clock: Callable[[], float] = time.time,
        *,
        partition: str = "day",
        retention: float | None = None,
        points: bool = True,
        connect_timeout: float = 5.0,
        lock_timeout: float = 2.0,
        idle_timeout: float = 4.0,
        statement_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self._clock = clock
        self.partition = partition
        self.retention = retention
        self.points = points
        self._connect_timeout = connect_timeout
        self._session = (
            f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'; "
            f"SET idle_in_transaction_session_timeout = '{int(idle_timeout * 1000)}ms'; "
            f"SET statement_timeout = '{int(statement_timeout * 1000)}ms'"
        )
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._period: datetime | None = None
        self._opened = False
        self.skipped_records = 0  # stored, but not decodable into points
        self.skipped_samples = 0
        self.skipped_models = 0
        self.refused_decoded = 0  # commits whose decoded rows the database refused
        self.dropped_partitions: list[str] = []

    # --- connection ----------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._opened = True
            conn = self._connection()
            self.partition = pg_schema.migrate(conn, self.partition)
            self._maintain(conn, self._clock())

    def close(self) -> None:
        with self._lock:
            self._opened = False
            self._disconnect()

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, reconnecting after a lost one. Caller holds the lock."""
        if not self._opened:
            raise RuntimeError(f"{self.describe()}: store is not open")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._disconnect()
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            application_name="gateway cloud",
        )
        try:
            pg_arrays.register(conn)
            conn.execute(self._session)  # type: ignore[arg-type]  # built from numbers
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    @contextmanager
    def _db(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection for one call; a connection error closes it (the next call opens a
        new one) and is raised: nothing from this call may be acknowledged."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.OperationalError:
                self._disconnect()
                raise

    def describe(self) -> str:
        """The database without its password (for logs and the status line)."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return "postgresql (unparsable dsn)"
        host = info.get("host", "localhost")
        return f"postgresql {info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    # --- partitions and retention --------------------------------------------------------------

    def _maintain(self, conn: psycopg.Connection[Any], now: float) -> None:
        """Partitions for this period and the next; expired ones dropped. Caller holds the lock."""
        period = pg_schema.period_start(now, self.partition)
        if period == self._period:
            return
        pg_schema.ensure_partitions(conn, now, self.partition)
        if self.retention is not None:
            dropped = pg_schema.drop_expired(conn, now, self.retention)
            if dropped:
                _log.info("cloud store: retention dropped partitions %s", ", ".join(dropped))
                self.dropped_partitions.extend(dropped)
        self._period = period

    def maintain(self) -> None:
        """Run partition upkeep now (it also runs at open and when a new period starts)."""
        with self._db() as conn:
            self._period = None
            self._maintain(conn, self._clock())

    # --- the receiver's calls ------------------------------------------------------------------

    def check(self) -> None:
        """Nothing to check: a database cannot be swapped under an open connection like a file."""

    def reopen(self) -> list[StreamStatus]:
        """Never needed (``check`` never raises StoreReplaced); reconnects."""
        with self._lock:
            self._disconnect()
            self._connection()
        return []

    def hw(self, gateway: str, stream: str, epoch: int) -> int:
        with self._db() as conn:
            row = conn.execute(
                "SELECT hw FROM streams WHERE gateway = %s AND stream = %s AND epoch = %s",
                (gateway, stream, epoch),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def hw_many(self, gateway: str, streams: dict[str, int]) -> dict[str, int]:
        names = list(streams)
        with self._db() as conn:
            rows = conn.execute(
                "SELECT t.stream, t.hw FROM streams t JOIN unnest(%s::text[], %s::bigint[]) "
                "AS k(s, e) ON t.stream = k.s AND t.epoch = k.e WHERE t.gateway = %s",
                (names, [streams[s] for s in names], gateway),
            ).fetchall()
        found = {s: int(h) for s, h in rows}
        return {s: found.get(s, 0) for s in names}

    def has_records(self, gateway: str, stream: str) -> bool:
        with self._db() as conn:
            row = conn.execute(
                "SELECT 1 FROM records WHERE gateway = %s AND stream = %s LIMIT 1",
                (gateway, stream),
            ).fetchone()
        return row is not None

    def alarm(self, gateway: str, kind: str, detail: str) -> None:
        with self._db() as conn:
            conn.execute(
                "INSERT INTO alarms(gateway, kind, detail, ts) VALUES (%s, %s, %s, %s)",
                (gateway, kind, detail, self._clock()),
            )

    def alarms(self, gateway: str | None = None) -> list[StoredAlarm]:
        where = "" if gateway is None else " WHERE gateway = %s"
        with self._db() as conn:
            rows = conn.execute(
                "SELECT gateway, kind, detail, ts FROM alarms" + where + " ORDER BY id",  # type: ignore[operator]
                () if gateway is None else (gateway,),
            ).fetchall()
        return [StoredAlarm(g, k, d, float(t)) for g, k, d, t in rows]

    def commit_many(self, items: Sequence[CommitItem]) -> list[int | SequenceGap]:
        now = self._clock()
        received = datetime.fromtimestamp(now, timezone.utc)
        results: list[int | SequenceGap] = []
        with self._db() as conn:
            self._maintain(conn, now)
            with conn.transaction() as tx:
                before = _lock_streams(conn, sorted({(g, s, e) for g, s, e, _, _ in items}), now)
                hws = dict(before)
                rows: list[tuple[Any, ...]] = []
                decoded = pg_points.Decoded()
                for gateway, stream, epoch, first_seq, payloads in items:
                    key = (gateway, stream, epoch)
                    hw = hws[key]
                    if first_seq > hw + 1:
                        results.append(SequenceGap(hw, first_seq))
                        continue
                    fresh = list(payloads[hw + 1 - first_seq :])  # leading duplicates skipped
                    rows.extend(
                        (gateway, stream, epoch, hw + 1 + i, p, now, received)
                        for i, p in enumerate(fresh)
                    )
                    if self.points and fresh:
                        pg_points.decode_into(decoded, gateway, stream, fresh)
                    hws[key] = hw + len(fresh)
                    results.append(hws[key])
                changed = [k for k, hw in hws.items() if hw > before[k]]
                if not changed:
                    raise psycopg.Rollback(tx)
                _copy_records(conn, rows)
                if decoded or decoded.names:
                    self._decoded(conn, decoded, received)
                self.skipped_records += decoded.skipped_records
                self.skipped_samples += decoded.skipped_samples
                conn.execute(
                    "UPDATE streams AS t SET hw = v.hw, updated_ts = %s FROM "
                    "unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS v(g, s, e, hw) "
                    "WHERE t.gateway = v.g AND t.stream = v.s AND t.epoch = v.e",
                    (
                        now,
                        [k[0] for k in changed],
                        [k[1] for k in changed],
                        [k[2] for k in changed],
                        [hws[k] for k in changed],
                    ),
                )
        return results

    def _decoded(
        self, conn: psycopg.Connection[Any], decoded: pg_points.Decoded, received: datetime
    ) -> None:
        """The decoded rows, in a savepoint: rows the database refuses (a value no check in
        :mod:`~gateway.cloud.pg_points` foresaw) cost those rows, never the records or ACKs."""
        try:
            with conn.transaction():
                if decoded:
                    pairs = list(decoded.pairs)
                    conn.execute(
                        "INSERT INTO points (gateway, model, pid, ts, value, quality, received_at) "
                        "SELECT (%s::text[])[u.k], (%s::text[])[u.k], u.p, to_timestamp(u.t), "
                        "nullif(u.v, 'NaN'::float8), u.q, %s FROM unnest(%b, %b, %b, %b, %b) "
                        "AS u(k, p, t, v, q)",
                        (
                            [g for g, _ in pairs],
                            [m for _, m in pairs],
                            received,
                            pg_arrays.int4_array(decoded.k),
                            pg_arrays.int4_array(decoded.pid),
                            pg_arrays.float8_array(decoded.ts),
                            pg_arrays.float8_array(decoded.value),
                            pg_arrays.int4_array(decoded.quality),
                        ),
                    )
                if decoded.names:
                    self._names(conn, decoded.names)
        except psycopg.DataError as exc:
            self.refused_decoded += 1
            _log.warning("cloud store: decoded rows of one commit refused (%s); records kept", exc)

    def _names(self, conn: psycopg.Connection[Any], names: list[pg_points.NameRow]) -> None:
        """Upsert announced point names; a gateway's new models beyond the bound are skipped."""
        allowed: dict[tuple[str, str], bool] = {}
        models: dict[str, int] = {}  # per gateway: models known, counting this commit's
        keep = []
        for row in names:
            key = (row[0], row[1])
            ok = allowed.get(key)
            if ok is None:
                known, has = conn.execute(  # type: ignore[misc]
                    "SELECT count(DISTINCT model), coalesce(bool_or(model = %s), false) "
                    "FROM point_names WHERE gateway = %s",
                    (key[1], key[0]),
                ).fetchone()
                count = models.setdefault(key[0], int(known))
                ok = allowed[key] = bool(has) or count < pg_points.MAX_MODELS_PER_GATEWAY
                if ok and not has:
                    models[key[0]] = count + 1
                if not ok:
                    self.skipped_models += 1
                    _log.warning(
                        "cloud store: %s announces more than %d point models; model %s not named",
                        key[0], pg_points.MAX_MODELS_PER_GATEWAY, key[1],
                    )  # fmt: skip
            if ok:
                keep.append(row)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO point_names(gateway, model, pid, name, unit, device) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (gateway, model, pid) DO UPDATE "
                "SET name = excluded.name, unit = excluded.unit, device = excluded.device",
                keep,
            )

    def drop(
        self, gateway: str, stream: str, epoch: int, first: int, last: int, reason: str
    ) -> int:
        now = self._clock()
        with self._db() as conn, conn.transaction() as tx:
            hw = _lock_streams(conn, [(gateway, stream, epoch)], now)[(gateway, stream, epoch)]
            if first > hw + 1:
                raise SequenceGap(hw, first)
            if last <= hw:
                raise psycopg.Rollback(tx)
            conn.execute(
                "INSERT INTO gaps(gateway, stream, epoch, first, last, reason, received_ts) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (gateway, stream, epoch, hw + 1, last, reason, now),
            )
            conn.execute(
                "UPDATE streams SET hw = %s, updated_ts = %s "
                "WHERE gateway = %s AND stream = %s AND epoch = %s",
                (last, now, gateway, stream, epoch),
            )
        return max(hw, last)

    def gaps(self, gateway: str, stream: str, epoch: int) -> list[StoredGap]:
        with self._db() as conn:
            rows = conn.execute(
                "SELECT gateway, stream, epoch, first, last, reason, received_ts FROM gaps "
                "WHERE gateway = %s AND stream = %s AND epoch = %s ORDER BY first",
                (gateway, stream, epoch),
            ).fetchall()
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
        if epoch is not None:
            sql = (
                "SELECT gateway, stream, epoch, seq, payload, received_ts FROM records "
                "WHERE gateway = %s AND stream = %s AND seq > %s AND epoch = %s "
                "ORDER BY seq LIMIT %s"
            )
            args: tuple[object, ...] = (gateway, stream, after_seq, epoch, limit)
        else:  # epochs in the order they were first seen, seqs in order within each
            sql = (
                "SELECT r.gateway, r.stream, r.epoch, r.seq, r.payload, r.received_ts "
                "FROM records r JOIN streams t USING (gateway, stream, epoch) "
                "WHERE r.gateway = %s AND r.stream = %s AND r.seq > %s "
                "ORDER BY t.since, r.seq LIMIT %s"
            )
            args = (gateway, stream, after_seq, limit)
        with self._db() as conn:
            rows = conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
        return [StoredRecord(g, s, int(e), int(q), bytes(p), float(t)) for g, s, e, q, p, t in rows]

    def gateways(self) -> list[StreamStatus]:
        with self._db() as conn:
            rows = conn.execute(
                "SELECT gateway, stream, epoch, hw, updated_ts FROM streams WHERE hw > 0 "
                "ORDER BY gateway, stream, updated_ts"
            ).fetchall()
        return [StreamStatus(g, s, int(e), int(h), float(t)) for g, s, e, h, t in rows]

    def __enter__(self) -> PostgresCloudStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock_streams(
    conn: psycopg.Connection[Any], keys: list[tuple[str, str, int]], now: float
) -> dict[tuple[str, str, int], int]:
    """Create the missing hw rows of ``keys`` (hw 0) and lock them all, in key order (sorted by
    the caller): the hw each has now, as committed by any receiver."""
    cols = ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    conn.execute(
        "INSERT INTO streams(gateway, stream, epoch, hw, updated_ts) "
        "SELECT g, s, e, 0, %s FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS k(g, s, e) "
        "ORDER BY g, s, e ON CONFLICT DO NOTHING",
        (now, *cols),
    )
    rows = conn.execute(
        "SELECT t.gateway, t.stream, t.epoch, t.hw FROM streams t "
        "JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS k(g, s, e) "
        "ON t.gateway = k.g AND t.stream = k.s AND t.epoch = k.e "
        "ORDER BY t.gateway, t.stream, t.epoch FOR UPDATE OF t",
        cols,
    ).fetchall()
    return {(g, s, int(e)): int(h) for g, s, e, h in rows}


def _copy_records(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur:
        with cur.copy(
            "COPY records (gateway, stream, epoch, seq, payload, received_ts, received_at) "
            "FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.set_types(_RECORD_TYPES)
            for row in rows:
                cp.write_row(row)


def meta_lookup(dsn: str) -> Callable[[str], list[bytes]]:
    """A gateway's latest point-model records from the database, read-only (``gateway subscribe
    --db postgresql://...``); the same shape as :func:`gateway.uplink.recordjson.store_lookup`."""

    def lookup(gateway: str) -> list[bytes]:
        try:
            with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT payload FROM records WHERE gateway = %s AND stream = %s "
                    "ORDER BY received_ts DESC, seq DESC LIMIT 100",
                    (gateway, STREAM_META),
                ).fetchall()
        except psycopg.Error as exc:  # said once per model by the caller, as for a file
            raise OSError(" ".join(str(exc).split())) from None
        return [bytes(p) for (p,) in rows]

    return lookup
