"""The durable queue's SQLite schema (version 3), the in-place upgrades from versions 1 and 2,
and the row types the queue hands out.

Drawn and explained in docs/store-and-forward.md ("On disk"); kept apart so the file format can
be read at a glance.
"""

from __future__ import annotations

import sqlite3
import zlib
from dataclasses import dataclass

SCHEMA_VERSION = 3  # 2: streams.records/bytes, gaps, commands; 3: records.crc, state

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value
);
CREATE TABLE IF NOT EXISTS streams (
    stream   TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    acked_hw INTEGER NOT NULL,
    records  INTEGER NOT NULL DEFAULT 0,
    bytes    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records (
    stream  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    ts      REAL    NOT NULL,
    payload BLOB    NOT NULL,
    crc     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE IF NOT EXISTS gaps (
    stream TEXT    NOT NULL,
    first  INTEGER NOT NULL,
    last   INTEGER NOT NULL,
    reason TEXT    NOT NULL,
    ts     REAL    NOT NULL,
    PRIMARY KEY (stream, first)
);
CREATE TABLE IF NOT EXISTS commands (
    id      TEXT PRIMARY KEY,
    kind    TEXT NOT NULL,
    outcome TEXT,
    detail  TEXT,
    ts      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""

UPGRADES: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE streams ADD COLUMN records INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE streams ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        "UPDATE streams SET records = (SELECT count(*) FROM records r"
        " WHERE r.stream = streams.stream), bytes = (SELECT coalesce(sum(length(payload)), 0)"
        " FROM records r WHERE r.stream = streams.stream)",
    ),
    # Records queued before version 3 get their checksum now: it vouches for the bytes as they
    # are at the upgrade, which is the best anyone can still say about them.
    2: (
        "ALTER TABLE records ADD COLUMN crc INTEGER NOT NULL DEFAULT 0",
        "UPDATE records SET crc = record_crc(payload)",
    ),
}


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


def record_crc(payload: bytes) -> int:
    """The end-to-end checksum of one record: zlib CRC-32 of its bytes, fixed at accept time."""
    return zlib.crc32(payload)


def upgrade(conn: sqlite3.Connection, version: int) -> None:
    """Bring a file of ``version`` (1 or 2) to SCHEMA_VERSION inside the caller's transaction."""
    conn.create_function("record_crc", 1, record_crc, deterministic=True)
    for v in range(version, SCHEMA_VERSION):
        for stmt in UPGRADES[v]:
            conn.execute(stmt)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
