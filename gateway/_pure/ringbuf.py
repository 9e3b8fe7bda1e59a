"""Pure-Python twin of ``native/ringbuf.pyx``: per-point ring buffers and window statistics.

The ring is *mirrored*: every sample is stored twice, at slot ``i`` and ``i + capacity`` of two
``2 * capacity`` float64 arrays. Any window of at most ``capacity`` consecutive samples is then one
contiguous slice, so :meth:`RingBuffer.last` and :meth:`RingBuffer.since` return read-only numpy
views into the storage instead of copies, and window statistics run over contiguous memory.

Timestamps are expected in non-decreasing order (a point's samples are appended in time order);
:meth:`RingBuffer.since` relies on it for its binary search. A sample that goes back in time (a
wall-clock step) is stored as given rather than dropped; windows around it are then approximate.

A :class:`RingBank` keeps the storage of many equal-capacity rings in a few large blocks (one
allocation per block instead of two arrays per ring), *compact* rather than mirrored: half the
memory, and a window that wraps around the end of a row comes back as a copy. It is meant for the
rings of all points (read rarely); the rings that windows read are grown into mirrored rings of
their own (``PointTable.ensure_capacity``). :func:`ingest` records a whole sample batch into a
list of rings, plus the last-value columns, in one call.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

__all__ = ["RingBank", "RingBuffer", "WindowStats", "bank_rows_per_block", "ingest", "window_stats"]


class WindowStats(NamedTuple):
    """Statistics of one window of values.

    ``std`` is the population standard deviation, ``p2p`` is ``max - min`` and ``crest`` is
    ``max(|x|) / rms``. An empty window has ``count == 0`` and NaN everywhere else; a window of
    zeros has ``crest`` NaN. A NaN value anywhere in the window makes every field but ``count`` NaN.
    """

    count: int  # type: ignore[assignment]  # shadows tuple.count; the name is the contract
    mean: float
    min: float
    max: float
    rms: float
    std: float
    p2p: float
    crest: float


_NAN = float("nan")
_EMPTY = WindowStats(0, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)


def _stats(x: FloatArray) -> WindowStats:
    n = x.shape[0]
    if n == 0:
        return _EMPTY
    lo = float(x.min())
    hi = float(x.max())
    if lo != lo or hi != hi:  # NaN anywhere propagates to every statistic (same as the C loop)
        return WindowStats(n, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)
    with np.errstate(all="ignore"):  # overflow to inf is a valid result, as in the C loop
        mean = float(x.sum()) / n
        rms = float(np.sqrt(float(np.dot(x, x)) / n))
        # Corrected two-pass variance: the second term cancels the rounding error of the mean.
        d = x - mean
        sd = float(d.sum())
        var = (float(np.dot(d, d)) - sd * sd / n) / n
    std = math.sqrt(var) if var > 0.0 else (0.0 if var == var else _NAN)
    peak = max(abs(lo), abs(hi))
    crest = peak / rms if rms > 0.0 else _NAN
    return WindowStats(n, mean, lo, hi, rms, std, hi - lo, crest)


def window_stats(values: npt.ArrayLike) -> WindowStats:
    """Statistics of a 1-d float64 array (any array-like is converted first)."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"window_stats expects a 1-d array, got {x.ndim} dimensions")
    return _stats(x)


