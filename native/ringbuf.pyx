# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Per-point ring buffers and window statistics (compiled twin of gateway._pure.ringbuf).

The ring is *mirrored*: every sample is stored twice, at slot ``i`` and ``i + capacity`` of two
``2 * capacity`` float64 arrays, so any window of at most ``capacity`` samples is one contiguous
slice. ``last`` and ``since`` return read-only numpy views into the storage (no copy) and the
statistics loops run over contiguous memory. Results equal the pure twin's.
"""

import numpy as np

from libc.math cimport fabs, sqrt, NAN

from gateway._pure.ringbuf import WindowStats

__all__ = ["RingBuffer", "WindowStats", "window_stats"]

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
    cdef object _ts_arr
    cdef object _val_arr
    cdef double[::1] _ts
    cdef double[::1] _val
    cdef Py_ssize_t _head  # slot (0 <= head < capacity) the next sample goes to
    cdef Py_ssize_t _count

    def __init__(self, Py_ssize_t capacity):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._ts_arr = np.zeros(2 * capacity, np.float64)
        self._val_arr = np.zeros(2 * capacity, np.float64)
        self._ts = self._ts_arr
        self._val = self._val_arr
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
        self._ts[h + c] = ts
        self._val[h] = value
        self._val[h + c] = value
        h += 1
        self._head = h if h < c else 0

    def push(self, double ts, double value):
        """Append one sample, overwriting the oldest one when full."""
        self._put(ts, value)
        if self._count < self.capacity:
            self._count += 1

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

    cdef Py_ssize_t _since_start(self, Py_ssize_t lo, Py_ssize_t hi, double t0) noexcept:
        """First index in ``[lo, hi)`` with ``ts > t0`` (upper bound; ``hi`` if none)."""
        cdef Py_ssize_t mid
        while lo < hi:
            mid = lo + (hi - lo) // 2
            if self._ts[mid] <= t0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef tuple _views(self, Py_ssize_t start, Py_ssize_t end):
        ts = self._ts_arr[start:end]
        val = self._val_arr[start:end]
        ts.flags.writeable = False
        val.flags.writeable = False
        return ts, val

    def last(self, Py_ssize_t n):
        """Read-only views ``(ts, values)`` of the newest ``n`` samples (fewer if not filled).

        The views alias the ring: they are valid until ``capacity - n`` more samples arrive.
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
        return _stats(&self._val[0] + start, end - start)
