"""gwnode: the node side of the gateway's node frame protocol, for MicroPython sensor nodes.

Copy this one file to the board (ESP32, RP2040, ...). It uses only ``struct``, ``time``,
``hashlib`` (SHA-256; HMAC is built here, MicroPython has no ``hmac``), ``os``/``random`` and
``socket`` (UDP) or a ``machine.UART`` you pass in, and runs unchanged under CPython, where the
gateway's tests drive it. The frame format is in docs/node-frame.md.

Example (UDP), with the node's key from ``python -m gateway.drivers.node.keys new FILE``::

    import gwnode
    KEY = bytes.fromhex("...64 hex digits...")  # the same key as the gateway's key_file
    node = gwnode.Node(gwnode.UdpTransport("192.168.1.10", 47800), node_id=7, key=KEY,
                       on_write=lambda channel, value: channel == 3 and set_pump(value))
    while True:
        node.send([(0, gwnode.FLOAT32, read_temp()), (1, gwnode.BOOL, door_open())])
        node.poll(1000)   # serve writes for a second

Every frame carries a counter and an HMAC-SHA256 tag under the key; the gateway answers a
frame of a session it does not know (after either side restarted) with a SYNC that hands out a
fresh session, which ``send`` takes up and resends at once. Nothing is written to flash.
``send`` blocks until the gateway acknowledged the frame's sequence number or ``retries``
resends ran out (it returns False then; the caller decides whether to keep the readings).
Without ``key`` the node speaks format 1 (no MAC), which the gateway only accepts from nodes
configured ``insecure: true``.
"""

import hashlib
import struct
import time

VERSION = 2
VERSION_PLAIN = 1
READINGS = 1
ACK = 2
WRITE = 3
WRITE_ACK = 4
SYNC = 5
TAG = 16
WINDOW = 64
BOOL = 0
INT16 = 1
UINT16 = 2
INT32 = 3
UINT32 = 4
FLOAT32 = 5
FLOAT64 = 6
_FMT = (">B", ">h", ">H", ">i", ">I", ">f", ">d")
_SIZE = (1, 2, 2, 4, 4, 4, 8)
MAX_FRAME = 1100  # encoded bytes kept before a frame without delimiter is dropped

STATUS_OK = 0
STATUS_UNKNOWN_CHANNEL = 1
STATUS_REJECTED = 2


def ticks_ms() -> int:
    """Milliseconds from a monotonic clock (time.ticks_ms on MicroPython)."""
    if hasattr(time, "ticks_ms"):
        return int(getattr(time, "ticks_ms")())  # noqa: B009
    return int(getattr(time, "monotonic")() * 1000)  # noqa: B009


def elapsed_ms(start: int) -> int:
    if hasattr(time, "ticks_diff"):
        return int(getattr(time, "ticks_diff")(ticks_ms(), start))  # noqa: B009
    return ticks_ms() - start


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out.extend(block)
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out.extend(block)
                block = bytearray()
    out.append(len(block) + 1)
    out.extend(block)
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        out.extend(data[i + 1 : end])
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256, computed once per key."""
    if len(key) > 64:
        key = bytes(hashlib.sha256(key).digest())
    key = key + bytes(64 - len(key))
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256(key: bytes | tuple[bytes, bytes], msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) over hashlib.sha256, for ports without ``hmac``.

    ``key`` may be the pads from :func:`hmac_pads` (saves two 64-byte loops a frame).
    """
    ipad, opad = key if isinstance(key, tuple) else hmac_pads(key)
    inner = bytes(hashlib.sha256(ipad + msg).digest())
    return bytes(hashlib.sha256(opad + inner).digest())


def mac_keys(key: bytes) -> tuple[bytes, bytes]:
    """(node -> gateway, gateway -> node) MAC keys: a reflected frame fails the MAC."""
    if not 16 <= len(key) <= 64:
        raise ValueError("a node key has 16 to 64 bytes")
    return hmac_sha256(key, b"gwnode up"), hmac_sha256(key, b"gwnode down")


def _same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (the time does not tell how much of a tag was right)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def encode_frame(
    ftype: int,
    node_id: int,
    seq: int,
    payload: bytes = b"",
    mac_key: bytes | tuple[bytes, bytes] | None = None,
    epoch: int = 0,
    counter: int = 0,
) -> bytes:
    """A frame: format 2 with a tag under ``mac_key`` (a direction key or its pads), else
    format 1."""
    if mac_key is None:
        raw = struct.pack(">BBHH", VERSION_PLAIN, ftype, node_id, seq) + payload
    else:
        raw = struct.pack(">BBHHII", VERSION, ftype, node_id, seq, epoch, counter) + payload
        raw += hmac_sha256(mac_key, raw)[:TAG]
    return cobs_encode(raw + struct.pack("<H", crc16(raw))) + b"\x00"


