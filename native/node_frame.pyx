# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Node frame protocol, compiled (gateway._native.node_frame); see docs/node-frame.md.

Same names and results as the pure twin gateway/_pure/node_frame.py: COBS framing with a
bounded buffer, CRC-16 check, and the bulk readings decoder into typed arrays.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cdef extern from "modbus_helpers.h" nogil:
    uint16_t gw_crc16(const unsigned char *data, size_t n)

VERSION = 1
T_READINGS, T_ACK, T_WRITE, T_WRITE_ACK = 1, 2, 3, 4
V_BOOL, V_INT16, V_UINT16, V_INT32, V_UINT32, V_FLOAT32, V_FLOAT64 = 0, 1, 2, 3, 4, 5, 6
VALUE_TYPES = {"bool": V_BOOL, "int16": V_INT16, "uint16": V_UINT16, "int32": V_INT32,
               "uint32": V_UINT32, "float32": V_FLOAT32, "float64": V_FLOAT64}
VALUE_SIZES = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 4, 6: 8}
HEADER = 6
MIN_FRAME = 8
MAX_PAYLOAD = 1024

cdef int[7] _SIZES = [1, 2, 2, 4, 4, 4, 8]

from gateway._pure.node_frame import encode_readings as _py_encode_readings


cdef const unsigned char[::1] _byteview(object data):
    if isinstance(data, memoryview) and (data.format != "B" or not data.c_contiguous):
        data = data.cast("B") if data.c_contiguous else data.tobytes()
    return data


