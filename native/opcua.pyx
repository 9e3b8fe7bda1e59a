# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""OPC UA binary decoding of the hot path, compiled (gateway._native.opcua).

Same names, results and errors as the pure twin gateway/_pure/opcua.py (its docstring says what
is decoded and how). Here a message is walked once by a C cursor over the bytes, client handles
are found by binary search in a sorted C array, and rows go straight into typed columns; Python
objects are made only for the rare values that go to ``last_other``.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, INT64_MIN
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from libc.math cimport NAN

GOOD, UNCERTAIN, BAD = 0, 1, 2
MAX_ARRAY = 1 << 20
MAX_DEPTH = 16
PUBLISH_RESPONSE, READ_RESPONSE, SERVICE_FAULT = 829, 634, 397
DATA_CHANGE, EVENT_LIST, STATUS_CHANGE = 811, 916, 820

from gateway._pure.opcua import max_rows, quality_of, ticks_to_epoch

cdef enum:
    _MAX_ARRAY = 1 << 20
    _MAX_DEPTH = 16
    _PUBLISH = 829
    _READ = 634
    _FAULT = 397
    _DATA_CHANGE = 811
    _EVENTS = 916
    _STATUS_CHANGE = 820
    _OTHER = 0x100  # type flag: not a numeric scalar

cdef int64_t _EPOCH_TICKS = 116444736000000000
# Wire size of the fixed-size Variant types (0: walked); index = builtin type id.
cdef int[26] _FIXED = [0, 1, 1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 0, 8, 16, 0, 0, 0, 0, 4,
                       0, 0, 0, 0, 0, 0]
cdef int[26] _SCALAR = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1,
                        0, 0, 0, 0, 0, 0]


cdef struct Cur:
    const uint8_t *buf
    Py_ssize_t pos
    Py_ssize_t end
    Py_ssize_t vend


cdef struct Out:
    uint32_t *points
    double *values
    double *src
    double *srv
    uint8_t *quality
    Py_ssize_t cap


cdef inline double _epoch(int64_t ticks) noexcept nogil:
    if ticks >= INT64_MIN + _EPOCH_TICKS:
        return <double>(ticks - _EPOCH_TICKS) / 1e7
    # Below this the difference leaves int64; long double holds it exactly (rare, hostile).
    return <double>(<long double>ticks - <long double>_EPOCH_TICKS) / 1e7


cdef inline uint32_t _le32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _le64(const uint8_t *p) noexcept nogil:
    return _le32(p) | (<uint64_t>_le32(p + 4) << 32)


cdef object _fail(Cur *c, str what):
    return ValueError(f"OPC UA message: {what} at byte {c.pos}")


cdef inline Py_ssize_t _need(Cur *c, Py_ssize_t n, str what) except -1:
    cdef Py_ssize_t p = c.pos
    if n < 0 or n > c.end - p:
        raise _fail(c, f"{what} needs {n} bytes, {c.end - p} left")
    c.pos = p + n
    return p


cdef inline int _u8(Cur *c, str what) except -1:
    if c.pos >= c.end:
        _need(c, 1, what)
    c.pos += 1
    return c.buf[c.pos - 1]


cdef inline int64_t _u32(Cur *c, str what) except -1:
    if c.end - c.pos < 4:
        _need(c, 4, what)
    c.pos += 4
    return _le32(c.buf + c.pos - 4)


cdef inline int _i64(Cur *c, int64_t *out, str what) except -1:
    if c.end - c.pos < 8:
        _need(c, 8, what)
    out[0] = <int64_t>_le64(c.buf + c.pos)
    c.pos += 8
    return 0


cdef Py_ssize_t _length(Cur *c, str what, Py_ssize_t min_size) except -2:
    """An array length: -1 (null) is 0; longer than the bytes left or MAX_ARRAY fails."""
    if c.end - c.pos < 4:
        _need(c, 4, what)
    cdef int32_t n = <int32_t>_le32(c.buf + c.pos)
    c.pos += 4
    if n == -1:
        return 0
    if n < -1 or n > _MAX_ARRAY or n * min_size > c.end - c.pos:
        c.pos -= 4
        raise _fail(c, f"{what} length {n} is out of bounds")
    return n


