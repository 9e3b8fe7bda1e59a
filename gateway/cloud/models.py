"""Every gateway's information-model versions, read from the stored birth (``meta``) records.

A read layer over any :class:`~gateway.cloud.store.CloudStore` (SQLite, PostgreSQL) or a
read-only store file: nothing here writes, and the store's schema is untouched. The versions
themselves (and how a telemetry record resolves against the one it names) are
:mod:`gateway.model.versions`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.core import records
from gateway.model.versions import Model, ModelVersions, named

if TYPE_CHECKING:
    from gateway.cloud.store import CloudStore

__all__ = ["Model", "ModelVersions", "from_db", "from_lookup", "from_store", "named"]


def from_store(store: CloudStore, gateway: str | None = None) -> ModelVersions:
    """Every model version in ``store`` (any backend), for one gateway or all."""
    out = ModelVersions()
    seen: set[tuple[str, int]] = set()
    for st in store.gateways():
        if st.stream != records.STREAM_META or (gateway is not None and st.gateway != gateway):
            continue
        if (st.gateway, st.epoch) in seen:
            continue
        seen.add((st.gateway, st.epoch))
        after = 0
        while True:
            batch = store.records(st.gateway, records.STREAM_META, st.epoch, after, 1000)
            if not batch:
                break
            out.learn_payloads(st.gateway, (r.payload for r in batch))
            after = batch[-1].seq
    return out


def from_lookup(lookup: Callable[[str], Iterable[bytes]], gateways: Iterable[str]) -> ModelVersions:
    """Model versions from ``lookup(gateway)`` -> meta payloads, oldest first."""
    out = ModelVersions()
    for gw in gateways:
        out.learn_payloads(gw, lookup(gw))
    return out


def from_db(db: sqlite3.Connection, gateway: str) -> ModelVersions:
    """The versions of ``gateway`` in a read-only SQLite store (:func:`gateway.cloud.export.open_store`),
    in the order the gateway sent them."""
    from gateway.cloud.export import stream_payloads

    out = ModelVersions()
    out.learn_payloads(gateway, stream_payloads(db, gateway, records.STREAM_META))
    return out
