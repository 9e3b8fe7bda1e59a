"""What a subscriber reads from the cloud store to catch up (ZeroMQ's Clone pattern).

A subscriber connected to every receiver's PUB still loses messages: it joins late, a receiver
dies with records in its PUB queue, a slow subscriber hits the high-water mark. Every record it
lost is in the store (PUB carries only committed records), so it reads them back through this
small interface (:class:`~gateway.cloud.store.StoreReader`, the read half of every store):
:func:`open_reader` opens the receivers' SQLite file or their PostgreSQL database.
"""

from __future__ import annotations

import os

from gateway.cloud.store import (
    SQLiteCloudStore,
    StoreReader,
    is_postgres,
    redacted,
    store_for,
)


class ReaderError(ValueError):
    """The store cannot be opened for reading (missing file, unsupported URL)."""


def open_reader(db: str) -> StoreReader:
    """An open reader of the store ``db``: the receivers' SQLite file (they keep writing it) or
    their PostgreSQL database (``postgresql://...``)."""
    if is_postgres(db):
        pg = store_for(db)
        try:
            pg.open()
        except Exception as exc:
            raise ReaderError(f"--db {redacted(db)}: {exc}") from None
        return pg
    if "://" in db:
        raise ReaderError(f"--db {db}: an SQLite store file or a postgresql:// URL")
    if not os.path.exists(db):
        raise ReaderError(f"--db {db}: no cloud store there (the receivers' --db)")
    store = SQLiteCloudStore(db)
    try:
        store.open()
    except Exception as exc:
        raise ReaderError(f"--db {db}: {exc}") from None
    return store
