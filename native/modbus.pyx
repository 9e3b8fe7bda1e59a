# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Modbus protocol core, compiled (gateway._native.modbus).

CRC-16, MBAP request builders, incremental MBAP and RTU framers and the bulk register decoder.
The pure-Python twin gateway/_pure/modbus.py has the same names and results; the decode paths
here run without the GIL over typed memoryviews, with byte order in C (native/modbus_helpers.h).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memmove
from libc.math cimport rint, isfinite, isinf
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING

cdef extern from "modbus_helpers.h" nogil:
    uint16_t gw_crc16(const unsigned char *data, size_t n)
    double gw_decode_raw(const unsigned char *p, int type, int flags)
    double gw_scale(double raw, double scale, double bias)
    void gw_store_be16(unsigned char *p, unsigned int v)
    Py_ssize_t gw_rtu_response_length(const unsigned char *b, Py_ssize_t avail)
    Py_ssize_t gw_rtu_request_length(const unsigned char *b, Py_ssize_t avail)

T_INT16, T_UINT16, T_INT32, T_UINT32, T_FLOAT32, T_FLOAT64 = 0, 1, 2, 3, 4, 5
TYPE_CODES = {
    "int16": T_INT16,
    "uint16": T_UINT16,
    "int32": T_INT32,
    "uint32": T_UINT32,
    "float32": T_FLOAT32,
    "float64": T_FLOAT64,
}
TYPE_WORDS = {T_INT16: 1, T_UINT16: 1, T_INT32: 2, T_UINT32: 2, T_FLOAT32: 2, T_FLOAT64: 4}
WORD_LITTLE = 1
BYTE_LITTLE = 2
MBAP_MAX_LENGTH = 254

cdef enum:
    _MBAP_MAX_LENGTH = 254
    # Below this many values, releasing and retaking the GIL costs more than the decode itself.
    _NOGIL_MIN_VALUES = 64

cdef inline Py_ssize_t _mbap_length(const unsigned char *b, Py_ssize_t pos) noexcept nogil:
    """The length field of an MBAP header at ``b[pos:pos+6]``, or -1 when the header is not
    plausible (protocol id not 0, length outside 2.._MBAP_MAX_LENGTH): where a resync starts."""
    cdef Py_ssize_t length = (b[pos + 4] << 8) | b[pos + 5]
    if b[pos + 2] or b[pos + 3] or length < 2 or length > _MBAP_MAX_LENGTH:
        return -1
    return length


cdef int[6] _WORDS = [1, 1, 2, 2, 2, 4]
cdef double _FLT32_MAX = 3.4028234663852886e38
_INT_LIMITS = {
    T_INT16: (-32768, 32767),
    T_UINT16: (0, 65535),
    T_INT32: (-(2**31), 2**31 - 1),
    T_UINT32: (0, 2**32 - 1),
}


def crc16(data) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent on the wire low byte first."""
    cdef const unsigned char[::1] view = _byteview(data)
    if view.shape[0] == 0:
        return 0xFFFF
    return gw_crc16(&view[0], view.shape[0])


cdef const unsigned char[::1] _byteview(object data):
    if isinstance(data, memoryview) and (data.format != "B" or not data.c_contiguous):
        data = data.cast("B") if data.c_contiguous else data.tobytes()
    return data


def order_flags(str word_order, str byte_order) -> int:
    """Flags for a point's ``word_order`` / ``byte_order`` ("big" or "little") config values."""
    if word_order not in ("big", "little"):
        raise ValueError(f"word_order must be 'big' or 'little', not {word_order!r}")
    if byte_order not in ("big", "little"):
        raise ValueError(f"byte_order must be 'big' or 'little', not {byte_order!r}")
    return (WORD_LITTLE if word_order == "little" else 0) | (
        BYTE_LITTLE if byte_order == "little" else 0
    )


cdef object _check(str name, object value, object lo, object hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} out of range {lo}..{hi}")
    return value


cdef bytes _mbap(object tid, object unit, bytes pdu):
    _check("tid", tid, 0, 0xFFFF)
    _check("unit", unit, 0, 0xFF)
    cdef Py_ssize_t n = len(pdu)
    cdef bytearray adu = bytearray(7 + n)
    cdef unsigned char *p = <unsigned char *>PyByteArray_AS_STRING(adu)
    gw_store_be16(p, tid)
    gw_store_be16(p + 2, 0)
    gw_store_be16(p + 4, n + 1)
    p[6] = <unsigned char>unit
    memcpy(p + 7, <const char *>pdu, n)
    return bytes(adu)