cdef inline int _string(Cur *c, str what) except -1:
    _need(c, _length(c, what, 1), what)
    return 0


cdef int64_t _node_id(Cur *c, str what) except -2:
    """Skip a NodeId; return its numeric id in namespace 0 (-1 for any other)."""
    cdef int enc = _u8(c, what)
    cdef int kind = enc & 0x3F
    cdef int64_t ident = -1, ns = 0
    if kind == 0:
        ident = _u8(c, what)
    elif kind == 1:
        ns = _u8(c, what)
        _need(c, 2, what)
        ident = c.buf[c.pos - 2] | (c.buf[c.pos - 1] << 8)
    elif kind == 2:
        _need(c, 2, what)
        ns = c.buf[c.pos - 2] | (c.buf[c.pos - 1] << 8)
        ident = _u32(c, what)
    elif kind == 3 or kind == 5:
        _need(c, 2, what)
        _string(c, what)
        ident = -1
    elif kind == 4:
        _need(c, 18, what)
        ident = -1
    else:
        c.pos -= 1
        raise _fail(c, f"{what} has NodeId encoding {enc:#x}")
    if enc & 0x80:
        _string(c, what)
        ident = -1
    if enc & 0x40:
        _need(c, 4, what)
        ident = -1
    return ident if ns == 0 else -1


cdef int _diagnostic(Cur *c, int depth) except -1:
    cdef int mask
    while True:
        if depth > _MAX_DEPTH:
            raise _fail(c, "DiagnosticInfo nested too deep")
        mask = _u8(c, "DiagnosticInfo")
        if mask & 0x01:
            _need(c, 4, "DiagnosticInfo")
        if mask & 0x02:
            _need(c, 4, "DiagnosticInfo")
        if mask & 0x08:
            _need(c, 4, "DiagnosticInfo")
        if mask & 0x04:
            _need(c, 4, "DiagnosticInfo")
        if mask & 0x10:
            _string(c, "DiagnosticInfo")
        if mask & 0x20:
            _need(c, 4, "DiagnosticInfo")
        if not mask & 0x40:
            return 0
        depth += 1


cdef int _diagnostics(Cur *c) except -1:
    cdef Py_ssize_t i
    for i in range(_length(c, "DiagnosticInfos", 1)):
        _diagnostic(c, 0)
    return 0


cdef int _extension_object(Cur *c) except -1:
    _node_id(c, "ExtensionObject")
    cdef int enc = _u8(c, "ExtensionObject")
    if enc == 1 or enc == 2:
        _string(c, "ExtensionObject body")
    elif enc != 0:
        c.pos -= 1
        raise _fail(c, f"ExtensionObject has body encoding {enc}")
    return 0


cdef int _skip_value(Cur *c, int t, int depth) except -1:
    """Skip one non-array value of builtin type ``t``."""
    cdef int mask
    cdef double v
    if t <= 25 and _FIXED[t]:
        _need(c, _FIXED[t], "Variant")
    elif t == 12 or t == 15 or t == 16:
        _string(c, "Variant")
    elif t == 17 or t == 18:
        _node_id(c, "Variant")
    elif t == 20:
        _need(c, 2, "QualifiedName")
        _string(c, "QualifiedName")
    elif t == 21:
        mask = _u8(c, "LocalizedText")
        if mask & 1:
            _string(c, "LocalizedText")
        if mask & 2:
            _string(c, "LocalizedText")
    elif t == 22:
        _extension_object(c)
    elif t == 23:
        _data_value(c, depth + 1, &v, NULL, NULL, NULL)
    elif t == 24:
        _variant(c, depth + 1, &v)
    elif t == 25:
        _diagnostic(c, depth + 1)
    else:
        raise _fail(c, f"Variant has unknown type {t}")
    return 0


