"""Node frame protocol, pure-Python twin of native/node_frame.pyx (see docs/node-frame.md).

A frame is ``version, type, node_id (BE16), seq (BE16), payload, CRC-16 (Modbus, LE)``, COBS
encoded and terminated by one zero byte, so a receiver finds the next frame boundary after any
garbage without lengths to trust. Readings payloads are ``count`` then ``count`` entries of
``channel, type, value`` (big-endian) and decode in bulk into typed arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from gateway._pure.modbus import crc16

VERSION = 1
T_READINGS, T_ACK, T_WRITE, T_WRITE_ACK = 1, 2, 3, 4
V_BOOL, V_INT16, V_UINT16, V_INT32, V_UINT32, V_FLOAT32, V_FLOAT64 = 0, 1, 2, 3, 4, 5, 6
VALUE_TYPES = {"bool": V_BOOL, "int16": V_INT16, "uint16": V_UINT16, "int32": V_INT32,
               "uint32": V_UINT32, "float32": V_FLOAT32, "float64": V_FLOAT64}  # fmt: skip
_FORMATS = {V_BOOL: ">B", V_INT16: ">h", V_UINT16: ">H", V_INT32: ">i", V_UINT32: ">I",
            V_FLOAT32: ">f", V_FLOAT64: ">d"}  # fmt: skip
VALUE_SIZES = {k: struct.calcsize(v) for k, v in _FORMATS.items()}
HEADER = 6
MIN_FRAME = HEADER + 2
MAX_PAYLOAD = 1024


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode ``data`` (no zero bytes in the result; the delimiter is not appended)."""
    out = bytearray()
    block = bytearray()
    for b in bytes(data):
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes | None:
    """Decode one COBS block (without delimiter); None if it is not valid COBS."""
    src = bytes(data)
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        code = src[i]
        end = i + code
        if code == 0 or end > n:
            return None
        block = src[i + 1 : end]
        if 0 in block:
            return None
        out += block
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(
    type: int, node_id: int, seq: int, payload: bytes | bytearray | memoryview = b""
) -> bytes:
    """One frame on the wire: COBS(header + payload + CRC) + b"\\x00"."""
    if not 0 <= type <= 255 or not 0 <= node_id <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise ValueError("type 0..255, node_id and seq 0..65535")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    raw = bytes((VERSION, type)) + node_id.to_bytes(2, "big") + seq.to_bytes(2, "big")
    raw += bytes(payload)
    raw += crc16(raw).to_bytes(2, "little")
    return cobs_encode(raw) + b"\x00"


def encode_readings(readings: list[tuple[int, int, float]]) -> bytes:
    """Readings payload from ``(channel, value_type, value)`` triples."""
    if len(readings) > 255:
        raise ValueError("at most 255 readings per frame")
    out = bytearray((len(readings),))
    for channel, vtype, value in readings:
        fmt = _FORMATS.get(vtype)
        if fmt is None or not 0 <= channel <= 255:
            raise ValueError(f"bad reading ({channel}, {vtype})")
        v: Any = value
        if vtype == V_BOOL:
            v = 1 if value else 0
        elif vtype not in (V_FLOAT32, V_FLOAT64):
            v = int(value)
        out += bytes((channel, vtype)) + struct.pack(fmt, v)
    return bytes(out)


def decode_readings(
    payload: bytes | bytearray | memoryview, channels: np.ndarray, values: np.ndarray
) -> int:
    """Decode a readings payload into ``channels`` (uint8) and ``values`` (float64).

    Returns the number of readings, or -1 if the payload is malformed (count does not match
    the bytes, unknown value type) or the arrays are too short for it.
    """
    p = bytes(payload)
    if not p:
        return -1
    count = p[0]
    if count > len(channels) or count > len(values):
        return -1
    pos = 1
    for i in range(count):
        if pos + 2 > len(p):
            return -1
        vtype = p[pos + 1]
        fmt = _FORMATS.get(vtype)
        if fmt is None:
            return -1
        size = VALUE_SIZES[vtype]
        if pos + 2 + size > len(p):
            return -1
        channels[i] = p[pos]
        (v,) = struct.unpack_from(fmt, p, pos + 2)
        values[i] = float(v != 0) if vtype == V_BOOL else float(v)
        pos += 2 + size
    return count if pos == len(p) else -1


class NodeFrameParser:
    """Incremental parser: bytes split anywhere -> ``(type, node_id, seq, payload)`` frames.

    Bytes are collected up to each zero delimiter; a block longer than the largest valid
    encoded frame is dropped as it streams (the buffer never grows past that bound). Rejected
    blocks count in ``bad_frames`` (not COBS, too short, unknown version) or ``crc_errors``,
    and their bytes in ``discarded_bytes``. Never raises on input.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= 65535:
            raise ValueError("max_payload must be 0..65535")
        raw = MIN_FRAME + max_payload
        self.max_encoded = raw + raw // 254 + 1
        self._buf = bytearray()
        self._skip = False
        self.frames = self.crc_errors = self.bad_frames = self.discarded_bytes = 0

    def reset(self) -> None:
        """Drop a partial frame (counters are kept)."""
        self._buf.clear()
        self._skip = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, int, bytes]]:
        out: list[tuple[int, int, int, bytes]] = []
        buf = self._buf
        for b in bytes(data):
            if b != 0:
                if self._skip:
                    self.discarded_bytes += 1
                elif len(buf) >= self.max_encoded:
                    self.bad_frames += 1
                    self.discarded_bytes += len(buf) + 1
                    buf.clear()
                    self._skip = True
                else:
                    buf.append(b)
                continue
            if self._skip:
                self._skip = False
                continue
            if buf:
                self._frame(bytes(buf), out)
                buf.clear()
        return out

    def _frame(self, block: bytes, out: list[tuple[int, int, int, bytes]]) -> None:
        raw = cobs_decode(block)
        if raw is None or len(raw) < MIN_FRAME or raw[0] != VERSION:
            self.bad_frames += 1
            self.discarded_bytes += len(block)
            return
        if crc16(raw[:-2]) != raw[-2] | (raw[-1] << 8):
            self.crc_errors += 1
            self.discarded_bytes += len(block)
            return
        self.frames += 1
        out.append((raw[1], (raw[2] << 8) | raw[3], (raw[4] << 8) | raw[5], raw[HEADER:-2]))
