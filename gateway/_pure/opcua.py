"""OPC UA binary decoding of the hot path, pure-Python twin of ``native/opcua.pyx``.

Decodes PublishResponses (their DataChangeNotifications) and ReadResponses into typed columns:
``points`` (uint32), ``values`` (float64), ``source_ts`` / ``server_ts`` (float64 epoch seconds,
NaN when the DataValue has none) and ``quality`` (uint8: 0 Good, 1 Uncertain, 2 Bad from the
StatusCode's severity bits). The input is a whole MSG chunk of SecurityPolicy None (a final
``MSGF`` chunk, as read off the socket) or a service body starting with its type NodeId (what
follows the sequence header, or what ``asyncua.ua.ua_binary.struct_to_binary`` produces).

Scalar Variants of Boolean, SByte, Byte, (U)Int16/32/64, Float, Double, DateTime (as epoch seconds)
and StatusCode (its code) become values. Anything else (String, ByteString, arrays,
ExtensionObjects, ...) still gets its row, with NaN as value, and lands in ``last_other`` as
``(row, variant type, offset, length)``: the Variant's bytes are ``data[offset:offset+length]``,
so the driver can decode those rare values with the stack, off the hot path. A Null Variant is
NaN without an entry. Bad quality always carries NaN (as everywhere in the gateway).

Hostile input gets a ValueError that names the byte offset: every length is checked against the
bytes left, arrays are capped at :data:`MAX_ARRAY`, nesting at :data:`MAX_DEPTH`, and the outputs
are caller-given arrays (:func:`max_rows` of the input's size always suffices).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np

GOOD, UNCERTAIN, BAD = 0, 1, 2
#: Longest array accepted anywhere in a message.
MAX_ARRAY = 1 << 20
#: Deepest nesting of Variants / DataValues / DiagnosticInfos.
MAX_DEPTH = 16
#: Binary encoding ids (namespace 0) of the messages and notifications understood here.
PUBLISH_RESPONSE, READ_RESPONSE, SERVICE_FAULT = 829, 634, 397
DATA_CHANGE, EVENT_LIST, STATUS_CHANGE = 811, 916, 820

_EPOCH_TICKS = 116444736000000000  # 1601-01-01 to 1970-01-01 in 100 ns ticks
_NAN = math.nan
# Wire size of the fixed-size Variant types; the others are walked.
_FIXED = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 4, 11: 8, 13: 8, 14: 16, 19: 4}
_SCALAR = {
    1: struct.Struct("<?"),
    2: struct.Struct("<b"),
    3: struct.Struct("<B"),
    4: struct.Struct("<h"),
    5: struct.Struct("<H"),
    6: struct.Struct("<i"),
    7: struct.Struct("<I"),
    8: struct.Struct("<q"),
    9: struct.Struct("<Q"),
    10: struct.Struct("<f"),
    11: struct.Struct("<d"),
    13: struct.Struct("<q"),
    19: struct.Struct("<I"),
}
_U8, _U16, _U32, _I32, _I64 = (struct.Struct(f) for f in ("<B", "<H", "<I", "<i", "<q"))
_DIAG_SIZES = ((0x01, 4), (0x02, 4), (0x08, 4), (0x04, 4))  # SymbolicId, Uri, Locale, Text


def max_rows(nbytes: int) -> int:
    """Rows a message of ``nbytes`` can yield at most (a monitored item is at least 5 bytes)."""
    return nbytes // 5 + 1


def quality_of(status: int) -> int:
    """Our quality of an OPC UA StatusCode: its two severity bits (0b11 is reserved: Bad)."""
    sev = (status >> 30) & 3
    return GOOD if sev == 0 else UNCERTAIN if sev == 1 else BAD


def ticks_to_epoch(ticks: int) -> float:
    """An OPC UA DateTime (100 ns ticks since 1601) in seconds since 1970."""
    return (ticks - _EPOCH_TICKS) / 1e7


class _Reader:
    __slots__ = ("buf", "pos", "end", "vend")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end
        self.vend = 0  # where the last DataValue's Variant ended

    def fail(self, what: str) -> ValueError:
        return ValueError(f"OPC UA message: {what} at byte {self.pos}")

    def need(self, n: int, what: str) -> int:
        p = self.pos
        if n < 0 or n > self.end - p:
            raise self.fail(f"{what} needs {n} bytes, {self.end - p} left")
        self.pos = p + n
        return p

    def u8(self, what: str) -> int:
        return self.buf[self.need(1, what)]

    def u16(self, what: str) -> int:
        return int(_U16.unpack_from(self.buf, self.need(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack_from(self.buf, self.need(4, what))[0])

    def i64(self, what: str) -> int:
        return int(_I64.unpack_from(self.buf, self.need(8, what))[0])

    def length(self, what: str, min_size: int) -> int:
        """An array length: -1 (null) is 0; longer than the bytes left or MAX_ARRAY fails."""
        n = int(_I32.unpack_from(self.buf, self.need(4, what))[0])
        if n == -1:
            return 0
        if n < -1 or n > MAX_ARRAY or n * min_size > self.end - self.pos:
            self.pos -= 4
            raise self.fail(f"{what} length {n} is out of bounds")
        return n

    def string(self, what: str) -> None:
        self.need(self.length(what, 1), what)

    def node_id(self, what: str) -> int:
        """Skip a NodeId; return its numeric id in namespace 0 (-1 for any other)."""
        enc = self.u8(what)
        kind = enc & 0x3F
        ns = 0
        if kind == 0:
            ident = self.u8(what)
        elif kind == 1:
            ns = self.u8(what)
            ident = self.u16(what)
        elif kind == 2:
            ns = self.u16(what)
            ident = self.u32(what)
        elif kind in (3, 5):
            self.need(2, what)
            self.string(what)
            ident = -1
        elif kind == 4:
            self.need(18, what)
            ident = -1
        else:
            self.pos -= 1
            raise self.fail(f"{what} has NodeId encoding {enc:#x}")
        if enc & 0x80:  # ExpandedNodeId: namespace URI
            self.string(what)
            ident = -1
        if enc & 0x40:  # ExpandedNodeId: server index
            self.need(4, what)
            ident = -1
        return ident if ns == 0 else -1

    def diagnostic(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail("DiagnosticInfo nested too deep")
        mask = self.u8("DiagnosticInfo")
        for bit, size in _DIAG_SIZES:
            if mask & bit:
                self.need(size, "DiagnosticInfo")
        if mask & 0x10:
            self.string("DiagnosticInfo")
        if mask & 0x20:
            self.need(4, "DiagnosticInfo")
        if mask & 0x40:
            self.diagnostic(depth + 1)

    def diagnostics(self) -> None:
        for _ in range(self.length("DiagnosticInfos", 1)):
            self.diagnostic(0)

    def extension_object(self) -> None:
        self.node_id("ExtensionObject")
        enc = self.u8("ExtensionObject")
        if enc in (1, 2):
            self.string("ExtensionObject body")
        elif enc != 0:
            self.pos -= 1
            raise self.fail(f"ExtensionObject has body encoding {enc}")

    def skip_value(self, t: int, depth: int) -> None:
        """Skip one non-array value of builtin type ``t``."""
        size = _FIXED.get(t)
        if size is not None:
            self.need(size, "Variant")
        elif t in (12, 15, 16):
            self.string("Variant")
        elif t in (17, 18):
            self.node_id("Variant")
        elif t == 20:
            self.need(2, "QualifiedName")
            self.string("QualifiedName")
        elif t == 21:
            mask = self.u8("LocalizedText")
            if mask & 1:
                self.string("LocalizedText")
            if mask & 2:
                self.string("LocalizedText")
        elif t == 22:
            self.extension_object()
        elif t == 23:
            self.data_value(depth + 1)
        elif t == 24:
            self.variant(depth + 1)
        elif t == 25:
            self.diagnostic(depth + 1)
        else:
            raise self.fail(f"Variant has unknown type {t}")

    def variant(self, depth: int) -> tuple[int, float]:
        """Read a Variant: (type id, value) for numeric scalars, (type id | 0x100, NaN) else."""
        if depth > MAX_DEPTH:
            raise self.fail("Variant nested too deep")
        mask = self.u8("Variant")
        t = mask & 0x3F
        if t > 25:
            self.pos -= 1
            raise self.fail(f"Variant has unknown type {t}")
        if mask & 0x80:
            n = self.length("Variant array", _FIXED.get(t, 1) if t else 0)
            size = _FIXED.get(t)
            if size is not None:
                self.need(n * size, "Variant array")
            elif t:
                for _ in range(n):
                    self.skip_value(t, depth)
            if mask & 0x40:
                self.need(4 * self.length("ArrayDimensions", 4), "ArrayDimensions")
            return t | 0x100, _NAN
        if mask & 0x40:
            self.pos -= 1
            raise self.fail("scalar Variant has ArrayDimensions")
        if t == 0:
            return 0, _NAN
        s = _SCALAR.get(t)
        if s is None:
            self.skip_value(t, depth)
            return t | 0x100, _NAN
        v = s.unpack_from(self.buf, self.need(s.size, "Variant"))[0]
        if t == 13:
            return t, ticks_to_epoch(v)
        return t, float(v)

    def data_value(self, depth: int) -> tuple[int, float, int, float, float]:
        """(variant type, value, status, source ts, server ts) of a DataValue."""
        mask = self.u8("DataValue")
        t, v = self.variant(depth) if mask & 0x01 else (0, _NAN)
        self.vend = self.pos
        status = self.u32("DataValue") if mask & 0x02 else 0
        src = ticks_to_epoch(self.i64("DataValue")) if mask & 0x04 else _NAN
        if mask & 0x10:
            self.need(2, "DataValue")
        srv = ticks_to_epoch(self.i64("DataValue")) if mask & 0x08 else _NAN
        if mask & 0x20:
            self.need(2, "DataValue")
        return t, v, status, src, srv


class NotificationDecoder:
    """Decode PublishResponses and ReadResponses into caller-given columns.

    Parameters
    ----------
    handles : ``(client handle, point id)`` of every monitored item; notifications for other
        handles are skipped and counted in ``last_unknown``.

    After each decode: ``service_result``, ``subscription_id``, ``sequence_number``,
    ``publish_time`` (epoch s), ``more_notifications``, ``available_sequence_numbers`` (what
    Republish can still ask for), ``status_change`` (the StatusChangeNotification's code, or -1),
    ``last_events`` (EventNotificationLists skipped), ``last_unknown``, ``last_other``.
    """

    def __init__(self, handles: Iterable[tuple[int, int]]) -> None:
        self.by_handle: dict[int, int] = {}
        for handle, pid in handles:
            if not 0 <= handle <= 0xFFFFFFFF or not 0 <= pid <= 0xFFFFFFFF:
                raise ValueError(f"handle and point id must be uint32: {(handle, pid)}")
            if handle in self.by_handle:
                raise ValueError(f"client handle {handle} is mapped twice")
            self.by_handle[handle] = pid
        self.n_handles = len(self.by_handle)
        self._reset()

    def _reset(self) -> None:
        self.service_result = 0
        self.request_handle = 0
        self.subscription_id = 0
        self.sequence_number = 0
        self.publish_time = _NAN
        self.more_notifications = False
        self.available_sequence_numbers: list[int] = []
        self.status_change = -1
        self.last_events = 0
        self.last_unknown = 0
        self.last_other: list[tuple[int, int, int, int]] = []

    def _open(self, data: bytes | bytearray | memoryview, want: int) -> _Reader | None:
        """Frame, type id and ResponseHeader; None for a ServiceFault (service_result is set)."""
        self._reset()
        buf = data if isinstance(data, bytes | bytearray) else memoryview(data).cast("B")
        r = _Reader(buf, 0, len(buf))
        if len(buf) >= 3 and bytes(buf[:3]) == b"MSG":
            kind = r.need(4, "MSG header") + 3
            if buf[kind] != 0x46:  # 'F'
                r.pos = kind
                raise r.fail("only final MSG chunks (F) are decoded; reassemble C, drop A")
            size = r.u32("MSG header")
            if size != len(buf):
                r.pos = 4
                raise r.fail(f"MSG size {size} != {len(buf)} bytes given")
            r.need(16, "MSG header")  # channel id, token id, sequence number, request id
        at = r.pos
        tid = r.node_id("type id")
        if tid not in (want, SERVICE_FAULT):
            r.pos = at
            raise r.fail(f"type id {tid} is not the expected {want} (or a ServiceFault)")
        r.i64("ResponseHeader")
        self.request_handle = r.u32("ResponseHeader")
        self.service_result = r.u32("ResponseHeader")
        r.diagnostic(0)
        for _ in range(r.length("StringTable", 4)):
            r.string("StringTable")
        r.extension_object()
        return None if tid == SERVICE_FAULT else r

    def _row(self, r: _Reader, n: int, pid: int, cols: tuple[np.ndarray, ...]) -> None:
        points, values, src_ts, srv_ts, quality = cols
        if n >= len(points):
            raise r.fail(f"output columns hold {len(points)} rows; the message has more")
        at = r.pos
        t, v, status, src, srv = r.data_value(0)
        q = quality_of(status)
        if t & 0x100:
            var = at + 1  # the Variant follows the DataValue's mask byte
            self.last_other.append((n, t & 0xFF, var, r.vend - var))
        points[n] = pid
        values[n] = _NAN if q == BAD else v
        src_ts[n] = src
        srv_ts[n] = srv
        quality[n] = q

    def decode_publish(
        self,
        data: bytes | bytearray | memoryview,
        points: np.ndarray,
        values: np.ndarray,
        source_ts: np.ndarray,
        server_ts: np.ndarray,
        quality: np.ndarray,
    ) -> int:
        """Decode one PublishResponse; return the number of rows written."""
        cols = (points, values, source_ts, server_ts, quality)
        _check_columns(cols)
        r = self._open(data, PUBLISH_RESPONSE)
        if r is None:
            return 0
        self.subscription_id = r.u32("PublishResponse")
        self.available_sequence_numbers = [
            r.u32("AvailableSequenceNumbers")
            for _ in range(r.length("AvailableSequenceNumbers", 4))
        ]
        self.more_notifications = r.u8("PublishResponse") != 0
        self.sequence_number = r.u32("NotificationMessage")
        self.publish_time = ticks_to_epoch(r.i64("NotificationMessage"))
        n = 0
        for _ in range(r.length("NotificationData", 3)):
            tid = r.node_id("NotificationData")
            enc = r.u8("NotificationData")
            if enc == 0:
                continue
            if enc not in (1, 2):
                r.pos -= 1
                raise r.fail(f"NotificationData has body encoding {enc}")
            size = r.length("NotificationData body", 1)
            end = r.pos + size
            if tid == DATA_CHANGE and enc == 1:
                body = _Reader(r.buf, r.pos, end)
                for _ in range(body.length("MonitoredItems", 5)):
                    pid = self.by_handle.get(body.u32("MonitoredItemNotification"))
                    if pid is None:
                        self.last_unknown += 1
                        body.data_value(0)
                    else:
                        self._row(body, n, pid, cols)
                        n += 1
                body.diagnostics()
            elif tid == STATUS_CHANGE and enc == 1:
                self.status_change = _Reader(r.buf, r.pos, end).u32("StatusChangeNotification")
            elif tid == EVENT_LIST:
                self.last_events += 1
            r.pos = end
        for _ in range(r.length("Results", 4)):
            r.need(4, "Results")
        r.diagnostics()
        return n

    def decode_read(
        self,
        data: bytes | bytearray | memoryview,
        ids: np.ndarray,
        points: np.ndarray,
        values: np.ndarray,
        source_ts: np.ndarray,
        server_ts: np.ndarray,
        quality: np.ndarray,
    ) -> int:
        """Decode one ReadResponse whose request read the points ``ids`` (in that order)."""
        cols = (points, values, source_ts, server_ts, quality)
        _check_columns(cols)
        r = self._open(data, READ_RESPONSE)
        if r is None:
            return 0
        count = r.length("Results", 1)
        if count != len(ids):
            r.pos -= 4
            raise r.fail(f"ReadResponse has {count} results for {len(ids)} nodes read")
        for i in range(count):
            self._row(r, i, int(ids[i]), cols)
        r.diagnostics()
        return count


def _check_columns(cols: tuple[np.ndarray, ...]) -> None:
    if len({len(c) for c in cols}) != 1:
        raise ValueError("points, values, source_ts, server_ts and quality differ in length")