cdef int _variant(Cur *c, int depth, double *value) except -1:
    """Read a Variant into ``value``; return its type id, | _OTHER unless a numeric scalar."""
    cdef int mask, t, size
    cdef Py_ssize_t n, i
    cdef const uint8_t *p
    cdef uint32_t u32
    cdef uint64_t u64
    cdef float f
    if depth > _MAX_DEPTH:
        raise _fail(c, "Variant nested too deep")
    mask = _u8(c, "Variant")
    t = mask & 0x3F
    if t > 25:
        c.pos -= 1
        raise _fail(c, f"Variant has unknown type {t}")
    value[0] = NAN
    if mask & 0x80:
        size = _FIXED[t]
        n = _length(c, "Variant array", size if size else (1 if t else 0))
        if size:
            _need(c, n * size, "Variant array")
        elif t:
            for i in range(n):
                _skip_value(c, t, depth)
        if mask & 0x40:
            _need(c, 4 * _length(c, "ArrayDimensions", 4), "ArrayDimensions")
        return t | _OTHER
    if mask & 0x40:
        c.pos -= 1
        raise _fail(c, "scalar Variant has ArrayDimensions")
    if t == 0:
        return 0
    if not _SCALAR[t]:
        _skip_value(c, t, depth)
        return t | _OTHER
    size = _FIXED[t]
    if c.end - c.pos < size:
        _need(c, size, "Variant")
    p = c.buf + c.pos
    c.pos += size
    if t == 1:
        value[0] = 1.0 if p[0] else 0.0
    elif t == 2:
        value[0] = <double>(<signed char>p[0])
    elif t == 3:
        value[0] = p[0]
    elif t == 4:
        value[0] = <double>(<short>(p[0] | (p[1] << 8)))
    elif t == 5:
        value[0] = <double>(p[0] | (p[1] << 8))
    elif t == 6:
        value[0] = <double>(<int32_t>_le32(p))
    elif t == 7 or t == 19:
        value[0] = <double>_le32(p)
    elif t == 8:
        value[0] = <double>(<int64_t>_le64(p))
    elif t == 9:
        value[0] = <double>_le64(p)
    elif t == 10:
        u32 = _le32(p)
        memcpy(&f, &u32, 4)
        value[0] = f
    elif t == 11:
        u64 = _le64(p)
        memcpy(value, &u64, 8)
    elif t == 13:
        value[0] = _epoch(<int64_t>_le64(p))
    return t


cdef int _data_value(Cur *c, int depth, double *value, uint32_t *status, double *src,
                     double *srv) except -1:
    """Read a DataValue; return its Variant's type (see _variant). NULL outputs are skipped."""
    cdef int mask = _u8(c, "DataValue"), t = 0
    cdef int64_t ticks
    cdef uint32_t st = 0
    cdef double s1 = NAN, s2 = NAN
    value[0] = NAN
    if mask & 0x01:
        t = _variant(c, depth, value)
    c.vend = c.pos
    if mask & 0x02:
        st = <uint32_t>_u32(c, "DataValue")
    if mask & 0x04:
        _i64(c, &ticks, "DataValue")
        s1 = _epoch(ticks)
    if mask & 0x10:
        _need(c, 2, "DataValue")
    if mask & 0x08:
        _i64(c, &ticks, "DataValue")
        s2 = _epoch(ticks)
    if mask & 0x20:
        _need(c, 2, "DataValue")
    if status != NULL:
        status[0] = st
        src[0] = s1
        srv[0] = s2
    return t


