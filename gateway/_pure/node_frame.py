"""Node frame protocol, pure-Python twin of native/node_frame.pyx (see docs/node-frame.md).

A format-2 frame is ``version, type, node_id (BE16), seq (BE16), epoch (BE32), counter (BE32),
payload, tag (16), CRC-16 (Modbus, LE)``, COBS encoded and terminated by one zero byte, so a
receiver finds the next frame boundary after any garbage without lengths to trust. The tag is
HMAC-SHA256 (truncated to 16 bytes) under the node's key for that direction; ``epoch`` names a
session the gateway handed out and ``counter`` is checked against a sliding replay window.
Format-1 frames (no epoch, counter or tag) are only accepted from nodes set up without a key.
Readings payloads are ``count`` then ``count`` entries of ``channel, type, value``
(big-endian) and decode in bulk into typed arrays.
"""

from __future__ import annotations

import hmac
import struct
from typing import Any

import numpy as np

from gateway._pure.modbus import crc16

VERSION = 2
VERSION_PLAIN = 1  # no MAC: only from nodes configured without a key
T_READINGS, T_ACK, T_WRITE, T_WRITE_ACK, T_SYNC = 1, 2, 3, 4, 5
V_BOOL, V_INT16, V_UINT16, V_INT32, V_UINT32, V_FLOAT32, V_FLOAT64 = 0, 1, 2, 3, 4, 5, 6
VALUE_TYPES = {"bool": V_BOOL, "int16": V_INT16, "uint16": V_UINT16, "int32": V_INT32,
               "uint32": V_UINT32, "float32": V_FLOAT32, "float64": V_FLOAT64}  # fmt: skip
_FORMATS = {V_BOOL: ">B", V_INT16: ">h", V_UINT16: ">H", V_INT32: ">i", V_UINT32: ">I",
            V_FLOAT32: ">f", V_FLOAT64: ">d"}  # fmt: skip
VALUE_SIZES = {k: struct.calcsize(v) for k, v in _FORMATS.items()}
HEADER = 14
HEADER_PLAIN = 6
TAG = 16
MIN_FRAME = HEADER + TAG + 2
MIN_FRAME_PLAIN = HEADER_PLAIN + 2
MAX_PAYLOAD = 1024
WINDOW = 64  # replay window: counters up to 63 behind the highest are accepted once
KEY_MIN, KEY_MAX = 16, 64
#: What the parser says about each well-formed frame (the first field of each tuple).
OK, STALE, REPLAY, FORGED, UNKNOWN, MODE = 0, 1, 2, 3, 4, 5
_MASK64 = (1 << 64) - 1


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