cdef bytes _pdu_5(int fc, unsigned int a, unsigned int b):
    cdef unsigned char[5] p
    p[0] = fc
    gw_store_be16(p + 1, a)
    gw_store_be16(p + 3, b)
    return PyBytes_FromStringAndSize(<char *>p, 5)


def build_read_request(tid, unit, function, address, count) -> bytes:
    """MBAP ADU of a read request: coils (1), discrete inputs (2), holding (3), input (4)."""
    _check("function", function, 1, 4)
    _check("address", address, 0, 0xFFFF)
    _check("count", count, 1, 2000 if function <= 2 else 125)
    if address + count > 0x10000:
        raise ValueError(f"address {address} + count {count} runs past 65535")
    return _mbap(tid, unit, _pdu_5(function, address, count))


def build_write_single_coil(tid, unit, address, value) -> bytes:
    """MBAP ADU of function 5 (write single coil; ON is 0xFF00)."""
    _check("address", address, 0, 0xFFFF)
    return _mbap(tid, unit, _pdu_5(5, address, 0xFF00 if value else 0))


def build_write_single_register(tid, unit, address, value) -> bytes:
    """MBAP ADU of function 6 (write single register); ``value`` is the raw word 0..65535."""
    _check("address", address, 0, 0xFFFF)
    _check("value", value, 0, 0xFFFF)
    return _mbap(tid, unit, _pdu_5(6, address, value))


def build_write_multiple_coils(tid, unit, address, values) -> bytes:
    """MBAP ADU of function 15 (write 1..1968 coils, packed LSB first)."""
    cdef Py_ssize_t n = len(values), i = 0
    _check("address", address, 0, 0xFFFF)
    _check("coil count", n, 1, 1968)
    if address + n > 0x10000:
        raise ValueError(f"address {address} + count {n} runs past 65535")
    cdef Py_ssize_t nbytes = (n + 7) // 8
    cdef bytearray pdu = bytearray(6 + nbytes)
    cdef unsigned char *p = <unsigned char *>PyByteArray_AS_STRING(pdu)
    p[0] = 15
    gw_store_be16(p + 1, address)
    gw_store_be16(p + 3, n)
    p[5] = <unsigned char>nbytes
    for v in values:
        if v:
            p[6 + (i >> 3)] |= 1 << (i & 7)
        i += 1
    return _mbap(tid, unit, bytes(pdu))


def build_write_multiple_registers(tid, unit, address, values) -> bytes:
    """MBAP ADU of function 16 (write 1..123 raw register words)."""
    cdef Py_ssize_t n = len(values), i = 0
    _check("address", address, 0, 0xFFFF)
    _check("register count", n, 1, 123)
    if address + n > 0x10000:
        raise ValueError(f"address {address} + count {n} runs past 65535")
    cdef bytearray pdu = bytearray(6 + 2 * n)
    cdef unsigned char *p = <unsigned char *>PyByteArray_AS_STRING(pdu)
    p[0] = 16
    gw_store_be16(p + 1, address)
    gw_store_be16(p + 3, n)
    p[5] = <unsigned char>(2 * n)
    for v in values:
        gw_store_be16(p + 6 + 2 * i, _check("register value", v, 0, 0xFFFF))
        i += 1
    return _mbap(tid, unit, bytes(pdu))


cdef void _check_type_flags(int type_code, int flags) except *:
    if not 0 <= type_code <= 5:
        raise ValueError(f"unknown register type code {type_code}")
    if not 0 <= flags <= 3:
        raise ValueError(f"invalid order flags {flags}")


