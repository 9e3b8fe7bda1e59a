"""The durable queue's SQLite schema (version 2) and the in-place upgrade from version 1.

Drawn and explained in docs/store-and-forward.md ("On disk"); kept apart so the file format can
be read at a glance.
"""

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
"""
V1_UPGRADE = (
    "ALTER TABLE streams ADD COLUMN records INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE streams ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
    "UPDATE streams SET records = (SELECT count(*) FROM records r WHERE r.stream = streams.stream),"
    " bytes = (SELECT coalesce(sum(length(payload)), 0) FROM records r"
    " WHERE r.stream = streams.stream)",
    "UPDATE meta SET value = 2 WHERE key = 'schema_version'",
)
