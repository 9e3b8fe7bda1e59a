"""Modbus protocol core, pure-Python twin of ``native/modbus.pyx``.

Same public names and results as the compiled module (proven by tests/test_modbus_parity.py): CRC-16,
MBAP request builders, the incremental MBAP and RTU framers, and the bulk register decoder. Only
:mod:`gateway.impl` decides which of the two the runtime uses.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

T_INT16, T_UINT16, T_INT32, T_UINT32, T_FLOAT32, T_FLOAT64 = 0, 1, 2, 3, 4, 5
TYPE_CODES: dict[str, int] = {
    "int16": T_INT16,
    "uint16": T_UINT16,
    "int32": T_INT32,
    "uint32": T_UINT32,
    "float32": T_FLOAT32,
    "float64": T_FLOAT64,
}
TYPE_WORDS: dict[int, int] = {
    T_INT16: 1,
    T_UINT16: 1,
    T_INT32: 2,
    T_UINT32: 2,
    T_FLOAT32: 2,
    T_FLOAT64: 4,
}
WORD_LITTLE = 1
BYTE_LITTLE = 2

#: Largest MBAP length field (unit id + PDU of at most 253 bytes).
MBAP_MAX_LENGTH = 254

_STRUCT_CODES = {T_INT16: "h", T_UINT16: "H", T_INT32: "i", T_UINT32: "I", T_FLOAT32: "f"}
_STRUCT_CODES[T_FLOAT64] = "d"
_INT_LIMITS = {
    T_INT16: (-32768, 32767),
    T_UINT16: (0, 65535),
    T_INT32: (-(2**31), 2**31 - 1),
    T_UINT32: (0, 2**32 - 1),
}
_FLT32_MAX = 3.4028234663852886e38
_ORDERS = ("big", "little")


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent on the wire low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def order_flags(word_order: str, byte_order: str) -> int:
    """Flags for a point's ``word_order`` / ``byte_order`` ("big" or "little") config values."""
    if word_order not in _ORDERS:
        raise ValueError(f"word_order must be 'big' or 'little', not {word_order!r}")
    if byte_order not in _ORDERS:
        raise ValueError(f"byte_order must be 'big' or 'little', not {byte_order!r}")
    return (WORD_LITTLE if word_order == "little" else 0) | (
        BYTE_LITTLE if byte_order == "little" else 0
    )


def _check(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} out of range {lo}..{hi}")
    return value


