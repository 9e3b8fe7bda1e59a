"""PostgreSQL arrays in binary form, built by numpy: one decoded commit's sample columns go to
the server as five parameters instead of one row per sample (psycopg's own list dumpers walk
every element in Python, ten times slower than the insert itself)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from psycopg import adapt, pq

_FLOAT8_ARRAY = 1022
_INT4_ARRAY = 1007


class PgArray:
    """A one-dimensional array without NULLs, already in PostgreSQL's binary format."""

    __slots__ = ("data", "oid")

    def __init__(self, data: bytes, oid: int) -> None:
        self.data = data
        self.oid = oid


def _array(values: np.ndarray, oid: int, elem_oid: int, fmt: str) -> PgArray:
    n = len(values)
    body = np.empty(n, dtype=[("len", ">i4"), ("v", fmt)])
    body["len"] = np.dtype(fmt).itemsize
    body["v"] = values
    header = struct.pack("!iiIii", 1, 0, elem_oid, n, 1)  # ndim, no NULLs, type, size, lbound
    return PgArray(header + body.tobytes(), oid)


def float8_array(values: Sequence[float | None]) -> PgArray:
    """``float8[]``; None becomes NaN (the query turns NaN back into NULL)."""
    return _array(np.array(values, dtype=np.float64), _FLOAT8_ARRAY, 701, ">f8")


def int4_array(values: Sequence[int]) -> PgArray:
    """``int4[]``; the caller has checked every value fits."""
    return _array(np.array(values, dtype=np.int64), _INT4_ARRAY, 23, ">i4")


class _Dumper(adapt.Dumper):
    format = pq.Format.BINARY

    def dump(self, obj: PgArray) -> bytes:  # type: ignore[override]
        return obj.data

    def get_key(self, obj: PgArray, format: adapt.PyFormat) -> int:  # type: ignore[override]
        return obj.oid

    def upgrade(self, obj: PgArray, format: adapt.PyFormat) -> adapt.Dumper:
        d = _Dumper(PgArray)
        d.oid = obj.oid
        return d


def register(conn: object) -> None:
    """Let ``conn`` send :class:`PgArray` parameters (use ``%b`` placeholders)."""
    conn.adapters.register_dumper(PgArray, _Dumper)  # type: ignore[attr-defined]