cdef Py_ssize_t _cobs_encode(const unsigned char *src, Py_ssize_t n, unsigned char *dst) nogil:
    cdef Py_ssize_t code_at = 0, o = 1, i
    cdef unsigned char code = 1
    for i in range(n):
        if src[i] == 0:
            dst[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            dst[o] = src[i]
            o += 1
            code += 1
            if code == 255:
                dst[code_at] = code
                code_at = o
                o += 1
                code = 1
    dst[code_at] = code
    return o


cdef Py_ssize_t _cobs_decode(const unsigned char *src, Py_ssize_t n, unsigned char *dst) nogil:
    """Decoded length, or -1 if not valid COBS."""
    cdef Py_ssize_t i = 0, o = 0, end, j
    cdef unsigned char code
    while i < n:
        code = src[i]
        end = i + code
        if code == 0 or end > n:
            return -1
        for j in range(i + 1, end):
            if src[j] == 0:
                return -1
            dst[o] = src[j]
            o += 1
        i = end
        if code < 255 and i < n:
            dst[o] = 0
            o += 1
    return o


def cobs_encode(data) -> bytes:
    """COBS-encode ``data`` (no zero bytes in the result; the delimiter is not appended)."""
    cdef const unsigned char[::1] v = _byteview(data)
    cdef Py_ssize_t n = v.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + n // 254 + 1)
    cdef Py_ssize_t m = _cobs_encode(&v[0] if n else <const unsigned char *>"", n,
                                     <unsigned char *>PyBytes_AS_STRING(out))
    return out[:m]


def cobs_decode(data):
    """Decode one COBS block (without delimiter); None if it is not valid COBS."""
    cdef const unsigned char[::1] v = _byteview(data)
    cdef Py_ssize_t n = v.shape[0], m
    if n == 0:
        return b""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    m = _cobs_decode(&v[0], n, <unsigned char *>PyBytes_AS_STRING(out))
    return None if m < 0 else out[:m]


def encode_frame(int type, int node_id, int seq, payload=b"") -> bytes:
    """One frame on the wire: COBS(header + payload + CRC) + b"\\x00"."""
    if not 0 <= type <= 255 or not 0 <= node_id <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise ValueError("type 0..255, node_id and seq 0..65535")
    cdef const unsigned char[::1] p = _byteview(payload)
    cdef Py_ssize_t n = p.shape[0]
    if n > MAX_PAYLOAD:
        raise ValueError(f"payload of {n} bytes exceeds {MAX_PAYLOAD}")
    cdef unsigned char raw[8 + 1024]
    cdef unsigned char enc[8 + 1024 + 8]
    cdef uint16_t crc
    raw[0] = 1
    raw[1] = <unsigned char>type
    raw[2] = <unsigned char>(node_id >> 8)
    raw[3] = <unsigned char>node_id
    raw[4] = <unsigned char>(seq >> 8)
    raw[5] = <unsigned char>seq
    if n:
        memcpy(raw + 6, &p[0], n)
    crc = gw_crc16(raw, 6 + n)
    raw[6 + n] = crc & 0xFF
    raw[7 + n] = crc >> 8
    cdef Py_ssize_t m = _cobs_encode(raw, 8 + n, enc)
    enc[m] = 0
    return PyBytes_FromStringAndSize(<char *>enc, m + 1)


def encode_readings(readings) -> bytes:
    """Readings payload from ``(channel, value_type, value)`` triples."""
    return _py_encode_readings(readings)


cdef inline uint32_t _be32(const unsigned char *q) nogil:
    return (<uint32_t>q[0] << 24) | (<uint32_t>q[1] << 16) | (<uint32_t>q[2] << 8) | q[3]


cdef Py_ssize_t _decode(const unsigned char *p, Py_ssize_t n, int count, uint8_t[:] channels,
                        double[:] values) noexcept nogil:
    cdef Py_ssize_t pos = 1, i, size
    cdef const unsigned char *q
    cdef unsigned char vt
    cdef uint32_t u32
    cdef uint64_t u64
    cdef float f
    cdef double d
    for i in range(count):
        if pos + 2 > n:
            return -1
        vt = p[pos + 1]
        if vt > 6:
            return -1
        size = _SIZES[vt]
        if pos + 2 + size > n:
            return -1
        channels[i] = p[pos]
        q = p + pos + 2
        if vt == 0:
            values[i] = 1.0 if q[0] else 0.0
        elif vt == 1:
            values[i] = <double><int16_t>((q[0] << 8) | q[1])
        elif vt == 2:
            values[i] = <double><uint16_t>((q[0] << 8) | q[1])
        elif vt == 3:
            values[i] = <double><int32_t>_be32(q)
        elif vt == 4:
            values[i] = <double>_be32(q)
        elif vt == 5:
            u32 = _be32(q)
            memcpy(&f, &u32, 4)
            values[i] = <double>f
        else:
            u64 = (<uint64_t>_be32(q) << 32) | _be32(q + 4)
            memcpy(&d, &u64, 8)
            values[i] = d
        pos += 2 + size
    return count if pos == n else -1


def decode_readings(payload, uint8_t[:] channels, double[:] values) -> int:
    """Decode a readings payload into ``channels`` (uint8) and ``values`` (float64).

    Returns the number of readings, or -1 if the payload is malformed (count does not match
    the bytes, unknown value type) or the arrays are too short for it.
    """
    cdef const unsigned char[::1] v = _byteview(payload)
    cdef Py_ssize_t n = v.shape[0], r
    cdef int count
    if n == 0:
        return -1
    count = v[0]
    if count > channels.shape[0] or count > values.shape[0]:
        return -1
    with nogil:
        r = _decode(&v[0], n, count, channels, values)
    return r


cdef class NodeFrameParser:
    """Incremental parser: bytes split anywhere -> ``(type, node_id, seq, payload)`` frames.

    Bytes are collected up to each zero delimiter; a block longer than the largest valid
    encoded frame is dropped as it streams (the buffer never grows past that bound). Rejected
    blocks count in ``bad_frames`` (not COBS, too short, unknown version) or ``crc_errors``,
    and their bytes in ``discarded_bytes``. Never raises on input.
    """

    cdef unsigned char *_buf
    cdef unsigned char *_raw
    cdef Py_ssize_t _n
    cdef bint _skip
    cdef readonly Py_ssize_t max_encoded, frames, crc_errors, bad_frames, discarded_bytes

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._raw = NULL

    def __init__(self, int max_payload=MAX_PAYLOAD):
        if not 0 <= max_payload <= 65535:
            raise ValueError("max_payload must be 0..65535")
        cdef Py_ssize_t raw = MIN_FRAME + max_payload
        self.max_encoded = raw + raw // 254 + 1
        free(self._buf)
        free(self._raw)
        self._buf = <unsigned char *>malloc(self.max_encoded)
        self._raw = <unsigned char *>malloc(self.max_encoded)
        if self._buf == NULL or self._raw == NULL:
            raise MemoryError()
        self._n = 0
        self._skip = False
        self.frames = self.crc_errors = self.bad_frames = self.discarded_bytes = 0

    def __dealloc__(self):
        free(self._buf)
        free(self._raw)

    def reset(self) -> None:
        """Drop a partial frame (counters are kept)."""
        self._n = 0
        self._skip = False

    @property
    def buffered(self) -> int:
        return self._n

    def feed(self, data) -> list:
        cdef const unsigned char[::1] v = _byteview(data)
        cdef Py_ssize_t n = v.shape[0], i
        cdef unsigned char b
        out = []
        for i in range(n):
            b = v[i]
            if b != 0:
                if self._skip:
                    self.discarded_bytes += 1
                elif self._n >= self.max_encoded:
                    self.bad_frames += 1
                    self.discarded_bytes += self._n + 1
                    self._n = 0
                    self._skip = True
                else:
                    self._buf[self._n] = b
                    self._n += 1
                continue
            if self._skip:
                self._skip = False
                continue
            if self._n:
                self._frame(out)
                self._n = 0
        return out

    cdef void _frame(self, list out):
        cdef Py_ssize_t m = _cobs_decode(self._buf, self._n, self._raw)
        cdef unsigned char *r = self._raw
        if m < MIN_FRAME or r[0] != 1:
            self.bad_frames += 1
            self.discarded_bytes += self._n
            return
        if gw_crc16(r, m - 2) != (r[m - 2] | (r[m - 1] << 8)):
            self.crc_errors += 1
            self.discarded_bytes += self._n
            return
        self.frames += 1
        out.append((r[1], (r[2] << 8) | r[3], (r[4] << 8) | r[5],
                    PyBytes_FromStringAndSize(<char *>r + 6, m - 8)))