def encode_value(int type_code, int flags, double scale, double bias, double value) -> list:
    """Raw register words (wire order) that decode back to engineering ``value``.

    ``raw = (value - bias) / scale``, rounded half to even for integer types. Raises ValueError when
    the result does not fit the type (NaN and infinities fit only the float types).
    """
    _check_type_flags(type_code, flags)
    if scale == 0.0:
        raise ValueError("scale must be nonzero")
    cdef double raw = (value - bias) / scale
    cdef double r
    cdef uint64_t bits = 0
    cdef float f
    cdef int nwords = _WORDS[type_code], i, w
    if type_code <= 3:
        if not isfinite(raw):
            raise ValueError(f"{raw} cannot be written as an integer register value")
        lo, hi = _INT_LIMITS[type_code]
        r = rint(raw)  # half to even under the default rounding mode, like round()
        if not lo <= r <= hi:
            raise ValueError(
                f"raw value {int(r)} out of range {lo}..{hi} for the register type"
            )
        bits = <uint64_t>(<int32_t>(<long long>r)) if type_code != 3 else <uint64_t>r
        bits &= 0xFFFF if nwords == 1 else 0xFFFFFFFF
    elif type_code == 4:
        f = <float>raw
        if isinf(f) and not isinf(raw):
            raise ValueError(f"raw value {raw} out of range for float32")
        memcpy(&w, &f, 4)
        bits = <uint32_t>w
    else:
        memcpy(&bits, &raw, 8)
    words = []
    cdef unsigned int word
    for i in range(nwords):
        # i-th word on the wire: most significant first unless WORD_LITTLE.
        w = i if flags & 1 else nwords - 1 - i
        word = <unsigned int>((bits >> (16 * w)) & 0xFFFF)
        if flags & 2:
            word = ((word & 0xFF) << 8) | (word >> 8)
        words.append(word)
    return words


cdef class _ByteBuffer:
    """Growable C byte buffer; consumed bytes are compacted away after each feed."""

    cdef unsigned char *data
    cdef Py_ssize_t size, cap

    def __dealloc__(self):
        free(self.data)

    cdef int append(self, object chunk) except -1:
        cdef const unsigned char[::1] view = _byteview(chunk)
        cdef Py_ssize_t n = view.shape[0], cap
        cdef unsigned char *grown
        if n == 0:
            return 0
        if self.size + n > self.cap:
            cap = max(self.size + n, 2 * self.cap, 512)
            grown = <unsigned char *>realloc(self.data, cap)
            if grown == NULL:
                raise MemoryError()
            self.data = grown
            self.cap = cap
        memcpy(self.data + self.size, &view[0], n)
        self.size += n
        return 0

    cdef void consume(self, Py_ssize_t n):
        if n >= self.size:
            self.size = 0
        elif n > 0:
            memmove(self.data, self.data + n, self.size - n)
            self.size -= n


cdef class MbapFramer:
    """Incremental Modbus TCP framer: byte stream split anywhere -> complete ADUs.

    A header whose protocol id is not 0 or whose length field is outside 2..``max_adu - 6`` counts
    one bad frame; the framer then drops bytes one at a time until a plausible header starts the
    buffer (bytes dropped count in ``discarded_bytes``). Never raises on input.
    """

    cdef _ByteBuffer _buf
    cdef Py_ssize_t _max_length
    cdef bint _resync
    cdef readonly Py_ssize_t frames, bad_frames, discarded_bytes

    def __init__(self, max_adu=260):
        _check("max_adu", max_adu, 8, 6 + 0xFFFF)
        self._max_length = max_adu - 6
        self._buf = _ByteBuffer()
        self._resync = False
        self.frames = self.bad_frames = self.discarded_bytes = 0

    def reset(self) -> None:
        """Drop buffered partial data, e.g. after a reconnect; counters are kept."""
        self._buf.size = 0
        self._resync = False

    def feed(self, data) -> list:
        """Append ``data``; return complete frames as ``(tid, unit, function, body)``."""
        self._buf.append(data)
        cdef const unsigned char *b = self._buf.data
        cdef Py_ssize_t pos = 0, n = self._buf.size, length, end
        out = []
        while n - pos >= 6:
            length = (b[pos + 4] << 8) | b[pos + 5]
            if b[pos + 2] or b[pos + 3] or length < 2 or length > self._max_length:
                if not self._resync:
                    self.bad_frames += 1
                    self._resync = True
                pos += 1
                self.discarded_bytes += 1
                continue
            self._resync = False
            end = pos + 6 + length
            if end > n:
                break
            out.append((
                (b[pos] << 8) | b[pos + 1],
                b[pos + 6],
                b[pos + 7],
                PyBytes_FromStringAndSize(<const char *>b + pos + 8, length - 2),
            ))
            self.frames += 1
            pos = end
        self._buf.consume(pos)
        return out


