# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Node frame protocol, compiled (gateway._native.node_frame); see docs/node-frame.md.

Same names and results as the pure twin gateway/_pure/node_frame.py: COBS framing with a
bounded buffer, CRC-16 check, HMAC-SHA256-128 tags and per-node replay windows (SHA-256 in C,
native/gw_sha256.h), and the bulk readings decoder into typed arrays.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cdef extern from "modbus_helpers.h" nogil:
    uint16_t gw_crc16(const unsigned char *data, size_t n)

cdef extern from "gw_sha256.h" nogil:
    void gw_hmac_pads(const unsigned char *key, size_t n, uint32_t *ist, uint32_t *ost)
    void gw_hmac_sha256(const uint32_t *ist, const uint32_t *ost, const unsigned char *msg,
                        size_t n, unsigned char *out)
    int gw_ct_diff(const unsigned char *a, const unsigned char *b, size_t n)

VERSION = 2
VERSION_PLAIN = 1
T_READINGS, T_ACK, T_WRITE, T_WRITE_ACK, T_SYNC = 1, 2, 3, 4, 5
V_BOOL, V_INT16, V_UINT16, V_INT32, V_UINT32, V_FLOAT32, V_FLOAT64 = 0, 1, 2, 3, 4, 5, 6
VALUE_TYPES = {"bool": V_BOOL, "int16": V_INT16, "uint16": V_UINT16, "int32": V_INT32,
               "uint32": V_UINT32, "float32": V_FLOAT32, "float64": V_FLOAT64}
VALUE_SIZES = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 4, 6: 8}
HEADER = 14
HEADER_PLAIN = 6
TAG = 16
MIN_FRAME = 32
MIN_FRAME_PLAIN = 8
MAX_PAYLOAD = 1024
WINDOW = 64
KEY_MIN, KEY_MAX = 16, 64
OK, STALE, REPLAY, FORGED, UNKNOWN, MODE = 0, 1, 2, 3, 4, 5
cdef enum:
    C_HEADER = 14
    C_TAG = 16
    C_RAW_MAX = 1056  # 14 + 1024 + 16 + 2
    C_ENC_MAX = 1064  # COBS adds one byte per 254, plus the delimiter

cdef int[7] _SIZES = [1, 2, 2, 4, 4, 4, 8]

from gateway._pure.node_frame import encode_readings as _py_encode_readings
from gateway._pure.node_frame import mac_keys


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


cdef bytes _seal(unsigned char *raw, Py_ssize_t n, const uint32_t *ist, const uint32_t *ost):
    """raw[:n] + tag (when keyed) + CRC, COBS-encoded with its delimiter; raw has room."""
    cdef unsigned char enc[C_ENC_MAX]
    cdef unsigned char tag[32]
    cdef uint16_t crc
    cdef Py_ssize_t m
    if ist != NULL:
        gw_hmac_sha256(ist, ost, raw, n, tag)
        memcpy(raw + n, tag, C_TAG)
        n += C_TAG
    crc = gw_crc16(raw, n)
    raw[n] = crc & 0xFF
    raw[n + 1] = crc >> 8
    m = _cobs_encode(raw, n + 2, enc)
    enc[m] = 0
    return PyBytes_FromStringAndSize(<char *>enc, m + 1)


cdef inline void _put32(unsigned char *q, uint32_t v) noexcept nogil:
    q[0] = v >> 24
    q[1] = v >> 16
    q[2] = v >> 8
    q[3] = v


cdef Py_ssize_t _header(unsigned char *raw, int version, int type, int node_id, int seq,
                        uint32_t epoch, uint32_t counter) noexcept:
    raw[0] = version
    raw[1] = <unsigned char>type
    raw[2] = <unsigned char>(node_id >> 8)
    raw[3] = <unsigned char>node_id
    raw[4] = <unsigned char>(seq >> 8)
    raw[5] = <unsigned char>seq
    if version == 1:
        return 6
    _put32(raw + 6, epoch)
    _put32(raw + 10, counter)
    return C_HEADER


cdef const unsigned char[::1] _checked(int type, int node_id, int seq, object payload):
    if not 0 <= type <= 255 or not 0 <= node_id <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise ValueError("type 0..255, node_id and seq 0..65535")
    cdef const unsigned char[::1] p = _byteview(payload)
    if p.shape[0] > MAX_PAYLOAD:
        raise ValueError(f"payload of {p.shape[0]} bytes exceeds {MAX_PAYLOAD}")
    return p


