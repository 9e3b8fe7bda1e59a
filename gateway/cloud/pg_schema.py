"""The PostgreSQL store's schema: versioned migrations and the time partitions.

Every receiver runs :func:`migrate` at start. The migrations are applied in order, each in the
same transaction as its row in ``cloud_schema``, under an advisory lock, so N receivers starting
together apply each step once. A database whose schema is newer than this code knows is refused
with :class:`SchemaError` (an older receiver must never write into a layout it does not know).

``records`` and ``points`` are partitioned by the receiver's clock (``received_at``), by day or
hour: retention drops whole partitions (``DROP TABLE``), never rows. Partitioning by the
receiver's time, not the gateway's sample time, keeps a peer from choosing which partitions exist.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

#: One advisory-lock key for schema changes and partition DDL (any 64-bit constant).
DDL_LOCK = 0x6761_7465_7761_7901

UTC = timezone.utc

GRANULARITIES = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
PARTITIONED = ("records", "points")

MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (
        1,
        "streams, records (partitioned), gaps, alarms",
        (
            """CREATE TABLE cloud_settings (key text PRIMARY KEY, value text NOT NULL)""",
            """CREATE SEQUENCE streams_since""",
            """CREATE TABLE streams (
                gateway    text             NOT NULL,
                stream     text             NOT NULL,
                epoch      bigint           NOT NULL,
                hw         bigint           NOT NULL,
                updated_ts double precision NOT NULL,
                since      bigint           NOT NULL DEFAULT nextval('streams_since'),
                PRIMARY KEY (gateway, stream, epoch)
            )""",
            # Duplicates: the authority is the stream's hw, read under its row lock in the
            # committing transaction; the primary key refuses a duplicate within a partition too.
            """CREATE TABLE records (
                gateway     text             NOT NULL,
                stream      text             NOT NULL,
                epoch       bigint           NOT NULL,
                seq         bigint           NOT NULL,
                payload     bytea            NOT NULL,
                received_ts double precision NOT NULL,
                received_at timestamptz      NOT NULL,
                PRIMARY KEY (gateway, stream, epoch, seq, received_at)
            ) PARTITION BY RANGE (received_at)""",
            """CREATE TABLE gaps (
                gateway     text             NOT NULL,
                stream      text             NOT NULL,
                epoch       bigint           NOT NULL,
                first       bigint           NOT NULL,
                last        bigint           NOT NULL,
                reason      text             NOT NULL,
                received_ts double precision NOT NULL,
                PRIMARY KEY (gateway, stream, epoch, first)
            )""",
            """CREATE TABLE alarms (
                id      bigserial        PRIMARY KEY,
                gateway text             NOT NULL,
                kind    text             NOT NULL,
                detail  text             NOT NULL,
                ts      double precision NOT NULL
            )""",
        ),
    ),
    (
        2,
        "decoded points (partitioned), point names from the gateways' models, point_samples",
        (
            """CREATE TABLE point_names (
                gateway text    NOT NULL,
                model   text    NOT NULL,
                pid     integer NOT NULL,
                name    text    NOT NULL,
                unit    text    NOT NULL,
                device  text    NOT NULL,
                PRIMARY KEY (gateway, model, pid)
            )""",
            """CREATE TABLE points (
                gateway     text             NOT NULL,
                model       text             NOT NULL,
                pid         integer          NOT NULL,
                ts          timestamptz      NOT NULL,
                value       double precision,
                quality     integer          NOT NULL,
                received_at timestamptz      NOT NULL
            ) PARTITION BY RANGE (received_at)""",
            """CREATE INDEX points_gateway_ts ON points (gateway, ts)""",
            # What Grafana's PostgreSQL data source charts: one row per sample, named.
            """CREATE VIEW point_samples AS
                SELECT p.gateway, coalesce(n.name, '#' || p.pid) AS point,
                       coalesce(n.unit, '') AS unit, p.ts, p.value, p.quality
                FROM points p LEFT JOIN point_names n USING (gateway, model, pid)""",
        ),
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaError(RuntimeError):
    """The database cannot be used by this receiver; ``str()`` says why and what to do."""


def migrate(conn: psycopg.Connection[Any], granularity: str) -> str:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the partition granularity in force
    (chosen when the database was created; a different ``granularity`` later is refused)."""
    if granularity not in GRANULARITIES:
        raise SchemaError(
            f"partition granularity {granularity!r}: use one of {list(GRANULARITIES)}"
        )
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cloud_schema (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT max(version) FROM cloud_schema").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"the database's cloud schema is version {current}, newer than this receiver "
                f"knows ({SCHEMA_VERSION}): upgrade this receiver to the version that wrote it; "
                "it will not write into a layout it does not know"
            )
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for stmt in statements:
                conn.execute(stmt)  # type: ignore[arg-type]  # literal SQL above
            conn.execute(
                "INSERT INTO cloud_schema(version, description) VALUES (%s, %s)",
                (version, description),
            )
        conn.execute(
            "INSERT INTO cloud_settings(key, value) VALUES ('partition', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (granularity,),
        )
        (stored,) = conn.execute(  # type: ignore[misc]
            "SELECT value FROM cloud_settings WHERE key = 'partition'"
        ).fetchone()
    if stored != granularity:
        raise SchemaError(
            f"the database is partitioned by {stored}, not {granularity}: the partition size is "
            f"chosen when the database is created; pass --partition {stored}"
        )
    return str(stored)