cdef class RtuFramer:
    """Streaming Modbus RTU framer with CRC-16 check and resync after garbage.

    The frame length comes from the function code (and byte count), since the t3.5 silence that
    delimits RTU frames is not visible through a serial driver. A candidate that fails the CRC or
    cannot be a frame (unit id, function code, byte count) is dropped one byte at a time; a garbage
    header that announces a long frame stalls until that many bytes arrived, so drivers call
    :meth:`reset` after a response timeout.

    Role ``"sniff"`` decodes both directions of a line it only listens to: a candidate is taken
    as a request if its request-shaped length passes the CRC, else as a response; frames come
    back as ``(direction, unit, function, body)`` with direction 0 (request) or 1 (response).
    """

    cdef _ByteBuffer _buf
    cdef bint _request, _sniff
    cdef readonly Py_ssize_t frames, crc_errors, discarded_bytes

    def __init__(self, str role="response"):
        if role not in ("response", "request", "sniff"):
            raise ValueError(f"role must be 'response', 'request' or 'sniff', not {role!r}")
        self._request = role == "request"
        self._sniff = role == "sniff"
        self._buf = _ByteBuffer()
        self.frames = self.crc_errors = self.discarded_bytes = 0

    @property
    def role(self) -> str:
        """``"response"`` (client side), ``"request"`` (slave side) or ``"sniff"`` (both)."""
        return "sniff" if self._sniff else "request" if self._request else "response"

    def reset(self) -> None:
        """Drop buffered partial data, e.g. after a response timeout; counters are kept."""
        self._buf.size = 0

    def feed(self, data) -> list:
        """Append ``data``; return CRC-valid frames as ``(unit, function, body)`` without CRC."""
        self._buf.append(data)
        cdef const unsigned char *b = self._buf.data
        cdef Py_ssize_t pos = 0, n = self._buf.size, length, end
        out = []
        if self._sniff:
            return self._feed_sniff()
        while n - pos >= 2:
            if self._request:
                length = gw_rtu_request_length(b + pos, n - pos)
            else:
                length = gw_rtu_response_length(b + pos, n - pos)
            if length == 0 or (length > 0 and n - pos < length):
                break
            if length > 0:
                end = pos + length
                if gw_crc16(b + pos, length - 2) == (b[end - 2] | (b[end - 1] << 8)):
                    out.append((
                        b[pos],
                        b[pos + 1],
                        PyBytes_FromStringAndSize(<const char *>b + pos + 2, length - 4),
                    ))
                    self.frames += 1
                    pos = end
                    continue
                self.crc_errors += 1
            pos += 1
            self.discarded_bytes += 1
        self._buf.consume(pos)
        return out

    cdef list _feed_sniff(self):
        # Candidates are tried shortest first (request first on a tie), and a longer one is
        # only waited for when the shorter failed: the result never depends on how the
        # stream was split into reads, even for the rare bytes that pass both CRCs.
        cdef const unsigned char *b = self._buf.data
        cdef Py_ssize_t pos = 0, n = self._buf.size, avail, l0, l1, length
        cdef int d0, d1, k, direction
        cdef bint checked, wait, found
        out = []
        while n - pos >= 2:
            avail = n - pos
            l0 = gw_rtu_request_length(b + pos, avail)
            l1 = gw_rtu_response_length(b + pos, avail)
            d0, d1 = 0, 1
            if l1 >= 0 and (l0 < 0 or (l1 > 0 and l0 > 0 and l1 < l0) or l1 == 0 < l0):
                l0, l1 = l1, l0
                d0, d1 = 1, 0
            checked = wait = found = False
            for k in range(2):
                length = l0 if k == 0 else l1
                direction = d0 if k == 0 else d1
                if length < 0:
                    continue
                if length == 0 or avail < length:
                    wait = True
                    break
                checked = True
                if gw_crc16(b + pos, length - 2) == (b[pos + length - 2]
                                                    | (b[pos + length - 1] << 8)):
                    out.append((direction, b[pos], b[pos + 1],
                                PyBytes_FromStringAndSize(<const char *>b + pos + 2, length - 4)))
                    self.frames += 1
                    pos += length
                    found = True
                    break
            if found:
                continue
            if wait:
                break
            if checked:
                self.crc_errors += 1
            pos += 1
            self.discarded_bytes += 1
        self._buf.consume(pos)
        return out