def _mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    _check("tid", tid, 0, 0xFFFF)
    _check("unit", unit, 0, 0xFF)
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def build_read_request(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """MBAP ADU of a read request: coils (1), discrete inputs (2), holding (3), input (4)."""
    _check("function", function, 1, 4)
    _check("address", address, 0, 0xFFFF)
    _check("count", count, 1, 2000 if function <= 2 else 125)
    if address + count > 0x10000:
        raise ValueError(f"address {address} + count {count} runs past 65535")
    return _mbap(tid, unit, struct.pack(">BHH", function, address, count))


def build_write_single_coil(tid: int, unit: int, address: int, value: bool) -> bytes:
    """MBAP ADU of function 5 (write single coil; ON is 0xFF00)."""
    _check("address", address, 0, 0xFFFF)
    return _mbap(tid, unit, struct.pack(">BHH", 5, address, 0xFF00 if value else 0))


def build_write_single_register(tid: int, unit: int, address: int, value: int) -> bytes:
    """MBAP ADU of function 6 (write single register); ``value`` is the raw word 0..65535."""
    _check("address", address, 0, 0xFFFF)
    _check("value", value, 0, 0xFFFF)
    return _mbap(tid, unit, struct.pack(">BHH", 6, address, value))


def build_write_multiple_coils(tid: int, unit: int, address: int, values: Sequence[bool]) -> bytes:
    """MBAP ADU of function 15 (write 1..1968 coils, packed LSB first)."""
    n = len(values)
    _check("address", address, 0, 0xFFFF)
    _check("coil count", n, 1, 1968)
    if address + n > 0x10000:
        raise ValueError(f"address {address} + count {n} runs past 65535")
    packed = bytearray((n + 7) // 8)
    for i, v in enumerate(values):
        if v:
            packed[i >> 3] |= 1 << (i & 7)
    return _mbap(tid, unit, struct.pack(">BHHB", 15, address, n, len(packed)) + bytes(packed))


def build_write_multiple_registers(
    tid: int, unit: int, address: int, values: Sequence[int]
) -> bytes:
    """MBAP ADU of function 16 (write 1..123 raw register words)."""
    n = len(values)
    _check("address", address, 0, 0xFFFF)
    _check("register count", n, 1, 123)
    if address + n > 0x10000:
        raise ValueError(f"address {address} + count {n} runs past 65535")
    words = [_check("register value", v, 0, 0xFFFF) for v in values]
    return _mbap(tid, unit, struct.pack(f">BHHB{n}H", 16, address, n, 2 * n, *words))


def _check_type_flags(type_code: int, flags: int) -> None:
    if type_code not in TYPE_WORDS:
        raise ValueError(f"unknown register type code {type_code}")
    if not 0 <= flags <= (WORD_LITTLE | BYTE_LITTLE):
        raise ValueError(f"invalid order flags {flags}")


def _wire_permutation(type_code: int, flags: int) -> list[int]:
    """Wire byte index for each byte of the value in big-endian order (relative to its offset)."""
    words = list(range(TYPE_WORDS[type_code]))
    if flags & WORD_LITTLE:
        words.reverse()
    lo, hi = (1, 0) if flags & BYTE_LITTLE else (0, 1)
    return [i for w in words for i in (2 * w + lo, 2 * w + hi)]


def encode_value(type_code: int, flags: int, scale: float, bias: float, value: float) -> list[int]:
    """Raw register words (wire order) that decode back to engineering ``value``.

    ``raw = (value - bias) / scale``, rounded half to even for integer types. Raises ValueError when
    the result does not fit the type (NaN and infinities fit only the float types).
    """
    _check_type_flags(type_code, flags)
    if scale == 0.0:
        raise ValueError("scale must be nonzero")
    raw = (float(value) - float(bias)) / float(scale)
    if type_code in _INT_LIMITS:
        if not math.isfinite(raw):
            raise ValueError(f"{raw} cannot be written as an integer register value")
        lo, hi = _INT_LIMITS[type_code]
        rounded = round(raw)
        if not lo <= rounded <= hi:
            raise ValueError(f"raw value {rounded} out of range {lo}..{hi} for the register type")
        canonical = struct.pack(">" + _STRUCT_CODES[type_code], rounded)
    elif type_code == T_FLOAT32:
        if math.isfinite(raw) and abs(raw) > _FLT32_MAX:
            # Beyond FLT_MAX it may still round down to FLT_MAX; struct.pack tells exactly.
            try:
                canonical = struct.pack(">f", raw)
            except OverflowError:
                raise ValueError(f"raw value {raw} out of range for float32") from None
        else:
            canonical = struct.pack(">f", raw)
    else:
        canonical = struct.pack(">d", raw)
    wire = bytearray(len(canonical))
    for src, dst in enumerate(_wire_permutation(type_code, flags)):
        wire[dst] = canonical[src]
    return list(struct.unpack(f">{len(wire) // 2}H", wire))


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


class MbapFramer:
    """Incremental Modbus TCP framer: byte stream split anywhere -> complete ADUs.

    A header whose protocol id is not 0 or whose length field is outside 2..``max_adu - 6`` counts
    one bad frame; the framer then drops bytes one at a time until a plausible header starts the
    buffer (bytes dropped count in ``discarded_bytes``). Never raises on input.
    """

    def __init__(self, max_adu: int = 260) -> None:
        _check("max_adu", max_adu, 8, 6 + 0xFFFF)
        self._max_length = max_adu - 6
        self._buf = bytearray()
        self._resync = False
        self._frames = 0
        self._bad_frames = 0
        self._discarded = 0

    @property
    def frames(self) -> int:
        """Complete frames returned so far."""
        return self._frames

    @property
    def bad_frames(self) -> int:
        """Implausible headers seen (one per resync)."""
        return self._bad_frames

    @property
    def discarded_bytes(self) -> int:
        """Bytes dropped while resynchronising."""
        return self._discarded

    def reset(self) -> None:
        """Drop buffered partial data, e.g. after a reconnect; counters are kept."""
        self._buf.clear()
        self._resync = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, int, bytes]]:
        """Append ``data``; return complete frames as ``(tid, unit, function, body)``."""
        buf = self._buf
        buf += data
        out: list[tuple[int, int, int, bytes]] = []
        pos, n, max_length = 0, len(buf), self._max_length
        while n - pos >= 6:
            length = (buf[pos + 4] << 8) | buf[pos + 5]
            if buf[pos + 2] or buf[pos + 3] or length < 2 or length > max_length:
                if not self._resync:
                    self._bad_frames += 1
                    self._resync = True
                pos += 1
                self._discarded += 1
                continue
            self._resync = False
            end = pos + 6 + length
            if end > n:
                break
            tid = (buf[pos] << 8) | buf[pos + 1]
            out.append((tid, buf[pos + 6], buf[pos + 7], bytes(buf[pos + 8 : end])))
            self._frames += 1
            pos = end
        del buf[:pos]
        return out