class RingBuffer:
    """Fixed-capacity ring of ``(ts, value)`` float64 samples with zero-copy windows.

    Parameters
    ----------
    capacity : int
        Number of newest samples kept; older samples are overwritten.
    """

    __slots__ = ("capacity", "_ts", "_val", "_limit", "_head", "_count")

    def __init__(self, capacity: int) -> None:
        capacity = int(capacity)
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._bind(capacity, np.zeros(2 * capacity, np.float64), np.zeros(2 * capacity, np.float64))

    def _bind(self, capacity: int, ts_row: FloatArray, val_row: FloatArray) -> None:
        """Use ``ts_row``/``val_row`` as the storage: ``2 * capacity`` slots (mirrored, the
        ring's own) or ``capacity`` (compact, a row of a RingBank block)."""
        self.capacity = capacity
        self._ts = ts_row
        self._val = val_row
        # Windows are computed in mirrored coordinates [0, 2 * capacity); a compact ring folds
        # them at _limit.
        self._limit = ts_row.shape[0]
        self._head = 0  # slot (0 <= head < capacity) the next sample goes to
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RingBuffer(capacity={self.capacity}, len={self._count})"

    def push(self, ts: float, value: float) -> None:
        """Append one sample, overwriting the oldest one when full."""
        h = self._head
        c = self.capacity
        self._ts[h] = ts
        self._val[h] = value
        if self._limit != c:
            self._ts[h + c] = ts
            self._val[h + c] = value
        self._head = h + 1 if h + 1 < c else 0
        if self._count < c:
            self._count += 1

    def extend(self, ts: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Append samples in time order (bulk :meth:`push`)."""
        t = np.ascontiguousarray(ts, dtype=np.float64).reshape(-1)
        v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        m = t.shape[0]
        if v.shape[0] != m:
            raise ValueError(f"extend: {m} timestamps but {v.shape[0]} values")
        if m == 0:
            return
        c = self.capacity
        k = min(m, c)  # only the newest `capacity` samples can survive
        slots = (self._head + (m - k) + np.arange(k)) % c
        self._ts[slots] = t[m - k :]
        self._val[slots] = v[m - k :]
        if self._limit != c:
            self._ts[slots + c] = t[m - k :]
            self._val[slots + c] = v[m - k :]
        self._head = (self._head + m) % c
        self._count = min(self._count + m, c)

    def _window(self, n: int) -> tuple[int, int]:
        """Bounds of the newest ``n`` samples in mirrored coordinates (see ``_piece``)."""
        if n < 0:
            raise ValueError(f"window size must be >= 0, got {n}")
        n = min(n, self._count)
        end = self._head + self.capacity
        return end - n, end

    def _since_start(self, start: int, end: int, t0: float) -> int:
        return start + int(np.searchsorted(self._piece(self._ts, start, end), t0, side="right"))

    def _piece(self, arr: FloatArray, start: int, end: int) -> FloatArray:
        """Window ``[start, end)`` of ``arr``: a slice, or for a compact ring's window that
        wraps around the end of its row, two pieces copied into one array."""
        lim = self._limit
        if start == end or end <= lim:
            return arr[start:end]
        if start >= lim:
            return arr[start - lim : end - lim]
        return np.concatenate((arr[start:lim], arr[: end - lim]))

    def _views(self, start: int, end: int) -> tuple[FloatArray, FloatArray]:
        ts = self._piece(self._ts, start, end)
        val = self._piece(self._val, start, end)
        ts.flags.writeable = False
        val.flags.writeable = False
        return ts, val

    def last(self, n: int) -> tuple[FloatArray, FloatArray]:
        """Read-only views ``(ts, values)`` of the newest ``n`` samples (fewer if not filled).

        The views alias the ring: they are valid until ``capacity - n`` more samples arrive. (A
        window of a compact RingBank ring that wraps around the end of its row is a copy.)
        """
        return self._views(*self._window(operator.index(n)))

    def since(self, t0: float) -> tuple[FloatArray, FloatArray]:
        """Read-only views ``(ts, values)`` of the samples with ``ts > t0``."""
        start, end = self._window(self._count)
        return self._views(self._since_start(start, end, float(t0)), end)

    def stats(self, n: int | None = None, since: float | None = None) -> WindowStats:
        """:class:`WindowStats` of the newest ``n`` samples and/or the samples with ``ts > since``.

        With both given, the window is the newest ``n`` samples restricted to ``ts > since``; with
        neither, the whole buffer.
        """
        start, end = self._window(self._count if n is None else operator.index(n))
        if since is not None:
            start = self._since_start(start, end, float(since))
        return _stats(self._piece(self._val, start, end))


_BLOCK_BYTES = 1 << 19  # per block and column: large enough for few allocations, small enough
# that a half-used last block costs little (untouched pages of a fresh block are not resident)


def bank_rows_per_block(capacity: int) -> int:
    """Rows of one :class:`RingBank` block for rings of ``capacity`` samples (both twins)."""
    return max(1, _BLOCK_BYTES // (8 * capacity))


class RingBank:
    """Storage of many rings of one capacity, allocated in large blocks rather than per ring.

    :meth:`new_ring` hands out a :class:`RingBuffer` whose storage is one row of a block; the
    ring behaves exactly like a standalone one, except that its row is compact (not mirrored:
    half the memory) so a window that wraps around the end of the row is returned as a copy.
    Blocks are never moved, so views stay valid.
    """

    __slots__ = ("capacity", "rows_per_block", "_rings", "_ts_block", "_val_block")

    def __init__(self, capacity: int) -> None:
        capacity = int(capacity)
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.rows_per_block = bank_rows_per_block(capacity)
        self._rings = 0
        self._ts_block: FloatArray = np.empty((0, 0))
        self._val_block: FloatArray = np.empty((0, 0))

    def __len__(self) -> int:
        return self._rings

    def __repr__(self) -> str:
        return f"RingBank(capacity={self.capacity}, rings={self._rings})"

    def new_ring(self) -> RingBuffer:
        """A new empty ring backed by the next free row of the bank."""
        row = self._rings % self.rows_per_block
        if row == 0:
            shape = (self.rows_per_block, self.capacity)
            self._ts_block = np.zeros(shape, np.float64)
            self._val_block = np.zeros(shape, np.float64)
        ring = RingBuffer.__new__(RingBuffer)
        ring._bind(self.capacity, self._ts_block[row], self._val_block[row])
        self._rings += 1
        return ring


_PUSH_BATCH_MAX = 256  # up to this many samples, pushing one by one beats grouping by point


def ingest(
    rings: list[RingBuffer],
    ids: npt.ArrayLike,
    ts: npt.ArrayLike,
    values: npt.ArrayLike,
    quality: npt.ArrayLike,
    good: int,
    last_value: FloatArray,
    last_ts: FloatArray,
    last_quality: npt.NDArray[np.uint8],
) -> None:
    """Record one sample batch (in time order) into ``rings`` and the last-value columns.

    Samples whose quality equals ``good`` are appended to ``rings[id]`` in batch order; every
    sample, good or not, updates ``last_value``/``last_ts``/``last_quality`` at its id (the last
    occurrence of a repeated id wins). Ids and lengths are checked before anything is written, so
    a bad batch leaves everything untouched; the rings must be this module's :class:`RingBuffer`
    (the compiled twin checks that too, and raises TypeError).
    """
    pid = np.asarray(ids).reshape(-1)
    t = np.asarray(ts, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    q = np.asarray(quality, dtype=np.uint8).reshape(-1)
    n, points = pid.shape[0], len(rings)
    if not (t.shape[0] == v.shape[0] == q.shape[0] == n):
        raise ValueError(
            f"ingest: columns differ in length (ids {n}, ts {t.shape[0]}, values {v.shape[0]}, "
            f"quality {q.shape[0]})"
        )
    if not (last_value.shape[0] == last_ts.shape[0] == last_quality.shape[0] == points):
        raise ValueError(f"ingest: last-value columns do not match the {points} rings")
    if n == 0:
        return
    if pid.dtype.kind not in "iu":
        raise TypeError(f"ingest: point ids must be integers, got {pid.dtype}")
    bad = (pid < 0) | (pid >= points)
    if bad.any():
        raise IndexError(f"ingest: point id {pid[bad][0]} out of range ({points} points)")
    ok = q == good
    gid = pid[ok]
    if n <= _PUSH_BATCH_MAX:
        for p, tt, vv in zip(gid.tolist(), t[ok].tolist(), v[ok].tolist(), strict=True):
            rings[p].push(tt, vv)
    else:
        # A long batch (bursts, high-rate channels): one bulk extend per point, in time order.
        order = np.argsort(gid, kind="stable")
        gid, gt, gv = gid[order], t[ok][order], v[ok][order]
        starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
        ends = np.r_[starts[1:], len(gid)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            rings[int(gid[a])].extend(gt[a:b], gv[a:b])
    # Fancy assignment keeps the last occurrence of repeated ids: batches are in time order.
    last_value[pid] = v
    last_ts[pid] = t
    last_quality[pid] = q