cdef class NotificationDecoder:
    """Decode PublishResponses and ReadResponses; see gateway._pure.opcua.NotificationDecoder."""

    cdef uint32_t *_handles
    cdef uint32_t *_pids
    cdef readonly Py_ssize_t n_handles
    cdef readonly dict by_handle
    cdef readonly uint32_t service_result, request_handle, subscription_id, sequence_number
    cdef readonly double publish_time
    cdef readonly bint more_notifications
    cdef readonly list available_sequence_numbers, last_other
    cdef readonly int64_t status_change
    cdef readonly Py_ssize_t last_events, last_unknown

    def __cinit__(self, *args, **kwargs):
        self._handles = NULL
        self._pids = NULL

    def __init__(self, handles):
        by_handle = {}
        for handle, pid in handles:
            if not 0 <= handle <= 0xFFFFFFFF or not 0 <= pid <= 0xFFFFFFFF:
                raise ValueError(f"handle and point id must be uint32: {(handle, pid)}")
            if handle in by_handle:
                raise ValueError(f"client handle {handle} is mapped twice")
            by_handle[handle] = pid
        cdef Py_ssize_t n = len(by_handle), i
        free(self._handles)
        free(self._pids)
        self._handles = <uint32_t *>malloc(max(n, 1) * sizeof(uint32_t))
        self._pids = <uint32_t *>malloc(max(n, 1) * sizeof(uint32_t))
        if self._handles == NULL or self._pids == NULL:
            raise MemoryError()
        for i, handle in enumerate(sorted(by_handle)):
            self._handles[i] = handle
            self._pids[i] = by_handle[handle]
        self.by_handle = by_handle
        self.n_handles = n
        self._reset()

    def __dealloc__(self):
        free(self._handles)
        free(self._pids)

    cdef void _reset(self):
        self.service_result = self.request_handle = 0
        self.subscription_id = self.sequence_number = 0
        self.publish_time = NAN
        self.more_notifications = False
        self.available_sequence_numbers = []
        self.status_change = -1
        self.last_events = self.last_unknown = 0
        self.last_other = []

    cdef inline Py_ssize_t _find(self, uint32_t handle) noexcept nogil:
        cdef Py_ssize_t lo = 0, hi = self.n_handles - 1, mid
        while lo <= hi:
            mid = (lo + hi) >> 1
            if self._handles[mid] < handle:
                lo = mid + 1
            elif self._handles[mid] > handle:
                hi = mid - 1
            else:
                return mid
        return -1

    cdef int _open(self, Cur *c, int want) except -1:
        """Frame, type id and ResponseHeader; 0 for a ServiceFault (service_result is set)."""
        cdef Py_ssize_t at, i
        cdef int64_t tid, ticks
        cdef uint32_t size
        self._reset()
        if c.end >= 3 and c.buf[0] == 77 and c.buf[1] == 83 and c.buf[2] == 71:  # MSG
            _need(c, 4, "MSG header")
            if c.buf[3] != 70:  # 'F'
                c.pos = 3
                raise _fail(c, "only final MSG chunks (F) are decoded; reassemble C, drop A")
            size = <uint32_t>_u32(c, "MSG header")
            if size != c.end:
                c.pos = 4
                raise _fail(c, f"MSG size {size} != {c.end} bytes given")
            _need(c, 16, "MSG header")
        at = c.pos
        tid = _node_id(c, "type id")
        if tid != want and tid != _FAULT:
            c.pos = at
            raise _fail(c, f"type id {tid} is not the expected {want} (or a ServiceFault)")
        _i64(c, &ticks, "ResponseHeader")
        self.request_handle = <uint32_t>_u32(c, "ResponseHeader")
        self.service_result = <uint32_t>_u32(c, "ResponseHeader")
        _diagnostic(c, 0)
        for i in range(_length(c, "StringTable", 4)):
            _string(c, "StringTable")
        _extension_object(c)
        return 0 if tid == _FAULT else 1

    cdef int _row(self, Cur *c, Py_ssize_t n, uint32_t pid, Out *o) except -1:
        cdef Py_ssize_t at = c.pos
        cdef double v, src, srv
        cdef uint32_t status
        cdef int t, q
        if n >= o.cap:
            raise _fail(c, f"output columns hold {o.cap} rows; the message has more")
        t = _data_value(c, 0, &v, &status, &src, &srv)
        q = (status >> 30) & 3
        if q > 2:
            q = 2
        if t & _OTHER:
            self.last_other.append((n, t & 0xFF, at + 1, c.vend - at - 1))
        o.points[n] = pid
        o.values[n] = NAN if q == 2 else v
        o.src[n] = src
        o.srv[n] = srv
        o.quality[n] = q
        return 0

    def decode_publish(self, data, uint32_t[::1] points, double[::1] values,
                       double[::1] source_ts, double[::1] server_ts, uint8_t[::1] quality) -> int:
        """Decode one PublishResponse; return the number of rows written."""
        cdef Out o = _columns(points, values, source_ts, server_ts, quality)
        cdef const unsigned char[::1] view = _byteview(data)
        cdef Cur c, body
        cdef Py_ssize_t n = 0, i, j, k, count, items, size
        cdef int64_t tid, ticks
        cdef int enc
        cdef uint32_t handle
        cdef double v
        c.buf = &view[0] if view.shape[0] else <const uint8_t *>b""
        c.pos = 0
        c.end = view.shape[0]
        c.vend = 0
        if not self._open(&c, _PUBLISH):
            return 0
        self.subscription_id = <uint32_t>_u32(&c, "PublishResponse")
        count = _length(&c, "AvailableSequenceNumbers", 4)
        self.available_sequence_numbers = [
            _u32(&c, "AvailableSequenceNumbers") for i in range(count)]
        self.more_notifications = _u8(&c, "PublishResponse") != 0
        self.sequence_number = <uint32_t>_u32(&c, "NotificationMessage")
        _i64(&c, &ticks, "NotificationMessage")
        self.publish_time = _epoch(ticks)
        count = _length(&c, "NotificationData", 3)
        for i in range(count):
            tid = _node_id(&c, "NotificationData")
            enc = _u8(&c, "NotificationData")
            if enc == 0:
                continue
            if enc != 1 and enc != 2:
                c.pos -= 1
                raise _fail(&c, f"NotificationData has body encoding {enc}")
            size = _length(&c, "NotificationData body", 1)
            body.buf = c.buf
            body.pos = c.pos
            body.end = c.pos + size
            body.vend = 0
            if tid == _DATA_CHANGE and enc == 1:
                items = _length(&body, "MonitoredItems", 5)
                for j in range(items):
                    handle = <uint32_t>_u32(&body, "MonitoredItemNotification")
                    k = self._find(handle)
                    if k < 0:
                        self.last_unknown += 1
                        _data_value(&body, 0, &v, NULL, NULL, NULL)
                    else:
                        self._row(&body, n, self._pids[k], &o)
                        n += 1
                _diagnostics(&body)
            elif tid == _STATUS_CHANGE and enc == 1:
                self.status_change = _u32(&body, "StatusChangeNotification")
            elif tid == _EVENTS:
                self.last_events += 1
            c.pos = body.end
        count = _length(&c, "Results", 4)
        for i in range(count):
            _need(&c, 4, "Results")
        _diagnostics(&c)
        return n

    def decode_read(self, data, const uint32_t[:] ids, uint32_t[::1] points, double[::1] values,
                    double[::1] source_ts, double[::1] server_ts, uint8_t[::1] quality) -> int:
        """Decode one ReadResponse whose request read the points ``ids`` (in that order)."""
        cdef Out o = _columns(points, values, source_ts, server_ts, quality)
        cdef const unsigned char[::1] view = _byteview(data)
        cdef Cur c
        cdef Py_ssize_t i, count
        c.buf = &view[0] if view.shape[0] else <const uint8_t *>b""
        c.pos = 0
        c.end = view.shape[0]
        c.vend = 0
        if not self._open(&c, _READ):
            return 0
        count = _length(&c, "Results", 1)
        if count != ids.shape[0]:
            c.pos -= 4
            raise _fail(&c, f"ReadResponse has {count} results for {ids.shape[0]} nodes read")
        for i in range(count):
            self._row(&c, i, ids[i], &o)
        _diagnostics(&c)
        return count


cdef Out _columns(uint32_t[::1] points, double[::1] values, double[::1] src, double[::1] srv,
                  uint8_t[::1] quality) except *:
    """Raw pointers into the caller's columns (which outlive the decode call)."""
    cdef Out o
    cdef Py_ssize_t n = points.shape[0]
    if values.shape[0] != n or src.shape[0] != n or srv.shape[0] != n or quality.shape[0] != n:
        raise ValueError("points, values, source_ts, server_ts and quality differ in length")
    o.cap = n
    if n:
        o.points, o.values, o.quality = &points[0], &values[0], &quality[0]
        o.src, o.srv = &src[0], &srv[0]
    return o


cdef const unsigned char[::1] _byteview(object data):
    if isinstance(data, memoryview) and (data.format != "B" or not data.c_contiguous):
        data = data.cast("B") if data.c_contiguous else data.tobytes()
    return data
