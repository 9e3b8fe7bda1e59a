"""gwnode: the node side of the gateway's node frame protocol, for MicroPython sensor nodes.

Copy this one file to the board (ESP32, RP2040, ...). It uses only ``struct``, ``time`` and
``socket`` (UDP) or a ``machine.UART`` you pass in, and runs unchanged under CPython, where
the gateway's tests drive it. The frame format is in docs/node-frame.md.

Example (UDP)::

    import gwnode
    node = gwnode.Node(gwnode.UdpTransport("192.168.1.10", 47800), node_id=7,
                       on_write=lambda channel, value: channel == 3 and set_pump(value))
    while True:
        node.send([(0, gwnode.FLOAT32, read_temp()), (1, gwnode.BOOL, door_open())])
        node.poll(1000)   # serve writes for a second

``send`` blocks until the gateway acknowledged the frame's sequence number or ``retries``
resends ran out (it returns False then; the caller decides whether to keep the readings).
"""

import struct
import time

VERSION = 1
READINGS = 1
ACK = 2
WRITE = 3
WRITE_ACK = 4
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


def encode_frame(ftype: int, node_id: int, seq: int, payload: bytes = b"") -> bytes:
    raw = struct.pack(">BBHH", VERSION, ftype, node_id, seq) + payload
    return cobs_encode(raw + struct.pack("<H", crc16(raw))) + b"\x00"


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
    it; writes to channels without a handler are answered "unknown channel".
    """

    def __init__(
        self,
        transport: UdpTransport | UartTransport,
        node_id: int,
        on_write: object = None,
        ack_timeout_ms: int = 200,
        retries: int = 3,
    ) -> None:
        self.transport = transport
        self.node_id = node_id
        self.on_write = on_write
        self.ack_timeout_ms = ack_timeout_ms
        self.retries = retries
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

    def send(self, readings: list[tuple[int, int, float]]) -> bool:
        """Send readings ``(channel, type, value)``; True once the gateway acknowledged them."""
        self.seq = (self.seq + 1) & 0xFFFF
        frame = encode_frame(READINGS, self.node_id, self.seq, encode_readings(readings))
        for attempt in range(self.retries + 1):
            if attempt:
                self.resent += 1
            self.transport.write(frame)
            self.sent += 1
            start = ticks_ms()
            while elapsed_ms(start) < self.ack_timeout_ms:
                self._receive()
                if self._acked == self.seq:
                    return True
                self._idle()
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
        if raw is None or len(raw) < 8 or raw[0] != VERSION:
            self.bad_frames += 1
            return
        if crc16(raw[:-2]) != raw[-2] | (raw[-1] << 8):
            self.bad_frames += 1
            return
        _, ftype, node_id, seq = struct.unpack(">BBHH", raw[:6])
        if node_id != self.node_id:
            return
        if ftype == ACK:
            self._acked = seq
        elif ftype == WRITE:
            self._write(seq, raw[6:-2])

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
        self.transport.write(encode_frame(WRITE_ACK, self.node_id, seq, bytes([status])))