def mac_keys(key: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
    """The two MAC keys of a node key: (node -> gateway, gateway -> node).

    One key per direction, so a frame reflected back to its sender fails the MAC.
    """
    k = bytes(key)
    if not KEY_MIN <= len(k) <= KEY_MAX:
        raise ValueError(f"a node key has {KEY_MIN} to {KEY_MAX} bytes, not {len(k)}")
    return hmac.digest(k, b"gwnode up", "sha256"), hmac.digest(k, b"gwnode down", "sha256")


def _check(type: int, node_id: int, seq: int, payload: Any) -> None:
    if not 0 <= type <= 255 or not 0 <= node_id <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise ValueError("type 0..255, node_id and seq 0..65535")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")


def _seal(raw: bytes, mac_key: bytes | None) -> bytes:
    if mac_key is not None:
        raw += hmac.digest(mac_key, raw, "sha256")[:TAG]
    raw += crc16(raw).to_bytes(2, "little")
    return cobs_encode(raw) + b"\x00"


def encode_frame(
    type: int,
    node_id: int,
    seq: int,
    payload: bytes | bytearray | memoryview = b"",
    key: bytes | None = None,
    epoch: int = 0,
    counter: int = 0,
    up: bool = False,
) -> bytes:
    """One frame on the wire: COBS(header + payload [+ tag] + CRC) + b"\\x00".

    Without ``key`` a format-1 frame (no MAC); with it a format-2 frame MACed under the node
    key's direction key (``up``: node -> gateway).
    """
    _check(type, node_id, seq, payload)
    if key is None:
        raw = bytes((VERSION_PLAIN, type)) + node_id.to_bytes(2, "big") + seq.to_bytes(2, "big")
        return _seal(raw + bytes(payload), None)
    if not 0 <= epoch <= 0xFFFFFFFF or not 0 <= counter <= 0xFFFFFFFF:
        raise ValueError("epoch and counter 0..2**32-1")
    raw = struct.pack(">BBHHII", VERSION, type, node_id, seq, epoch, counter) + bytes(payload)
    return _seal(raw, mac_keys(key)[0 if up else 1])


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


Frame = tuple[int, int, int, int, int, int, bytes]


class _Node:
    """One node's keys and session: its epoch, the one offered to it, the replay window."""

    __slots__ = ("up", "down", "epoch", "pending", "top", "window", "tx")

    def __init__(self, key: bytes | None) -> None:
        self.up: bytes | None = None
        self.down: bytes | None = None
        if key is not None:
            self.up, self.down = mac_keys(key)
        self.epoch = self.pending = self.top = self.window = self.tx = 0

    def fresh(self, epoch: int, counter: int) -> int:
        """OK (and remember the counter), STALE (not this session) or REPLAY."""
        if epoch == 0 or epoch not in (self.epoch, self.pending):
            return STALE
        if epoch != self.epoch:  # the first frame of the session we offered: it starts here
            self.epoch, self.pending, self.top, self.window, self.tx = epoch, 0, counter, 1, 0
            return OK
        if counter > self.top:
            shift = counter - self.top
            self.window = ((self.window << shift) | 1) & _MASK64 if shift < WINDOW else 1
            self.top = counter
            return OK
        behind = self.top - counter
        if behind >= WINDOW or (self.window >> behind) & 1:
            return REPLAY
        self.window |= 1 << behind
        return OK


def _tag_ok(mac_key: bytes | None, raw: bytes) -> bool:
    assert mac_key is not None
    tag = hmac.digest(mac_key, raw[: -2 - TAG], "sha256")[:TAG]
    return hmac.compare_digest(tag, raw[-2 - TAG : -2])


class NodeFrameParser:
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

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= 65535:
            raise ValueError("max_payload must be 0..65535")
        raw = MIN_FRAME + max_payload
        self.max_encoded = raw + raw // 254 + 1
        self._buf = bytearray()
        self._skip = False
        self._nodes: dict[int, _Node] = {}
        self.frames = self.crc_errors = self.bad_frames = self.discarded_bytes = 0
        self.accepted = self.stale = self.replays = self.forged = self.unknown = 0
        self.wrong_mode = 0

    # -- keys and sessions -------------------------------------------------------------------
    def set_key(self, node_id: int, key: bytes | None) -> None:
        """Accept ``node_id`` with this key (16-64 bytes), or None: format 1, unauthenticated."""
        if not 0 <= node_id <= 0xFFFF:
            raise ValueError("node_id 0..65535")
        self._nodes[node_id] = _Node(None if key is None else bytes(key))

    def expect(self, node_id: int, epoch: int) -> None:
        """Offer ``epoch`` (a fresh random nonzero u32) as the node's next session."""
        st = self._node(node_id)
        if not 0 < epoch <= 0xFFFFFFFF or epoch == st.epoch:
            raise ValueError("an offered epoch is 1..2**32-1 and not the current one")
        st.pending = epoch

    def epoch(self, node_id: int) -> int:
        """The node's current session (0: none yet)."""
        return self._node(node_id).epoch

    def pending(self, node_id: int) -> int:
        """The session offered to the node and not yet taken up (0: none)."""
        return self._node(node_id).pending

    def _node(self, node_id: int) -> _Node:
        st = self._nodes.get(node_id)
        if st is None:
            raise ValueError(f"node {node_id} has no key set")
        return st

    def encode(
        self, type: int, node_id: int, seq: int, payload: bytes | bytearray | memoryview = b""
    ) -> bytes:
        """A frame to the node in its current session, with the gateway's next counter."""
        st = self._node(node_id)
        _check(type, node_id, seq, payload)
        if st.down is None:
            return encode_frame(type, node_id, seq, payload)
        if st.epoch == 0:
            raise ValueError(f"node {node_id} has no session yet")
        if st.tx >= 0xFFFFFFFF:  # used up: drop it, the node's next frame is SYNCed
            st.epoch = 0
            raise ValueError(f"node {node_id}: session counter exhausted")
        st.tx += 1
        raw = struct.pack(">BBHHII", VERSION, type, node_id, seq, st.epoch, st.tx)
        return _seal(raw + bytes(payload), st.down)

    def encode_sync(self, node_id: int, epoch: int, counter: int) -> bytes:
        """SYNC answering the node's frame (epoch, counter): take up the pending session."""
        st = self._node(node_id)
        if st.down is None or st.pending == 0:
            raise ValueError(f"node {node_id}: no key or no session offered")
        if not 0 <= epoch <= 0xFFFFFFFF or not 0 <= counter <= 0xFFFFFFFF:
            raise ValueError("epoch and counter 0..2**32-1")
        raw = struct.pack(">BBHHIII", VERSION, T_SYNC, node_id, 0, epoch, counter, st.pending)
        return _seal(raw, st.down)

    # -- bytes in ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop a partial frame (counters and sessions are kept)."""
        self._buf.clear()
        self._skip = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        out: list[Frame] = []
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

    def _frame(self, block: bytes, out: list[Frame]) -> None:
        raw = cobs_decode(block)
        if (
            raw is None
            or len(raw) < MIN_FRAME_PLAIN
            or raw[0] not in (VERSION, VERSION_PLAIN)
            or (raw[0] == VERSION and len(raw) < MIN_FRAME)
        ):
            self.bad_frames += 1
            self.discarded_bytes += len(block)
            return
        if crc16(raw[:-2]) != raw[-2] | (raw[-1] << 8):
            self.crc_errors += 1
            self.discarded_bytes += len(block)
            return
        self.frames += 1
        node_id, seq = (raw[2] << 8) | raw[3], (raw[4] << 8) | raw[5]
        plain = raw[0] == VERSION_PLAIN
        epoch, counter = (0, 0) if plain else struct.unpack_from(">II", raw, 6)
        st = self._nodes.get(node_id)
        if st is None:
            status = UNKNOWN
        elif plain != (st.up is None):
            status = MODE
        elif plain:
            status = OK
        elif not _tag_ok(st.up, raw):
            status = FORGED
        else:
            status = st.fresh(epoch, counter)
        payload = b""
        if status == OK:
            self.accepted += 1
            payload = raw[HEADER_PLAIN:-2] if plain else raw[HEADER : -2 - TAG]
        elif status == STALE:
            self.stale += 1
        elif status == REPLAY:
            self.replays += 1
        elif status == FORGED:
            self.forged += 1
        elif status == UNKNOWN:
            self.unknown += 1
        else:
            self.wrong_mode += 1
        out.append((status, raw[1], node_id, seq, epoch, counter, payload))