cdef bytes _frame_bytes(int version, int type, int node_id, int seq, uint32_t epoch,
                        uint32_t counter, const unsigned char[::1] p, const uint32_t *ist,
                        const uint32_t *ost):
    cdef unsigned char raw[C_RAW_MAX]
    cdef Py_ssize_t h = _header(raw, version, type, node_id, seq, epoch, counter)
    cdef Py_ssize_t n = p.shape[0]
    if n:
        memcpy(raw + h, &p[0], n)
    return _seal(raw, h + n, ist, ost)


def encode_frame(int type, int node_id, int seq, payload=b"", key=None, epoch=0, counter=0,
                 bint up=False) -> bytes:
    """One frame on the wire: COBS(header + payload [+ tag] + CRC) + b"\\x00".

    Without ``key`` a format-1 frame (no MAC); with it a format-2 frame MACed under the node
    key's direction key (``up``: node -> gateway).
    """
    cdef const unsigned char[::1] p = _checked(type, node_id, seq, payload)
    cdef uint32_t ist[8]
    cdef uint32_t ost[8]
    cdef const unsigned char[::1] k
    if key is None:
        return _frame_bytes(1, type, node_id, seq, 0, 0, p, NULL, NULL)
    if not 0 <= epoch <= 0xFFFFFFFF or not 0 <= counter <= 0xFFFFFFFF:
        raise ValueError("epoch and counter 0..2**32-1")
    k = mac_keys(key)[0 if up else 1]
    gw_hmac_pads(&k[0], 32, ist, ost)
    return _frame_bytes(2, type, node_id, seq, epoch, counter, p, ist, ost)


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


cdef class _Node:
    """One node's keys (HMAC pad states per direction) and session; see the pure twin."""

    cdef uint32_t uist[8]
    cdef uint32_t uost[8]
    cdef uint32_t dist[8]
    cdef uint32_t dost[8]
    cdef bint keyed
    cdef uint32_t epoch, pending, top, tx
    cdef uint64_t window

    def __init__(self, key):
        cdef const unsigned char[::1] k
        self.keyed = key is not None
        self.epoch = self.pending = self.top = self.tx = 0
        self.window = 0
        if self.keyed:
            up, down = mac_keys(key)
            k = up
            gw_hmac_pads(&k[0], 32, self.uist, self.uost)
            k = down
            gw_hmac_pads(&k[0], 32, self.dist, self.dost)

    cdef int fresh(self, uint32_t epoch, uint32_t counter) noexcept:
        cdef uint32_t shift, behind
        if epoch == 0 or (epoch != self.epoch and epoch != self.pending):
            return 1  # STALE
        if epoch != self.epoch:
            self.epoch = epoch
            self.pending = 0
            self.top = counter
            self.window = 1
            self.tx = 0
            return 0
        if counter > self.top:
            shift = counter - self.top
            self.window = ((self.window << shift) | 1) if shift < 64 else 1
            self.top = counter
            return 0
        behind = self.top - counter
        if behind >= 64 or (self.window >> behind) & 1:
            return 2  # REPLAY
        self.window |= (<uint64_t>1) << behind
        return 0


