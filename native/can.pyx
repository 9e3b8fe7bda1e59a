# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""CAN frame decoding, compiled (gateway._native.can); pure twin gateway/_pure/can.py.

The signal layout is compiled at construction into flat C arrays grouped by message key
(sorted keys, binary search per frame), so a batch decode is one loop over frames without the
GIL, writing ``(row, point, value)`` columns.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free

cdef extern from "modbus_helpers.h" nogil:
    double gw_scale(double raw, double scale, double bias)

EXTENDED = 0x80000000

from gateway._pure.can import dm1_dtcs, j1939_key


def split_j1939(uint32_t[:] ids, uint8_t[:] prio, uint32_t[:] pgn, uint8_t[:] sa,
                uint8_t[:] da) -> None:
    """Priority, PGN, source address and destination (255 = global for PDU2) of each id."""
    cdef Py_ssize_t i, n = ids.shape[0]
    cdef uint32_t can_id, p, pf
    if prio.shape[0] < n or pgn.shape[0] < n or sa.shape[0] < n or da.shape[0] < n:
        raise ValueError("output arrays are shorter than ids")
    with nogil:
        for i in range(n):
            can_id = ids[i] & 0x1FFFFFFF
            p = (can_id >> 8) & 0x3FFFF
            pf = (p >> 8) & 0xFF
            prio[i] = (can_id >> 26) & 7
            sa[i] = can_id & 0xFF
            if pf < 240:
                da[i] = p & 0xFF
                p &= 0x3FF00
            else:
                da[i] = 255
            pgn[i] = p


cdef inline uint32_t _key(uint32_t can_id, bint j1939) noexcept nogil:
    cdef uint32_t p
    if j1939 and (can_id & 0x80000000u):
        p = (can_id >> 8) & 0x3FFFF
        if ((p >> 8) & 0xFF) < 240:
            p &= 0x3FF00
        return p | 0x80000000u
    return can_id