cdef class RegisterDecoder:
    """Decodes the register block of one read response into engineering values, in bulk.

    ``out[i] = raw_i * scales[i] + biases[i]`` where raw_i is the value of type ``types[i]`` whose
    first register is ``offsets[i]`` registers into the block, in the order given by ``flags[i]``.
    :func:`decode_stream` leaves ``last_skipped`` (malformed or foreign frames) and
    ``last_consumed`` (stream bytes used) on the decoder.
    """

    cdef Py_ssize_t *_byte_off
    cdef int *_types
    cdef int *_flags
    cdef double *_scales
    cdef double *_biases
    cdef readonly Py_ssize_t n_points, min_registers, last_skipped, last_consumed

    def __cinit__(self, *args, **kwargs):
        self._byte_off = NULL
        self._types = self._flags = NULL
        self._scales = self._biases = NULL

    def __init__(self, offsets, types, flags, scales, biases):
        cdef Py_ssize_t n = len(offsets), i
        if not len(types) == len(flags) == len(scales) == len(biases) == n:
            raise ValueError("offsets, types, flags, scales and biases must have the same length")
        self._free()
        self._byte_off = <Py_ssize_t *>malloc(max(n, 1) * sizeof(Py_ssize_t))
        self._types = <int *>malloc(max(n, 1) * sizeof(int))
        self._flags = <int *>malloc(max(n, 1) * sizeof(int))
        self._scales = <double *>malloc(max(n, 1) * sizeof(double))
        self._biases = <double *>malloc(max(n, 1) * sizeof(double))
        if (self._byte_off == NULL or self._types == NULL or self._flags == NULL
                or self._scales == NULL or self._biases == NULL):
            raise MemoryError()
        cdef Py_ssize_t min_registers = 0
        for i in range(n):
            _check_type_flags(types[i], flags[i])
            _check("offset", offsets[i], 0, 0xFFFF)
            self._byte_off[i] = 2 * <Py_ssize_t>offsets[i]
            self._types[i] = types[i]
            self._flags[i] = flags[i]
            self._scales[i] = scales[i]
            self._biases[i] = biases[i]
            min_registers = max(min_registers, offsets[i] + _WORDS[self._types[i]])
        self.n_points = n
        self.min_registers = min_registers
        self.last_skipped = self.last_consumed = 0

    cdef void _free(self):
        free(self._byte_off)
        free(self._types)
        free(self._flags)
        free(self._scales)
        free(self._biases)
        self._byte_off = NULL
        self._types = self._flags = NULL
        self._scales = self._biases = NULL

    def __dealloc__(self):
        self._free()

    cdef inline void _row(self, const unsigned char *block, char *dst,
                          Py_ssize_t stride) noexcept nogil:
        # dst/stride address the output row as raw memory so any numpy layout works.
        cdef Py_ssize_t j
        for j in range(self.n_points):
            (<double *>(dst + j * stride))[0] = gw_scale(
                gw_decode_raw(block + self._byte_off[j], self._types[j], self._flags[j]),
                self._scales[j], self._biases[j])

    def decode(self, registers, double[:] out) -> None:
        """Decode one block (the response body after its byte count) into ``out[:n_points]``."""
        cdef const unsigned char[::1] block = _byteview(registers)
        if block.shape[0] < 2 * self.min_registers:
            raise ValueError(
                f"register block of {block.shape[0]} bytes, need {2 * self.min_registers}"
            )
        if out.shape[0] < self.n_points:
            raise ValueError(f"out must be 1-D with at least {self.n_points} elements")
        if self.n_points == 0:
            return
        if self.n_points < _NOGIL_MIN_VALUES:
            self._row(&block[0], <char *>&out[0], out.strides[0])
        else:
            with nogil:
                self._row(&block[0], <char *>&out[0], out.strides[0])

    def decode_many(self, blocks, Py_ssize_t n_blocks, double[:, :] out) -> None:
        """Decode ``n_blocks`` equally sized blocks back to back into ``out[:n_blocks, :n_points]``."""
        cdef const unsigned char[::1] data = _byteview(blocks)
        cdef Py_ssize_t size, i
        cdef const unsigned char *p
        if n_blocks < 0:
            raise ValueError("n_blocks must be >= 0")
        if out.shape[0] < n_blocks or out.shape[1] < self.n_points:
            raise ValueError(f"out must be 2-D with at least {n_blocks} x {self.n_points} elements")
        if n_blocks == 0:
            return
        size = data.shape[0] // n_blocks
        if data.shape[0] % n_blocks or size < 2 * self.min_registers:
            raise ValueError(
                f"{data.shape[0]} bytes are not {n_blocks} blocks of >= "
                f"{2 * self.min_registers} bytes"
            )
        if self.n_points == 0:
            return
        p = &data[0]
        if n_blocks * self.n_points < _NOGIL_MIN_VALUES:
            for i in range(n_blocks):
                self._row(p + i * size, <char *>&out[i, 0], out.strides[1])
        else:
            with nogil:
                for i in range(n_blocks):
                    self._row(p + i * size, <char *>&out[i, 0], out.strides[1])