cdef class NodeFrameParser:
    """Incremental parser and per-node session keeper for the gateway side.

    ``feed``: bytes split anywhere -> ``(status, type, node_id, seq, epoch, counter, payload)``
    per well-formed frame, where status is OK (authentic and fresh: payload given), STALE
    (authentic but of no session we know: answer with :meth:`encode_sync`), REPLAY (authentic,
    already seen or older than the window), FORGED (wrong tag), UNKNOWN (no key set for the
    node id) or MODE (a format-1 frame from a node with a key, or format 2 from one without).
    Only OK frames carry their payload; the others carry b"" and count in their counter.

    Bytes are collected up to each zero delimiter; a block longer than the largest valid
    encoded frame is dropped as it streams (the buffer never grows past that bound). Malformed
    blocks count in ``bad_frames`` (not COBS, too short, unknown version) or ``crc_errors``,
    and their bytes in ``discarded_bytes``. Never raises on input.
    """

    cdef unsigned char *_buf
    cdef unsigned char *_raw
    cdef Py_ssize_t _n
    cdef bint _skip
    cdef dict _nodes
    cdef readonly Py_ssize_t max_encoded, frames, crc_errors, bad_frames, discarded_bytes
    cdef readonly Py_ssize_t accepted, stale, replays, forged, unknown, wrong_mode

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
        self._nodes = {}
        self.frames = self.crc_errors = self.bad_frames = self.discarded_bytes = 0
        self.accepted = self.stale = self.replays = self.forged = self.unknown = 0
        self.wrong_mode = 0

    def __dealloc__(self):
        free(self._buf)
        free(self._raw)

    # -- keys and sessions -------------------------------------------------------------------
    def set_key(self, int node_id, key) -> None:
        """Accept ``node_id`` with this key (16-64 bytes), or None: format 1, unauthenticated."""
        if not 0 <= node_id <= 0xFFFF:
            raise ValueError("node_id 0..65535")
        self._nodes[node_id] = _Node(None if key is None else bytes(key))

    def expect(self, int node_id, epoch) -> None:
        """Offer ``epoch`` (a fresh random nonzero u32) as the node's next session."""
        cdef _Node st = self._node(node_id)
        if not 0 < epoch <= 0xFFFFFFFF or epoch == st.epoch:
            raise ValueError("an offered epoch is 1..2**32-1 and not the current one")
        st.pending = epoch

    def epoch(self, int node_id) -> int:
        """The node's current session (0: none yet)."""
        return self._node(node_id).epoch

    def pending(self, int node_id) -> int:
        """The session offered to the node and not yet taken up (0: none)."""
        return self._node(node_id).pending

    cdef _Node _node(self, int node_id):
        st = self._nodes.get(node_id)
        if st is None:
            raise ValueError(f"node {node_id} has no key set")
        return <_Node>st

    def encode(self, int type, int node_id, int seq, payload=b"") -> bytes:
        """A frame to the node in its current session, with the gateway's next counter."""
        cdef _Node st = self._node(node_id)
        cdef const unsigned char[::1] p = _checked(type, node_id, seq, payload)
        if not st.keyed:
            return _frame_bytes(1, type, node_id, seq, 0, 0, p, NULL, NULL)
        if st.epoch == 0:
            raise ValueError(f"node {node_id} has no session yet")
        if st.tx >= 0xFFFFFFFF:  # used up: drop it, the node's next frame is SYNCed
            st.epoch = 0
            raise ValueError(f"node {node_id}: session counter exhausted")
        st.tx += 1
        return _frame_bytes(2, type, node_id, seq, st.epoch, st.tx, p, st.dist, st.dost)

    def encode_sync(self, int node_id, epoch, counter) -> bytes:
        """SYNC answering the node's frame (epoch, counter): take up the pending session."""
        cdef _Node st = self._node(node_id)
        cdef unsigned char nonce[4]
        if not st.keyed or st.pending == 0:
            raise ValueError(f"node {node_id}: no key or no session offered")
        if not 0 <= epoch <= 0xFFFFFFFF or not 0 <= counter <= 0xFFFFFFFF:
            raise ValueError("epoch and counter 0..2**32-1")
        _put32(nonce, st.pending)
        return _frame_bytes(2, T_SYNC, node_id, 0, epoch, counter,
                            <const unsigned char[:4]>nonce, st.dist, st.dost)

    # -- bytes in ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop a partial frame (counters and sessions are kept)."""
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
        cdef unsigned char tag[32]
        cdef bint plain
        cdef int status, node_id
        cdef uint32_t epoch = 0, counter = 0
        cdef _Node st
        if m < MIN_FRAME_PLAIN or (r[0] != 1 and r[0] != 2) or (r[0] == 2 and m < MIN_FRAME):
            self.bad_frames += 1
            self.discarded_bytes += self._n
            return
        if gw_crc16(r, m - 2) != (r[m - 2] | (r[m - 1] << 8)):
            self.crc_errors += 1
            self.discarded_bytes += self._n
            return
        self.frames += 1
        node_id = (r[2] << 8) | r[3]
        plain = r[0] == 1
        if not plain:
            epoch = _be32(r + 6)
            counter = _be32(r + 10)
        obj = self._nodes.get(node_id)
        if obj is None:
            status = 4  # UNKNOWN
        else:
            st = <_Node>obj
            if plain == st.keyed:
                status = 5  # MODE
            elif plain:
                status = 0
            else:
                gw_hmac_sha256(st.uist, st.uost, r, m - 2 - C_TAG, tag)
                if gw_ct_diff(tag, r + m - 2 - C_TAG, C_TAG):
                    status = 3  # FORGED
                else:
                    status = st.fresh(epoch, counter)
        payload = b""
        if status == 0:
            self.accepted += 1
            if plain:
                payload = PyBytes_FromStringAndSize(<char *>r + 6, m - 8)
            else:
                payload = PyBytes_FromStringAndSize(<char *>r + C_HEADER, m - 2 - C_TAG - C_HEADER)
        elif status == 1:
            self.stale += 1
        elif status == 2:
            self.replays += 1
        elif status == 3:
            self.forged += 1
        elif status == 4:
            self.unknown += 1
        else:
            self.wrong_mode += 1
        out.append((status, r[1], node_id, (r[4] << 8) | r[5], epoch, counter, payload))