# RTU frame length for a buffer starting at a candidate header: >0 length, 0 need more, -1 invalid.
def _rtu_response_length(buf: bytearray, pos: int, avail: int) -> int:
    unit, fc = buf[pos], buf[pos + 1]
    if unit == 0 or unit > 247:
        return -1
    if fc & 0x80:
        return 5 if 1 <= fc & 0x7F <= 127 else -1
    if 1 <= fc <= 4:
        if avail < 3:
            return 0
        count = buf[pos + 2]
        if count == 0 or count > 250 or (fc >= 3 and count & 1):
            return -1
        return 5 + count
    if fc in (5, 6, 15, 16):
        return 8
    return -1


def _rtu_request_length(buf: bytearray, pos: int, avail: int) -> int:
    unit, fc = buf[pos], buf[pos + 1]
    if unit > 247:
        return -1
    if 1 <= fc <= 6:
        return 8
    if fc in (15, 16):
        if avail < 7:
            return 0
        count = buf[pos + 6]
        if count == 0 or count > 246 or (fc == 16 and count & 1):
            return -1
        return 9 + count
    return -1


class RtuFramer:
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

    def __init__(self, role: str = "response") -> None:
        if role in ("response", "sniff"):
            self._length = _rtu_response_length
        elif role == "request":
            self._length = _rtu_request_length
        else:
            raise ValueError(f"role must be 'response', 'request' or 'sniff', not {role!r}")
        self._role = role
        self._buf = bytearray()
        self._frames = 0
        self._crc_errors = 0
        self._discarded = 0

    @property
    def role(self) -> str:
        """``"response"`` (client side), ``"request"`` (slave side) or ``"sniff"`` (both)."""
        return self._role

    @property
    def frames(self) -> int:
        """CRC-valid frames returned so far."""
        return self._frames

    @property
    def crc_errors(self) -> int:
        """Complete candidate frames rejected by the CRC check."""
        return self._crc_errors

    @property
    def discarded_bytes(self) -> int:
        """Bytes dropped (CRC failures and impossible headers)."""
        return self._discarded

    def reset(self) -> None:
        """Drop buffered partial data, e.g. after a response timeout; counters are kept."""
        self._buf.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Append ``data``; return CRC-valid frames as ``(unit, function, body)`` without CRC."""
        buf = self._buf
        buf += data
        if self._role == "sniff":
            return self._feed_sniff()
        out: list[Any] = []
        pos, n, frame_length = 0, len(buf), self._length
        while n - pos >= 2:
            length = frame_length(buf, pos, n - pos)
            if length == 0 or (length > 0 and n - pos < length):
                break
            if length > 0:
                end = pos + length
                if crc16(buf[pos : end - 2]) == buf[end - 2] | (buf[end - 1] << 8):
                    out.append((buf[pos], buf[pos + 1], bytes(buf[pos + 2 : end - 2])))
                    self._frames += 1
                    pos = end
                    continue
                self._crc_errors += 1
            pos += 1
            self._discarded += 1
        del buf[:pos]
        return out

    def _feed_sniff(self) -> list[Any]:
        # Candidates are tried shortest first (request first on a tie), and a longer one is
        # only waited for when the shorter failed: the result never depends on how the
        # stream was split into reads, even for the rare bytes that pass both CRCs.
        buf = self._buf
        out: list[Any] = []
        pos, n = 0, len(buf)
        while n - pos >= 2:
            avail = n - pos
            lq = _rtu_request_length(buf, pos, avail)
            lr = _rtu_response_length(buf, pos, avail)
            cands = [(0, lq), (1, lr)]
            if lr >= 0 and (lq < 0 or (lr > 0 and lq > 0 and lr < lq) or lr == 0 < lq):
                cands.reverse()
            checked = wait = found = False
            for direction, length in cands:
                if length < 0:
                    continue
                if length == 0 or avail < length:
                    wait = True
                    break
                checked = True
                end = pos + length
                if crc16(buf[pos : end - 2]) == buf[end - 2] | (buf[end - 1] << 8):
                    out.append((direction, buf[pos], buf[pos + 1], bytes(buf[pos + 2 : end - 2])))
                    self._frames += 1
                    pos = end
                    found = True
                    break
            if found:
                continue
            if wait:
                break
            if checked:
                self._crc_errors += 1
            pos += 1
            self._discarded += 1
        del buf[:pos]
        return out


class RegisterDecoder:
    """Decodes the register block of one read response into engineering values, in bulk.

    ``out[i] = raw_i * scales[i] + biases[i]`` where raw_i is the value of type ``types[i]`` whose
    first register is ``offsets[i]`` registers into the block, in the order given by ``flags[i]``.
    :func:`decode_stream` leaves ``last_skipped`` (malformed or foreign frames) and
    ``last_consumed`` (stream bytes used) on the decoder.
    """

    def __init__(
        self,
        offsets: Sequence[int],
        types: Sequence[int],
        flags: Sequence[int],
        scales: Sequence[float],
        biases: Sequence[float],
    ) -> None:
        n = len(offsets)
        if not len(types) == len(flags) == len(scales) == len(biases) == n:
            raise ValueError("offsets, types, flags, scales and biases must have the same length")
        perm: list[int] = []
        fmt = [">"]
        min_registers = 0
        for off, t, f in zip(offsets, types, flags, strict=True):
            _check_type_flags(t, f)
            _check("offset", off, 0, 0xFFFF)
            perm.extend(2 * off + i for i in _wire_permutation(t, f))
            fmt.append(_STRUCT_CODES[t])
            min_registers = max(min_registers, off + TYPE_WORDS[t])
        self.n_points = n
        self.min_registers = min_registers
        self.last_skipped = 0
        self.last_consumed = 0
        self._perm = np.asarray(perm, dtype=np.intp)
        self._struct = struct.Struct("".join(fmt))
        self._scales = np.asarray(scales, dtype=np.float64).copy()
        self._biases = np.asarray(biases, dtype=np.float64).copy()

    def _raw(self, canonical: bytes, rows: int) -> np.ndarray:
        vals = [v for row in self._struct.iter_unpack(canonical) for v in row]
        return np.asarray(vals, dtype=np.float64).reshape(rows, self.n_points)

    def _store(self, raw: np.ndarray, out: np.ndarray) -> None:
        # Silent IEEE overflow to inf / NaN, as in the compiled twin.
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(raw, self._scales, out=raw)
            np.add(raw, self._biases, out=out)

    def decode(self, registers: bytes | bytearray | memoryview, out: np.ndarray) -> None:
        """Decode one block (the response body after its byte count) into ``out[:n_points]``."""
        block = np.frombuffer(registers, dtype=np.uint8)
        if len(block) < 2 * self.min_registers:
            raise ValueError(f"register block of {len(block)} bytes, need {2 * self.min_registers}")
        if out.ndim != 1 or len(out) < self.n_points:
            raise ValueError(f"out must be 1-D with at least {self.n_points} elements")
        if self.n_points:
            raw = self._raw(block[self._perm].tobytes(), 1)[0]
            self._store(raw, out[: self.n_points])

    def decode_many(
        self, blocks: bytes | bytearray | memoryview, n_blocks: int, out: np.ndarray
    ) -> None:
        """Decode ``n_blocks`` equally sized blocks back to back into ``out[:n_blocks, :n_points]``."""
        data = np.frombuffer(blocks, dtype=np.uint8)
        if n_blocks < 0:
            raise ValueError("n_blocks must be >= 0")
        if out.ndim != 2 or out.shape[0] < n_blocks or out.shape[1] < self.n_points:
            raise ValueError(f"out must be 2-D with at least {n_blocks} x {self.n_points} elements")
        if n_blocks == 0:
            return
        size, rest = divmod(len(data), n_blocks)
        if rest or size < 2 * self.min_registers:
            raise ValueError(
                f"{len(data)} bytes are not {n_blocks} blocks of >= {2 * self.min_registers} bytes"
            )
        if self.n_points:
            canonical = data.reshape(n_blocks, size)[:, self._perm].tobytes()
            self._store(self._raw(canonical, n_blocks), out[:n_blocks, : self.n_points])


def unpack_bits(body: bytes | bytearray | memoryview, count: int, out: np.ndarray) -> None:
    """Coil / discrete input bits (fc 1/2 body after the byte count) -> ``out[:count]`` 0.0/1.0."""
    data = np.frombuffer(body, dtype=np.uint8)
    if count < 0 or len(data) * 8 < count:
        raise ValueError(f"{len(data)} bytes cannot hold {count} bits")
    if out.ndim != 1 or len(out) < count:
        raise ValueError(f"out must be 1-D with at least {count} elements")
    out[:count] = np.unpackbits(data, bitorder="little")[:count]


def _mbap_length(data: bytes, pos: int) -> int:
    """The length field of an MBAP header at ``data[pos:pos+6]``, or -1 when the header is not
    plausible (protocol id not 0, length outside 2..MBAP_MAX_LENGTH): where a resync starts."""
    length = (data[pos + 4] << 8) | data[pos + 5]
    if data[pos + 2] or data[pos + 3] or length < 2 or length > MBAP_MAX_LENGTH:
        return -1
    return length


def decode_stream(
    stream: bytes | bytearray | memoryview,
    decoder: RegisterDecoder,
    out: np.ndarray,
    tids: np.ndarray,
) -> int:
    """Decode back-to-back fc 3/4 MBAP responses into ``out`` rows; return how many.

    Stops when ``out`` is full or the stream ends (a trailing partial frame is left). Frames that
    are not fc 3/4 responses with a consistent byte count of at least ``2 * min_registers`` are
    skipped, and an implausible header is skipped by scanning for the next plausible one; each
    counts one in ``decoder.last_skipped``. ``decoder.last_consumed`` is the number of stream bytes
    used, where a follow-up call should resume.
    """
    data = _as_bytes(stream)
    rows = out.shape[0] if out.ndim == 2 else -1
    if rows < 0 or out.shape[1] < decoder.n_points:
        raise ValueError(f"out must be 2-D with at least {decoder.n_points} columns")
    if tids.ndim != 1 or len(tids) < rows:
        raise ValueError(f"tids must be 1-D with at least {rows} elements")
    need = 2 * decoder.min_registers
    pos, n, decoded, skipped, resync = 0, len(data), 0, 0, False
    starts: list[int] = []
    while decoded < rows and n - pos >= 6:
        length = _mbap_length(data, pos)
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
        fc = data[pos + 7]
        if (fc == 3 or fc == 4) and length >= 3 and data[pos + 8] == length - 3 >= need:
            tids[decoded] = (data[pos] << 8) | data[pos + 1]
            starts.append(pos + 9)
            decoded += 1
        else:
            skipped += 1
        pos = end
    decoder.last_skipped = skipped
    decoder.last_consumed = pos
    if decoded and decoder.n_points:
        blocks = b"".join(data[s : s + need] for s in starts)
        decoder.decode_many(blocks, decoded, out[:decoded])
    return decoded


def decode_rtu_stream(
    stream: bytes | bytearray | memoryview,
    decoder: RegisterDecoder,
    out: np.ndarray,
    units: np.ndarray,
) -> int:
    """Decode back-to-back fc 3/4 RTU responses (CRC checked) into ``out`` rows; return how many.

    The RTU twin of :func:`decode_stream`, for a sniffed or buffered serial stream. A position
    that does not start a CRC-valid fc 3/4 response with an even byte count of at least
    ``2 * min_registers`` is skipped byte by byte (a run of such bytes counts one in
    ``decoder.last_skipped``); a frame shorter than the decoder needs counts one too.
    ``decoder.last_consumed`` is where a follow-up call should resume.
    """
    data = _as_bytes(stream)
    rows = out.shape[0] if out.ndim == 2 else -1
    if rows < 0 or out.shape[1] < decoder.n_points:
        raise ValueError(f"out must be 2-D with at least {decoder.n_points} columns")
    if units.ndim != 1 or len(units) < rows:
        raise ValueError(f"units must be 1-D with at least {rows} elements")
    need = 2 * decoder.min_registers
    pos, n, decoded, skipped, resync = 0, len(data), 0, 0, False
    starts: list[int] = []
    while decoded < rows and n - pos >= 5:
        unit, fc, count = data[pos], data[pos + 1], data[pos + 2]
        if 1 <= unit <= 247 and fc in (3, 4) and count and not count & 1 and count <= 250:
            length = 5 + count
            if pos + length > n:
                break
            end = pos + length
            if crc16(data[pos : end - 2]) == data[end - 2] | (data[end - 1] << 8):
                resync = False
                if count >= need:
                    units[decoded] = unit
                    starts.append(pos + 3)
                    decoded += 1
                else:
                    skipped += 1
                pos = end
                continue
        if not resync:
            skipped += 1
            resync = True
        pos += 1
    decoder.last_skipped = skipped
    decoder.last_consumed = pos
    if decoded and decoder.n_points:
        blocks = b"".join(data[s : s + need] for s in starts)
        decoder.decode_many(blocks, decoded, out[:decoded])
    return decoded


class ResponseMatcher:
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

    def __init__(
        self,
        functions: Sequence[int],
        byte_counts: Sequence[int],
        decoders: Sequence[RegisterDecoder | None],
        offsets: Sequence[int],
    ) -> None:
        n = len(functions)
        if not len(byte_counts) == len(decoders) == len(offsets) == n:
            raise ValueError(
                "functions, byte_counts, decoders and offsets must have the same length"
            )
        if n < 1:
            raise ValueError("a matcher needs at least one slot")
        end = 0
        for i in range(n):
            _check("function", functions[i], 0, 0x7F)
            _check("byte count", byte_counts[i], 0, 250)
            _check("offset", offsets[i], 0, 1 << 30)
            d = decoders[i]
            if d is not None:
                if not isinstance(d, RegisterDecoder):
                    raise TypeError("decoders must be RegisterDecoder or None")
                if 2 * d.min_registers > byte_counts[i]:
                    raise ValueError(f"slot {i}: byte count {byte_counts[i]} below the decoder's")
                end = max(end, offsets[i] + d.n_points)
        self._fc = list(functions)
        self._bytes = list(byte_counts)
        self._decoders = list(decoders)
        self._off = list(offsets)
        self._tid = [-1] * n
        self._status = [0] * n
        self._span = [(-1, -1)] * n
        self.n_slots = n
        self.n_values = end
        self.waiting = self.last_consumed = self.last_stale = self.last_bad = 0

    def arm(self, first_tid: int, n: int = -1) -> int:
        """Slots ``0..n-1`` (all by default) wait for tids ``first_tid, first_tid + 1, ...``
        (mod 65536), the others for nothing; return the last tid used."""
        if n < 0 or n > self.n_slots:
            n = self.n_slots
        _check("first_tid", first_tid, 0, 0xFFFF)
        self._status = [0] * self.n_slots
        self._span = [(-1, -1)] * self.n_slots
        self._tid = [(first_tid + k) & 0xFFFF if k < n else -1 for k in range(self.n_slots)]
        self.waiting = n
        return (first_tid + n - 1) & 0xFFFF

    def disarm(self) -> None:
        """No slot waits any more: every answer from now on is stale."""
        self._tid = [-1] * self.n_slots
        self.waiting = 0

    def statuses(self) -> list[int]:
        """Status of every slot: 0 waiting (or never armed), 1 OK, 2 exception, 3 bad."""
        return list(self._status)

    def span(self, k: int) -> tuple[int, int]:
        """(offset of the function code, end of frame) of slot ``k``'s answer in its stream."""
        if not 0 <= k < self.n_slots:
            raise IndexError(k)
        return self._span[k]

    def feed(self, stream: bytes | bytearray | memoryview, unit: int, out: np.ndarray) -> int:
        """Match the complete frames of ``stream``; return how many answered a waiting slot.

        Frames for no waiting slot (late answers to timed-out requests, duplicates, another
        unit) count in ``last_stale``; implausible headers, skipped byte by byte, count one per
        run in ``last_bad``. ``last_consumed`` is where the next call resumes (a trailing
        partial frame is left).
        """
        if self.n_values and (out.ndim != 1 or len(out) < self.n_values):
            raise ValueError(f"out must be 1-D with at least {self.n_values} elements")
        data = _as_bytes(stream)
        n, pos, matched, stale, bad, resync = len(data), 0, 0, 0, 0, False
        tids, status = self._tid, self._status
        while n - pos >= 6:
            length = _mbap_length(data, pos)
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
            tid = (data[pos] << 8) | data[pos + 1]
            k = -1
            if data[pos + 6] == unit:
                for j in range(self.n_slots):
                    if tids[j] == tid and status[j] == 0:
                        k = j
                        break
            if k < 0:
                stale += 1
                pos = end
                continue
            matched += 1
            self._span[k] = (pos + 7, end)
            fc, want = data[pos + 7], self._fc[k]
            nbytes = self._bytes[k]
            if want == 0 or (fc == want and length == 3 + nbytes and data[pos + 8] == nbytes):
                status[k] = 1
                d = self._decoders[k]
                if d is not None and d.n_points:
                    off = self._off[k]
                    d.decode(data[pos + 9 : end], out[off : off + d.n_points])
            elif fc == want | 0x80:
                status[k] = 2
            else:
                status[k] = 3
            pos = end
        self.waiting -= matched
        self.last_consumed, self.last_stale, self.last_bad = pos, stale, bad
        return matched