def unpack_bits(body, Py_ssize_t count, double[:] out) -> None:
    """Coil / discrete input bits (fc 1/2 body after the byte count) -> ``out[:count]`` 0.0/1.0."""
    cdef const unsigned char[::1] data = _byteview(body)
    cdef Py_ssize_t i
    if count < 0 or data.shape[0] * 8 < count:
        raise ValueError(f"{data.shape[0]} bytes cannot hold {count} bits")
    if out.shape[0] < count:
        raise ValueError(f"out must be 1-D with at least {count} elements")
    with nogil:
        for i in range(count):
            out[i] = <double>((data[i >> 3] >> (i & 7)) & 1)


def decode_stream(stream, RegisterDecoder decoder not None, double[:, :] out,
                  uint16_t[:] tids) -> int:
    """Decode back-to-back fc 3/4 MBAP responses into ``out`` rows; return how many.

    Stops when ``out`` is full or the stream ends (a trailing partial frame is left). Frames that
    are not fc 3/4 responses with a consistent byte count of at least ``2 * min_registers`` are
    skipped, and an implausible header is skipped by scanning for the next plausible one; each
    counts one in ``decoder.last_skipped``. ``decoder.last_consumed`` is the number of stream bytes
    used, where a follow-up call should resume.
    """
    cdef const unsigned char[::1] data = _byteview(stream)
    cdef Py_ssize_t rows = out.shape[0], n = data.shape[0]
    cdef Py_ssize_t need = 2 * decoder.min_registers, pos = 0, decoded = 0, skipped = 0
    cdef Py_ssize_t length, end
    cdef bint resync = False, has_points = decoder.n_points > 0
    cdef const unsigned char *b
    cdef unsigned char fc
    if out.shape[1] < decoder.n_points:
        raise ValueError(f"out must be 2-D with at least {decoder.n_points} columns")
    if tids.shape[0] < rows:
        raise ValueError(f"tids must be 1-D with at least {rows} elements")
    if n:
        b = &data[0]
        with nogil:
            while decoded < rows and n - pos >= 6:
                length = _mbap_length(b, pos)
                if length < 0:
                    if not resync:
                        skipped += 1
                        resync = True
                    pos += 1
                    continue
                resync = False
                end = pos + 6 + length
                if end > n:
                    break
                fc = b[pos + 7]
                if ((fc == 3 or fc == 4) and length >= 3 and b[pos + 8] == length - 3
                        and length - 3 >= need):
                    tids[decoded] = <uint16_t>((b[pos] << 8) | b[pos + 1])
                    if has_points:
                        decoder._row(b + pos + 9, <char *>&out[decoded, 0], out.strides[1])
                    decoded += 1
                else:
                    skipped += 1
                pos = end
    decoder.last_skipped = skipped
    decoder.last_consumed = pos
    return decoded


