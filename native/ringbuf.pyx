# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Per-point ring buffers and window statistics (compiled twin of gateway._pure.ringbuf).

The ring is *mirrored*: every sample is stored twice, at slot ``i`` and ``i + capacity`` of two
``2 * capacity`` float64 arrays, so any window of at most ``capacity`` samples is one contiguous
slice. ``last`` and ``since`` return read-only numpy views into the storage (no copy) and the
statistics loops run over contiguous memory. Results equal the pure twin's.

A :class:`RingBank` keeps the storage of many equal-capacity rings in a few large blocks (one
allocation per block instead of two arrays per ring), *compact* rather than mirrored: half the
memory, and a window that wraps around the end of a row comes back as a copy. It is meant for the
rings of all points (read rarely); the rings that windows read are grown into mirrored rings of
their own (``PointTable.ensure_capacity``). :func:`ingest` records a whole sample batch into a
list of rings, plus the last-value columns, in one C loop.
"""

import numpy as np

from libc.math cimport fabs, sqrt, NAN
from libc.stdint cimport int64_t

from gateway._pure.ringbuf import WindowStats, bank_rows_per_block

__all__ = ["RingBank", "RingBuffer", "WindowStats", "ingest", "window_stats"]

_EMPTY = WindowStats(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)


cdef object _stats(const double* x, Py_ssize_t n):
    """Two passes over a contiguous window: sums and extremes, then the corrected variance."""
    cdef Py_ssize_t i
    cdef double v, lo, hi, s = 0.0, sq = 0.0, mean, d, sd = 0.0, sdd = 0.0, var, rms, std
    cdef double peak, crest
    if n == 0:
        return _EMPTY
    lo = x[0]
    hi = x[0]
    for i in range(n):
        v = x[i]
        if v != v:
            return WindowStats(n, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        s += v
        sq += v * v
    mean = s / n
    rms = sqrt(sq / n)
    for i in range(n):
        d = x[i] - mean
        sd += d
        sdd += d * d
    # Corrected two-pass variance: the second term cancels the rounding error of the mean.
    var = (sdd - sd * sd / n) / n
    if var > 0.0:
        std = sqrt(var)
    elif var == var:
        std = 0.0
    else:
        std = NAN
    peak = fabs(lo) if fabs(lo) > fabs(hi) else fabs(hi)
    crest = peak / rms if rms > 0.0 else NAN
    return WindowStats(n, mean, lo, hi, rms, std, hi - lo, crest)


def window_stats(values):
    """Statistics of a 1-d float64 array (any array-like is converted first)."""
    cdef const double[::1] x
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"window_stats expects a 1-d array, got {arr.ndim} dimensions")
    x = arr
    if x.shape[0] == 0:
        return _EMPTY
    return _stats(&x[0], x.shape[0])


cdef class RingBuffer:
    """Fixed-capacity ring of ``(ts, value)`` float64 samples with zero-copy windows.

    Parameters
    ----------
    capacity : int
        Number of newest samples kept; older samples are overwritten.
    """

    cdef readonly Py_ssize_t capacity
    # Storage: ``_limit`` slots from ``_off`` on in a 1-d array, the ring's own (mirrored,
    # ``2 * capacity``) or a whole RingBank block shared with other rings (compact, ``capacity``;
    # no per-ring array objects: they would cost more than the samples of a small ring).
    # Windows are computed in mirrored coordinates ``[0, 2 * capacity)``; ``_phys`` folds them.
    cdef object _ts_arr
    cdef object _val_arr
    cdef Py_ssize_t _off
    cdef Py_ssize_t _limit
    cdef double* _ts
    cdef double* _val
    cdef Py_ssize_t _head  # slot (0 <= head < capacity) the next sample goes to
    cdef Py_ssize_t _count

    def __init__(self, Py_ssize_t capacity):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        ts = np.zeros(2 * capacity, np.float64)
        self._bind(capacity, ts, np.zeros(2 * capacity, np.float64), 0, True)

    cdef void _bind(self, Py_ssize_t capacity, object ts, object val, Py_ssize_t off, bint mirrored):
        """Use slots from ``off`` on of ``ts``/``val`` (1-d float64) as storage."""
        cdef double[::1] t = ts
        cdef double[::1] v = val
        self.capacity = capacity
        self._ts_arr = ts
        self._val_arr = val
        self._off = off
        self._limit = 2 * capacity if mirrored else capacity
        self._ts = &t[off]
        self._val = &v[off]
        self._head = 0
        self._count = 0

    def __len__(self):
        return self._count

    def __repr__(self):
        return f"RingBuffer(capacity={self.capacity}, len={self._count})"

    cdef inline void _put(self, double ts, double value) noexcept:
        cdef Py_ssize_t h = self._head
        cdef Py_ssize_t c = self.capacity
        self._ts[h] = ts
        self._val[h] = value
        if self._limit != c:
            self._ts[h + c] = ts
            self._val[h + c] = value
        h += 1
        self._head = h if h < c else 0

    cdef inline void _push(self, double ts, double value) noexcept:
        self._put(ts, value)
        if self._count < self.capacity:
            self._count += 1

    def push(self, double ts, double value):
        """Append one sample, overwriting the oldest one when full."""
        self._push(ts, value)

    def extend(self, ts, values):
        """Append samples in time order (bulk :meth:`push`)."""
        cdef const double[::1] t = np.ascontiguousarray(ts, dtype=np.float64).reshape(-1)
        cdef const double[::1] v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        cdef Py_ssize_t m = t.shape[0]
        cdef Py_ssize_t c = self.capacity
        cdef Py_ssize_t i, skip
        if v.shape[0] != m:
            raise ValueError(f"extend: {m} timestamps but {v.shape[0]} values")
        if m == 0:
            return
        skip = m - c if m > c else 0  # only the newest `capacity` samples can survive
        self._head = (self._head + skip) % c
        for i in range(skip, m):
            self._put(t[i], v[i])
        self._count = self._count + m if self._count + m < c else c

    cdef Py_ssize_t _start(self, Py_ssize_t n) except -1:
        """Slice start of the newest ``n`` samples; the end is always ``head + capacity``."""
        if n < 0:
            raise ValueError(f"window size must be >= 0, got {n}")
        if n > self._count:
            n = self._count
        return self._head + self.capacity - n

    cdef inline Py_ssize_t _phys(self, Py_ssize_t i) noexcept:
        """Storage slot of window coordinate ``i`` (identity when mirrored)."""
        return i - self._limit if i >= self._limit else i

    cdef Py_ssize_t _since_start(self, Py_ssize_t lo, Py_ssize_t hi, double t0) noexcept:
        """First index in ``[lo, hi)`` with ``ts > t0`` (upper bound; ``hi`` if none)."""
        cdef Py_ssize_t mid
        while lo < hi:
            mid = lo + (hi - lo) // 2
            if self._ts[self._phys(mid)] <= t0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef tuple _views(self, Py_ssize_t start, Py_ssize_t end):
        cdef Py_ssize_t a = self._off + self._phys(start)
        cdef Py_ssize_t lim = self._limit
        if start == end or end <= lim or start >= lim:  # one contiguous slice: no copy
            ts = self._ts_arr[a : a + end - start]
            val = self._val_arr[a : a + end - start]
        else:  # a compact ring's window that wraps: two pieces, one copy
            ts = np.concatenate(
                (self._ts_arr[a : self._off + lim], self._ts_arr[self._off : self._off + end - lim])
            )
            val = np.concatenate(
                (self._val_arr[a : self._off + lim], self._val_arr[self._off : self._off + end - lim])
            )
        ts.flags.writeable = False
        val.flags.writeable = False
        return ts, val

    def last(self, Py_ssize_t n):
        """Read-only views ``(ts, values)`` of the newest ``n`` samples (fewer if not filled).

        The views alias the ring: they are valid until ``capacity - n`` more samples arrive. (A
        window of a compact RingBank ring that wraps around the end of its row is a copy.)
        """
        return self._views(self._start(n), self._head + self.capacity)

    def since(self, double t0):
        """Read-only views ``(ts, values)`` of the samples with ``ts > t0``."""
        cdef Py_ssize_t end = self._head + self.capacity
        return self._views(self._since_start(self._start(self._count), end, t0), end)

    def stats(self, n=None, since=None):
        """:class:`WindowStats` of the newest ``n`` samples and/or the samples with ``ts > since``.

        With both given, the window is the newest ``n`` samples restricted to ``ts > since``; with
        neither, the whole buffer.
        """
        cdef Py_ssize_t end = self._head + self.capacity
        cdef Py_ssize_t start = self._start(self._count if n is None else <Py_ssize_t>n)
        if since is not None:
            start = self._since_start(start, end, <double>since)
        if end <= self._limit or start >= self._limit:
            return _stats(self._val + self._phys(start), end - start)
        return window_stats(self._views(start, end)[1])


cdef class RingBank:
    """Storage of many rings of one capacity, allocated in large blocks rather than per ring.

    :meth:`new_ring` hands out a :class:`RingBuffer` whose storage is one row of a block; the
    ring behaves exactly like a standalone one, except that its row is compact (not mirrored:
    half the memory) so a window that wraps around the end of the row is returned as a copy.
    Blocks are never moved, so views stay valid.
    """

    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t rows_per_block
    cdef Py_ssize_t _rings
    cdef object _ts_block
    cdef object _val_block

    def __init__(self, Py_ssize_t capacity):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.rows_per_block = bank_rows_per_block(capacity)
        self._rings = 0

    def __len__(self):
        return self._rings

    def __repr__(self):
        return f"RingBank(capacity={self.capacity}, rings={self._rings})"

    def new_ring(self):
        """A new empty ring backed by the next free row of the bank."""
        cdef Py_ssize_t row = self._rings % self.rows_per_block
        cdef RingBuffer ring = RingBuffer.__new__(RingBuffer)
        if row == 0:
            size = self.rows_per_block * self.capacity
            self._ts_block = np.zeros(size, np.float64)
            self._val_block = np.zeros(size, np.float64)
        ring._bind(self.capacity, self._ts_block, self._val_block, row * self.capacity, False)
        self._rings += 1
        return ring


def ingest(list rings, ids, ts, values, quality, int good, last_value, last_ts, last_quality):
    """Record one sample batch: see ``gateway._pure.ringbuf.ingest`` (same contract, one C loop)."""
    ids = np.asarray(ids)
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"ingest: point ids must be integers, got {ids.dtype}")
    cdef const int64_t[::1] pid = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    cdef const double[::1] t = np.ascontiguousarray(ts, dtype=np.float64).reshape(-1)
    cdef const double[::1] v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    cdef const unsigned char[::1] q = np.ascontiguousarray(quality, dtype=np.uint8).reshape(-1)
    cdef double[::1] lv = last_value
    cdef double[::1] lt = last_ts
    cdef unsigned char[::1] lq = last_quality
    cdef Py_ssize_t n = pid.shape[0]
    cdef Py_ssize_t points = len(rings)
    cdef Py_ssize_t i
    cdef int64_t p
    cdef RingBuffer ring
    if not (t.shape[0] == v.shape[0] == q.shape[0] == n):
        raise ValueError(
            f"ingest: columns differ in length (ids {n}, ts {t.shape[0]}, values {v.shape[0]}, "
            f"quality {q.shape[0]})"
        )
    if not (lv.shape[0] == lt.shape[0] == lq.shape[0] == points):
        raise ValueError(f"ingest: last-value columns do not match the {points} rings")
    # Check everything before writing anything: a bad batch leaves the table untouched.
    for i in range(n):
        p = pid[i]
        if p < 0 or p >= points:
            raise IndexError(f"ingest: point id {p} out of range ({points} points)")
        if q[i] == good and not isinstance(rings[p], RingBuffer):
            raise TypeError(f"ingest: rings[{p}] is {type(rings[p]).__name__}, not RingBuffer")
    for i in range(n):
        p = pid[i]
        if q[i] == good:
            ring = <RingBuffer>rings[p]
            ring._push(t[i], v[i])
        lv[p] = v[i]
        lt[p] = t[i]
        lq[p] = q[i]