def random_epoch() -> int:
    """A nonzero random u32: this boot's first session id, which no gateway knows."""
    epoch = 0
    while epoch == 0:
        try:
            import os

            epoch = int.from_bytes(getattr(os, "urandom")(4), "big")  # noqa: B009
        except (ImportError, AttributeError):
            import random

            epoch = getattr(random, "getrandbits")(32)  # noqa: B009
    return epoch


def encode_value(vtype: int, value: float) -> bytes:
    if vtype == BOOL:
        return struct.pack(">B", 1 if value else 0)
    if vtype in (FLOAT32, FLOAT64):
        return struct.pack(_FMT[vtype], float(value))
    return struct.pack(_FMT[vtype], int(value))


def encode_readings(readings: list[tuple[int, int, float]]) -> bytes:
    out = bytearray([len(readings)])
    for channel, vtype, value in readings:
        out.append(channel)
        out.append(vtype)
        out.extend(encode_value(vtype, value))
    return bytes(out)


class UdpTransport:
    """UDP to the gateway's node listener; replies come back to the same socket."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def write(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.addr)

    def read(self) -> bytes | None:
        try:
            return self.sock.recv(1500)
        except OSError:  # EAGAIN: nothing there
            return None

    def close(self) -> None:
        self.sock.close()


class UartTransport:
    """A machine.UART (or anything with ``read() -> bytes | None`` and ``write(bytes)``)."""

    def __init__(self, uart: object) -> None:
        self.uart = uart

    def write(self, frame: bytes) -> None:
        getattr(self.uart, "write")(frame)  # noqa: B009

    def read(self) -> bytes | None:
        data = getattr(self.uart, "read")()  # noqa: B009
        return bytes(data) if data else None

    def close(self) -> None:
        pass


class Node:
    """One node: sends readings with sequence numbers, retries until ACKed, serves writes.

    ``on_write(channel, value)`` returns True to accept a write (status OK) or False to reject
    it; writes to channels without a handler are answered "unknown channel". With ``key`` (16
    to 64 bytes, the gateway's ``key_file``) every frame is authenticated both ways.
    """

    def __init__(
        self,
        transport: UdpTransport | UartTransport,
        node_id: int,
        on_write: object = None,
        ack_timeout_ms: int = 200,
        retries: int = 3,
        key: bytes | None = None,
    ) -> None:
        self.transport = transport
        self.node_id = node_id
        self.on_write = on_write
        self.ack_timeout_ms = ack_timeout_ms
        self.retries = retries
        self._up: tuple[bytes, bytes] | None = None
        self._down: tuple[bytes, bytes] | None = None
        if key is not None:
            up, down = mac_keys(key)
            self._up, self._down = hmac_pads(up), hmac_pads(down)
        self.epoch = random_epoch()
        self.counter = 0
        self._rx_top = 0
        self._rx_window = 0
        self._synced = False
        self.seq = 0
        self._buf = bytearray()
        self._skip = False
        self._acked = -1
        self._last_write_seq = -1
        self._last_write_status = 0
        self.sent = 0
        self.resent = 0
        self.failed = 0
        self.writes = 0
        self.bad_frames = 0
        self.refused = 0
        self.syncs = 0

    def _encode(self, ftype: int, seq: int, payload: bytes) -> bytes:
        if self._up is None:
            return encode_frame(ftype, self.node_id, seq, payload)
        if self.counter >= 0xFFFFFFFF:  # session used up: a new one, which the gateway SYNCs
            self.epoch = random_epoch()
            self.counter = 0
        self.counter += 1
        return encode_frame(ftype, self.node_id, seq, payload, self._up, self.epoch, self.counter)

    def send(self, readings: list[tuple[int, int, float]]) -> bool:
        """Send readings ``(channel, type, value)``; True once the gateway acknowledged them."""
        self.seq = (self.seq + 1) & 0xFFFF
        payload = encode_readings(readings)
        attempt = 0
        syncs = 0
        while attempt <= self.retries:
            if attempt:
                self.resent += 1
            self.transport.write(self._encode(READINGS, self.seq, payload))  # new counter each
            self.sent += 1
            self._synced = False
            start = ticks_ms()
            while elapsed_ms(start) < self.ack_timeout_ms:
                self._receive()
                if self._acked == self.seq:
                    return True
                if self._synced:
                    break
                self._idle()
            if self._synced and syncs < 2:  # a new session: resend in it at once
                syncs += 1
                continue
            attempt += 1
        self.failed += 1
        return False

    def poll(self, duration_ms: int = 0) -> None:
        """Serve incoming frames (writes) for ``duration_ms`` (0: what is there now)."""
        start = ticks_ms()
        while True:
            self._receive()
            if elapsed_ms(start) >= duration_ms:
                return
            self._idle()

    def _idle(self) -> None:
        if hasattr(time, "sleep_ms"):
            getattr(time, "sleep_ms")(1)  # noqa: B009
        else:
            time.sleep(0.001)

    def _receive(self) -> None:
        data = self.transport.read()
        if not data:
            return
        for b in data:
            if b != 0:
                if not self._skip:
                    if len(self._buf) >= MAX_FRAME:
                        self._buf = bytearray()
                        self._skip = True
                        self.bad_frames += 1
                    else:
                        self._buf.append(b)
                continue
            if self._skip:
                self._skip = False
            elif self._buf:
                self._frame(bytes(self._buf))
                self._buf = bytearray()

    def _frame(self, block: bytes) -> None:
        raw = cobs_decode(block)
        want = VERSION_PLAIN if self._down is None else VERSION
        if raw is None or len(raw) < (8 if want == VERSION_PLAIN else 32) or raw[0] != want:
            self.bad_frames += 1
            return
        if crc16(raw[:-2]) != raw[-2] | (raw[-1] << 8):
            self.bad_frames += 1
            return
        _, ftype, node_id, seq = struct.unpack(">BBHH", raw[:6])
        if node_id != self.node_id:
            return
        if self._down is None:
            self._dispatch(ftype, seq, raw[6:-2])
            return
        body = raw[: -2 - TAG]
        if not _same(hmac_sha256(self._down, body)[:TAG], raw[-2 - TAG : -2]):
            self.refused += 1
            return
        epoch, counter = struct.unpack(">II", raw[6:14])
        payload = body[14:]
        if ftype == SYNC:
            # Only an answer to a frame we sent in this session moves us to the offered one.
            nonce = struct.unpack(">I", payload)[0] if len(payload) == 4 else 0
            if epoch != self.epoch or not 0 < counter <= self.counter or nonce == 0:
                self.refused += 1
                return
            self.epoch, self.counter = nonce, 0
            self._rx_top = self._rx_window = 0
            self._last_write_seq = -1  # the gateway restarted its write numbering, or may have
            self._synced = True
            self.syncs += 1
            return
        if epoch != self.epoch or not self._fresh(counter):
            self.refused += 1
            return
        self._dispatch(ftype, seq, payload)

    def _fresh(self, counter: int) -> bool:
        """Sliding replay window over the gateway's counter (reordering is fine, repeats not)."""
        if counter > self._rx_top:
            shift = counter - self._rx_top
            if shift < WINDOW:
                self._rx_window = ((self._rx_window << shift) | 1) & ((1 << WINDOW) - 1)
            else:
                self._rx_window = 1
            self._rx_top = counter
            return True
        behind = self._rx_top - counter
        if behind >= WINDOW or (self._rx_window >> behind) & 1:
            return False
        self._rx_window |= 1 << behind
        return True

    def _dispatch(self, ftype: int, seq: int, payload: bytes) -> None:
        if ftype == ACK:
            self._acked = seq
        elif ftype == WRITE:
            self._write(seq, payload)

    def _write(self, seq: int, payload: bytes) -> None:
        if seq == self._last_write_seq:  # our WRITE_ACK was lost: answer again, apply once
            status = self._last_write_status
        elif len(payload) < 3 or payload[1] > FLOAT64 or len(payload) != 2 + _SIZE[payload[1]]:
            status = STATUS_REJECTED
        else:
            channel, vtype = payload[0], payload[1]
            value = struct.unpack(_FMT[vtype], payload[2:])[0]
            handler = self.on_write
            if handler is None:
                status = STATUS_UNKNOWN_CHANNEL
            else:
                result = handler(channel, float(value))  # type: ignore[operator]
                status = STATUS_OK if result else STATUS_REJECTED
                self.writes += 1 if result else 0
        self._last_write_seq = seq
        self._last_write_status = status
        self.transport.write(self._encode(WRITE_ACK, seq, bytes([status])))