def decode_rtu_stream(stream, RegisterDecoder decoder not None, double[:, :] out,
                      uint8_t[:] units) -> int:
    """Decode back-to-back fc 3/4 RTU responses (CRC checked) into ``out`` rows; return how many.

    The RTU twin of :func:`decode_stream`, for a sniffed or buffered serial stream. A position
    that does not start a CRC-valid fc 3/4 response with an even byte count of at least
    ``2 * min_registers`` is skipped byte by byte (a run of such bytes counts one in
    ``decoder.last_skipped``); a frame shorter than the decoder needs counts one too.
    ``decoder.last_consumed`` is where a follow-up call should resume.
    """
    cdef const unsigned char[::1] data = _byteview(stream)
    cdef Py_ssize_t rows = out.shape[0], n = data.shape[0]
    cdef Py_ssize_t need = 2 * decoder.min_registers, pos = 0, decoded = 0, skipped = 0
    cdef Py_ssize_t length
    cdef bint resync = False, has_points = decoder.n_points > 0
    cdef const unsigned char *b
    cdef unsigned char unit, fc, count
    if out.shape[1] < decoder.n_points:
        raise ValueError(f"out must be 2-D with at least {decoder.n_points} columns")
    if units.shape[0] < rows:
        raise ValueError(f"units must be 1-D with at least {rows} elements")
    if n:
        b = &data[0]
        with nogil:
            while decoded < rows and n - pos >= 5:
                unit = b[pos]
                fc = b[pos + 1]
                count = b[pos + 2]
                if (unit >= 1 and unit <= 247 and (fc == 3 or fc == 4) and count
                        and not (count & 1) and count <= 250):
                    length = 5 + count
                    if pos + length > n:
                        break
                    if gw_crc16(b + pos, length - 2) == (b[pos + length - 2]
                                                        | (b[pos + length - 1] << 8)):
                        resync = False
                        if count >= need:
                            units[decoded] = unit
                            if has_points:
                                decoder._row(b + pos + 3, <char *>&out[decoded, 0],
                                             out.strides[1])
                            decoded += 1
                        else:
                            skipped += 1
                        pos += length
                        continue
                if not resync:
                    skipped += 1
                    resync = True
                pos += 1
    decoder.last_skipped = skipped
    decoder.last_consumed = pos
    return decoded