cdef class SignalDecoder:
    """Extract mapped signals from batches of frames; see gateway._pure.can.SignalDecoder."""

    cdef uint32_t *_keys
    cdef Py_ssize_t *_first
    cdef int *_start
    cdef int *_length
    cdef int *_msb  # big-endian bit index of the MSB (Motorola), -1 for little-endian
    cdef bint *_signed
    cdef double *_scale
    cdef double *_offset
    cdef uint32_t *_pid
    cdef Py_ssize_t _n_keys
    cdef readonly Py_ssize_t n_signals, last_unmatched, last_short
    cdef readonly bint j1939
    cdef readonly list signals

    def __cinit__(self, *args, **kwargs):
        self._keys = NULL
        self._first = NULL
        self._start = self._length = self._msb = NULL
        self._signed = NULL
        self._scale = self._offset = NULL
        self._pid = NULL

    def __init__(self, signals, bint j1939=False):
        cdef Py_ssize_t n = len(signals), i, k
        for key, start, length, big, signed, scale, off, pid in signals:
            if not 1 <= length <= 64 or not 0 <= start <= 63 or pid < 0 or key < 0:
                raise ValueError(f"bad signal layout {(key, start, length, pid)}")
            if scale != scale:
                raise ValueError("scale must be a number")
        self.signals = list(signals)
        self.j1939 = j1939
        # Group by key in first-appearance order inside a key (same order as the pure twin).
        order = sorted(range(n), key=lambda j: (signals[j][0], j))
        keys = sorted({s[0] for s in signals})
        self._free()
        self._keys = <uint32_t *>malloc(max(len(keys), 1) * sizeof(uint32_t))
        self._first = <Py_ssize_t *>malloc((len(keys) + 1) * sizeof(Py_ssize_t))
        self._start = <int *>malloc(max(n, 1) * sizeof(int))
        self._length = <int *>malloc(max(n, 1) * sizeof(int))
        self._msb = <int *>malloc(max(n, 1) * sizeof(int))
        self._signed = <bint *>malloc(max(n, 1) * sizeof(bint))
        self._scale = <double *>malloc(max(n, 1) * sizeof(double))
        self._offset = <double *>malloc(max(n, 1) * sizeof(double))
        self._pid = <uint32_t *>malloc(max(n, 1) * sizeof(uint32_t))
        if (self._keys == NULL or self._first == NULL or self._start == NULL or self._pid == NULL
                or self._length == NULL or self._msb == NULL or self._signed == NULL
                or self._scale == NULL or self._offset == NULL):
            raise MemoryError()
        k = -1
        for i, j in enumerate(order):
            key, start, length, big, signed, scale, off, pid = signals[j]
            if k < 0 or self._keys[k] != key:
                k += 1
                self._keys[k] = key
                self._first[k] = i
            self._start[i] = start
            self._length[i] = length
            self._msb[i] = (start // 8) * 8 + (7 - start % 8) if big else -1
            self._signed[i] = bool(signed)
            self._scale[i] = scale
            self._offset[i] = off
            self._pid[i] = pid
        self._n_keys = len(keys)
        self._first[self._n_keys] = n
        self.n_signals = n
        self.last_unmatched = self.last_short = 0

    cdef void _free(self):
        free(self._keys); free(self._first); free(self._start); free(self._length)
        free(self._msb); free(self._signed); free(self._scale); free(self._offset)
        free(self._pid)
        self._keys = NULL

    def __dealloc__(self):
        self._free()

    def key(self, uint32_t can_id) -> int:
        return _key(can_id, self.j1939)

    cdef inline Py_ssize_t _find(self, uint32_t key) noexcept nogil:
        cdef Py_ssize_t lo = 0, hi = self._n_keys - 1, mid
        while lo <= hi:
            mid = (lo + hi) >> 1
            if self._keys[mid] < key:
                lo = mid + 1
            elif self._keys[mid] > key:
                hi = mid - 1
            else:
                return mid
        return -1

    def decode(self, uint32_t[:] ids, const uint8_t[:, :] data, const uint8_t[:] dlc,
               uint32_t[:] rows, uint32_t[:] points, double[:] values) -> int:
        """Decode frames ``0..len(ids)``; write one (row, point, value) per signal found."""
        cdef Py_ssize_t nf = ids.shape[0], i, s, k, n = 0, unmatched = 0, short = 0
        cdef Py_ssize_t cap = min(rows.shape[0], points.shape[0], values.shape[0])
        cdef uint64_t le, be, raw
        cdef int start, length, msb, size, b
        cdef double v
        cdef bint full = False
        if data.shape[0] < nf or dlc.shape[0] < nf or (nf and data.shape[1] < 8):
            raise ValueError("data must have a row of 8 bytes and dlc an entry per id")
        with nogil:
            for i in range(nf):
                k = self._find(_key(ids[i], self.j1939))
                if k < 0:
                    unmatched += 1
                    continue
                le = 0
                be = 0
                for b in range(8):
                    le |= (<uint64_t>data[i, b]) << (8 * b)
                    be = (be << 8) | data[i, b]
                size = 8 * dlc[i]
                for s in range(self._first[k], self._first[k + 1]):
                    if n >= cap:
                        full = True
                        break
                    start = self._start[s]
                    length = self._length[s]
                    msb = self._msb[s]
                    if msb >= 0:
                        if msb + length > size:
                            short += 1
                            continue
                        raw = be >> (64 - msb - length)
                    else:
                        if start + length > size:
                            short += 1
                            continue
                        raw = le >> start
                    if length < 64:
                        raw &= ((<uint64_t>1) << length) - 1
                    if self._signed[s] and (raw >> (length - 1)) & 1:
                        if length < 64:
                            raw |= ~(((<uint64_t>1) << length) - 1)
                        v = <double>(<int64_t>raw)
                    else:
                        v = <double>raw
                    rows[n] = <uint32_t>i
                    points[n] = self._pid[s]
                    values[n] = gw_scale(v, self._scale[s], self._offset[s])
                    n += 1
                if full:
                    break
        self.last_unmatched = unmatched
        self.last_short = short
        return n