def period_start(t: float, granularity: str) -> datetime:
    """The start (UTC) of the partition that holds time ``t``."""
    d = datetime.fromtimestamp(t, UTC)
    if granularity == "day":
        return d.replace(hour=0, minute=0, second=0, microsecond=0)
    return d.replace(minute=0, second=0, microsecond=0)


def partition_name(table: str, start: datetime, granularity: str) -> str:
    return f"{table}_p{start.strftime('%Y%m%d' if granularity == 'day' else '%Y%m%d%H')}"


_NAME = re.compile(r"^(records|points)_p(\d{8}|\d{10})$")


def ensure_partitions(conn: psycopg.Connection[Any], t: float, granularity: str) -> None:
    """Create the partitions for the period holding ``t`` and the next one (idempotent, safe
    with several receivers doing it at once)."""
    step = GRANULARITIES[granularity]
    first = period_start(t, granularity)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        tables = [t for t in PARTITIONED if _exists(conn, t)]  # an older schema: fewer
        for start in (first, first + step):
            for table in tables:
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(partition_name(table, start, granularity)),
                        sql.Identifier(table),
                        sql.Literal(start),
                        sql.Literal(start + step),
                    )
                )


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def partitions(conn: psycopg.Connection[Any]) -> list[tuple[str, datetime, datetime]]:
    """``(name, start, end)`` of every partition of the partitioned tables, oldest first."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN (SELECT to_regclass(t) FROM unnest(%s::text[]) AS t)",
        (list(PARTITIONED),),
    ).fetchall()
    out = []
    for (name,) in rows:
        m = _NAME.match(name)
        if m is None:
            continue  # someone's own partition: not ours to drop
        digits = m.group(2)
        start = datetime.strptime(digits, "%Y%m%d" if len(digits) == 8 else "%Y%m%d%H")
        start = start.replace(tzinfo=UTC)
        out.append((name, start, start + GRANULARITIES["day" if len(digits) == 8 else "hour"]))
    return sorted(out, key=lambda p: (p[1], p[0]))


def drop_expired(conn: psycopg.Connection[Any], now: float, retention: float) -> list[str]:
    """Drop every partition whose whole period ended more than ``retention`` s before ``now``;
    returns their names. Rows are never deleted one by one."""
    cutoff = datetime.fromtimestamp(now - retention, UTC)
    dropped = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        for name, _start, end in partitions(conn):
            if end <= cutoff:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
    return dropped