cdef class ResponseMatcher:
    """Matches MBAP answers to requests in flight by transaction id and decodes them in place.

    The multi-decoder twin of :func:`decode_stream` for a pipelined connection: slot ``k`` is one
    request (expected ``functions[k]``, ``byte_counts[k]``, its RegisterDecoder or None), and a
    register answer is decoded straight into ``out[offsets[k]:]``, so a socket read holding the
    answers of a whole poll group costs one call. ``functions[k] == 0`` takes any answer raw
    (writes). The slots' state lives in the matcher (no arrays to pass per call): :meth:`arm`
    starts a transaction, :meth:`feed` sets each answered slot's status to OK (1), EXCEPTION (2)
    or BAD (3, wrong function or length) and its span (function code .. end of frame) in the
    stream it was fed.
    """

    cdef list _decoders
    cdef int *_fc
    cdef int *_tid
    cdef signed char *_status
    cdef Py_ssize_t *_bytes
    cdef Py_ssize_t *_off
    cdef Py_ssize_t *_span
    cdef readonly Py_ssize_t n_slots, n_values, waiting, last_consumed, last_stale, last_bad

    def __cinit__(self, *args, **kwargs):
        self._fc = self._tid = NULL
        self._status = NULL
        self._bytes = self._off = self._span = NULL

    def __init__(self, functions, byte_counts, decoders, offsets):
        cdef Py_ssize_t n = len(functions), i, end = 0
        if not len(byte_counts) == len(decoders) == len(offsets) == n:
            raise ValueError("functions, byte_counts, decoders and offsets must have the same length")
        if n < 1:
            raise ValueError("a matcher needs at least one slot")
        self._fc = <int *>malloc(n * sizeof(int))
        self._tid = <int *>malloc(n * sizeof(int))
        self._status = <signed char *>malloc(n)
        self._bytes = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
        self._off = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
        self._span = <Py_ssize_t *>malloc(2 * n * sizeof(Py_ssize_t))
        if (self._fc == NULL or self._tid == NULL or self._status == NULL or self._bytes == NULL
                or self._off == NULL or self._span == NULL):
            raise MemoryError()
        self._decoders = list(decoders)
        for i in range(n):
            _check("function", functions[i], 0, 0x7F)
            _check("byte count", byte_counts[i], 0, 250)
            _check("offset", offsets[i], 0, 1 << 30)
            d = self._decoders[i]
            if d is not None:
                if not isinstance(d, RegisterDecoder):
                    raise TypeError("decoders must be RegisterDecoder or None")
                if 2 * (<RegisterDecoder>d).min_registers > byte_counts[i]:
                    raise ValueError(f"slot {i}: byte count {byte_counts[i]} below the decoder's")
                end = max(end, offsets[i] + (<RegisterDecoder>d).n_points)
            self._fc[i] = functions[i]
            self._bytes[i] = byte_counts[i]
            self._off[i] = offsets[i]
            self._tid[i] = -1
            self._status[i] = 0
            self._span[2 * i] = self._span[2 * i + 1] = -1
        self.n_slots = n
        self.n_values = end
        self.waiting = self.last_consumed = self.last_stale = self.last_bad = 0

    def __dealloc__(self):
        free(self._fc)
        free(self._tid)
        free(self._status)
        free(self._bytes)
        free(self._off)
        free(self._span)

    def arm(self, int first_tid, Py_ssize_t n=-1) -> int:
        """Slots ``0..n-1`` (all by default) wait for tids ``first_tid, first_tid + 1, ...``
        (mod 65536), the others for nothing; return the last tid used."""
        cdef Py_ssize_t k
        if n < 0 or n > self.n_slots:
            n = self.n_slots
        _check("first_tid", first_tid, 0, 0xFFFF)
        for k in range(self.n_slots):
            self._status[k] = 0
            self._span[2 * k] = self._span[2 * k + 1] = -1
            self._tid[k] = (first_tid + k) & 0xFFFF if k < n else -1
        self.waiting = n
        return (first_tid + n - 1) & 0xFFFF

    def disarm(self) -> None:
        """No slot waits any more: every answer from now on is stale."""
        cdef Py_ssize_t k
        for k in range(self.n_slots):
            self._tid[k] = -1
        self.waiting = 0

    def statuses(self) -> list:
        """Status of every slot: 0 waiting (or never armed), 1 OK, 2 exception, 3 bad."""
        return [self._status[k] for k in range(self.n_slots)]

    def span(self, Py_ssize_t k) -> tuple:
        """(offset of the function code, end of frame) of slot ``k``'s answer in its stream."""
        if not 0 <= k < self.n_slots:
            raise IndexError(k)
        return self._span[2 * k], self._span[2 * k + 1]

    def feed(self, stream, int unit, double[:] out) -> int:
        """Match the complete frames of ``stream``; return how many answered a waiting slot.

        Frames for no waiting slot (late answers to timed-out requests, duplicates, another
        unit) count in ``last_stale``; implausible headers, skipped byte by byte, count one per
        run in ``last_bad``. ``last_consumed`` is where the next call resumes (a trailing
        partial frame is left).
        """
        cdef const unsigned char[::1] data = _byteview(stream)
        cdef Py_ssize_t n = data.shape[0], pos = 0, length, end, k, slots = self.n_slots
        cdef Py_ssize_t matched = 0, stale = 0, bad = 0
        cdef bint resync = False
        cdef const unsigned char *b
        cdef int tid, fc
        cdef RegisterDecoder d
        if self.n_values and out.shape[0] < self.n_values:
            raise ValueError(f"out must be 1-D with at least {self.n_values} elements")
        if n:
            b = &data[0]
            while n - pos >= 6:
                length = _mbap_length(b, pos)
                if length < 0:
                    if not resync:
                        bad += 1
                        resync = True
                    pos += 1
                    continue
                resync = False
                end = pos + 6 + length
                if end > n:
                    break
                tid = (b[pos] << 8) | b[pos + 1]
                k = -1
                if b[pos + 6] == unit:
                    for k in range(slots):
                        if self._tid[k] == tid and self._status[k] == 0:
                            break
                    else:
                        k = -1
                if k < 0:
                    stale += 1
                    pos = end
                    continue
                matched += 1
                self._span[2 * k] = pos + 7
                self._span[2 * k + 1] = end
                fc = b[pos + 7]
                if self._fc[k] == 0 or (fc == self._fc[k] and length == 3 + self._bytes[k]
                                        and b[pos + 8] == self._bytes[k]):
                    self._status[k] = 1
                    d = self._decoders[k]
                    if d is not None and d.n_points:
                        d._row(b + pos + 9, <char *>&out[self._off[k]], out.strides[0])
                elif fc == (self._fc[k] | 0x80):
                    self._status[k] = 2
                else:
                    self._status[k] = 3
                pos = end
        self.waiting -= matched
        self.last_consumed = pos
        self.last_stale = stale
        self.last_bad = bad
        return matched
