"""CanDevice: a CAN bus (python-can) decoded in batches into the device's points.

Frames are collected by a python-can ``Notifier`` (event driven on socketcan's file
descriptor) into a queue; the first frame of a batch wakes the decoder task, which waits
``batch_delay`` (or until ``batch_frames`` are queued) and decodes the whole batch at once:
ids, data and dlc become typed columns, the compiled :class:`SignalDecoder` extracts every
mapped signal into (row, point, value) columns, and one :class:`SampleBatch` carries them on,
each sample stamped with its frame's receive time.

With ``j1939: true`` messages match by PGN whatever their source address, TP.CM/TP.DT
transfers are reassembled (BAM, and RTS/CTS answered when ``address`` is set), and DM1
(active diagnostic trouble codes) become ``dtc`` events when a code appears or clears.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.base import DriverBase, Stats
from gateway.drivers.can.dbc import compile_layout, load_dbc
from gateway.drivers.can.j1939 import PGN_DM1, PGN_TP_CM, PGN_TP_DT, TransportReassembler
from gateway.impl import can as codec

_log = logging.getLogger(__name__)
EXTENDED = 0x80000000
MAX_QUEUE = 100_000  # frames held while the decoder is behind; older ones are dropped


class FrameColumns:
    """Frames as typed columns, reused between batches."""

    def __init__(self, capacity: int) -> None:
        self.ids = np.empty(capacity, np.uint32)
        self.data = np.zeros((capacity, 8), np.uint8)
        self.dlc = np.empty(capacity, np.uint8)
        self.ts = np.empty(capacity, np.float64)

    def fill(self, msgs: list[Any]) -> int:
        """Columns from python-can Messages (one Python step per frame)."""
        n = len(msgs)
        if n > len(self.ids):
            self.__init__(max(n, 2 * len(self.ids)))  # type: ignore[misc]
        data = self.data
        for i, m in enumerate(msgs):
            self.ids[i] = m.arbitration_id | (EXTENDED if m.is_extended_id else 0)
            payload = m.data
            k = min(len(payload), 8)
            data[i, :k] = payload[:k]
            data[i, k:] = 0
            self.dlc[i] = k
            self.ts[i] = m.timestamp
        return n


#: struct can_frame as SocketCAN delivers it: can_id (flags in the top bits), len, pad, data.
CAN_FRAME = np.dtype([("can_id", "<u4"), ("len", "u1"), ("pad", "u1", 3), ("data", "u1", 8)])
CAN_ID_MASK = EXTENDED | 0x1FFFFFFF  # keep EFF and the id; RTR/ERR frames are filtered out


def socketcan_columns(buf: bytes | bytearray | memoryview, n: int) -> tuple[Any, Any, Any]:
    """``n`` raw 16-byte SocketCAN frames -> (ids, data, dlc) columns, without per-frame Python.

    SocketCAN's ``can_id`` already carries the extended flag in bit 31, the same convention as
    the decoder's keys; remote and error frames (bits 30, 29) are dropped.
    """
    frames = np.frombuffer(buf, CAN_FRAME, n)
    keep = (frames["can_id"] & 0x60000000) == 0
    if not keep.all():
        frames = frames[keep]
    return frames["can_id"] & CAN_ID_MASK, frames["data"], np.minimum(frames["len"], 8)


#: SO_TIMESTAMP (SCM_TIMESTAMP): the kernel's receive time of each frame, as a struct timeval.
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)
_TIMEVAL = struct.Struct("@ll")


class RawSocketCanReader:
    """Reads SocketCAN frames straight into a buffer of 16-byte slots (``interface: socketcan``).

    The loop wakes on the socket's readability; one wake drains every queued frame with
    ``recvmsg_into`` (one syscall per frame, no Python object per frame), then the batch decodes
    from the buffer. python-can stays the path for every other interface.

    Each frame is stamped with the kernel's receive time (SO_TIMESTAMP), not the time of the
    drain: after a stall one drain holds seconds of traffic, and stamping it all alike would
    collapse distinct readings onto one instant. The stamp is taken on ``clock``'s axis (its
    age by the wall clock, subtracted from ``clock()``), so an injected clock still rules.
    """

    def __init__(self, sock: Any, capacity: int, clock: Callable[[], float] = time.time) -> None:
        self.sock = sock
        self.buf = bytearray(16 * capacity)
        self.view = memoryview(self.buf)
        self.ts = np.zeros(capacity)
        self.count = 0
        self.capacity = capacity
        self.clock = clock
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            self.kernel_stamps = True
        except (OSError, AttributeError):  # a socket without timestamps: stamp at the drain
            self.kernel_stamps = False

    def drain(self) -> int:
        """Receive queued frames into free slots, each with its time; return how many are
        buffered."""
        now = self.clock()
        wall = time.time()
        while self.count < self.capacity:
            slot = self.view[16 * self.count : 16 * self.count + 16]
            try:
                if self.kernel_stamps:
                    got, anc, _flags, _addr = self.sock.recvmsg_into([slot], 64)
                else:
                    got, anc = self.sock.recv_into(slot), []
            except (BlockingIOError, InterruptedError):
                break
            if got == 16:
                self.ts[self.count] = now - max(0.0, wall - _kernel_time(anc, wall))
                self.count += 1
        return self.count


def _kernel_time(anc: list[tuple[int, int, bytes]], default: float) -> float:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(data) == _TIMEVAL.size:
            sec, usec = _TIMEVAL.unpack(data)
            return sec + usec * 1e-6
    return default


class CanDevice(DriverBase):
    """One CAN bus and the points decoded from it; constructor arguments as
    :class:`~gateway.drivers.base.DriverBase`."""

    # Event driven: a bus without traffic is quiet, not stalled (it goes offline after
    # stale_after). Stalled means the decode loop stopped turning: see task_failure().
    polled = False

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.can is None:
            raise ValueError(f"{config.name}: driver can needs a can section")
        super().__init__(config, point_ids, on_batch, on_event, clock)
        self.can = config.can
        if config.points and not self.can.dbc:
            raise ValueError(f"{config.name}: points name DBC signals; set can.dbc")
        layout = compile_layout(config, point_ids, load_dbc(self.can.dbc)) if self.can.dbc else []
        self.decoder = codec.SignalDecoder(layout, self.can.j1939)
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = asyncio.Event()
        self._cols = FrameColumns(max(self.can.batch_frames, 64))
        cap = max(self.can.batch_frames, 64) * max(self.decoder.n_signals, 1)
        self._rows = np.empty(cap, np.uint32)
        self._points = np.empty(cap, np.uint32)
        self._values = np.empty(cap, np.float64)
        self.tp = TransportReassembler(self._tp_message, self._send, self.can.address)
        self._dtcs: dict[int, set[tuple[int, int]]] = {}
        self._bus: Any = None
        self._notifier: Any = None
        self._raw: RawSocketCanReader | None = None
        self._last_rx = 0.0
        self._turned = 0.0  # monotonic time the decode loop last woke
        self.frames = self.batches = self.unmatched = self.short = self.dropped = 0
        self.dm1 = self.send_errors = 0

    def task_failure(self) -> str | None:
        """Why the receive task ended or stopped turning (it wakes at least once a second)."""
        why = super().task_failure()
        if why or not self._tasks or self._turned == 0.0:
            return why
        late = time.monotonic() - self._turned
        limit = 3.0 * min(self.can.stale_after, 1.0) + self.can.batch_delay + 1.0
        return f"decode loop has not turned for {late:.1f}s" if late > limit else None

    def tasks(self) -> list[tuple[str, Any]]:
        return [("receive", self._run())]

    def open_raw_socket(self) -> Any:
        """A non-blocking raw SocketCAN socket bound to the channel (tests substitute one)."""

        sock = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)  # type: ignore[attr-defined]
        try:
            sock.bind((self.can.channel,))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.can.interface == "socketcan":
            sock = self.open_raw_socket()
            self._raw = RawSocketCanReader(sock, max(self.can.batch_frames, 64), self._clock)
            self._bus = sock
            loop.add_reader(sock.fileno(), self._raw_readable)
            return
        import can

        self._bus = can.Bus(interface=self.can.interface, channel=self.can.channel)
        device = self

        class _Listener(can.Listener):  # type: ignore[misc]
            def on_message_received(self, msg: Any) -> None:
                device._queue.append(msg)
                if len(device._queue) > MAX_QUEUE:
                    device._queue.popleft()
                    device.dropped += 1
                if len(device._queue) == 1 or len(device._queue) >= device.can.batch_frames:
                    loop.call_soon_threadsafe(device._wake.set)

        self._notifier = can.Notifier(self._bus, [_Listener()], timeout=0.1, loop=loop)

    def _raw_readable(self) -> None:
        raw = self._raw
        assert raw is not None
        before = raw.count
        after = raw.drain()
        if before == 0 and after or after >= self.can.batch_frames:
            self._wake.set()
        if after >= raw.capacity:  # full: stop reading until the decoder made room
            asyncio.get_running_loop().remove_reader(raw.sock.fileno())

    def _close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._raw.sock.fileno())
            with contextlib.suppress(Exception):
                self._raw.sock.close()
            self._raw = None
            self._bus = None
        if self._notifier is not None:
            with contextlib.suppress(Exception):
                self._notifier.stop()
            self._notifier = None
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.shutdown()
            self._bus = None

    async def _run(self) -> None:
        try:
            while True:
                try:
                    self._open()
                except Exception as exc:  # python-can raises CanError, OSError, ImportError...
                    self.set_offline(f"cannot open {self.can.interface} {self.can.channel}: {exc}")
                    await asyncio.sleep(self.backoff())
                    continue
                self._attempt = 0
                await self._decode_loop()
        finally:
            self._close()

    async def _decode_loop(self) -> None:
        stale = self.can.stale_after
        place = f"device {self.name}: decode"
        while True:
            self._turned = time.monotonic()
            try:
                await asyncio.wait_for(self._wake.wait(), min(stale, 1.0))
            except TimeoutError:
                if self.online and time.monotonic() - self._last_rx > stale:
                    self.set_offline(f"no frame for {stale:g}s")
                continue
            if self._raw is not None:
                if self._raw.count < self.can.batch_frames:
                    await asyncio.sleep(self.can.batch_delay)
                self._wake.clear()
                self.faults.call(place, self._decode_raw)
                continue
            if len(self._queue) < self.can.batch_frames:
                await asyncio.sleep(self.can.batch_delay)
            self._wake.clear()
            while self._queue:
                n = min(len(self._queue), self.can.batch_frames)
                self.faults.call(place, self._decode, [self._queue.popleft() for _ in range(n)])

    # -- decoding ------------------------------------------------------------------------------
    def _decode_raw(self) -> None:
        raw = self._raw
        if raw is None:
            return
        try:
            raw.drain()
            n = raw.count
            if n:
                ids, data, dlc = socketcan_columns(raw.buf, n)
                cols = self._cols
                k = len(ids)
                if k > len(cols.ids):
                    cols.__init__(k)  # type: ignore[misc]
                cols.ids[:k], cols.data[:k], cols.dlc[:k] = ids, data, dlc
                keep = (np.frombuffer(raw.buf, CAN_FRAME, n)["can_id"] & 0x60000000) == 0
                cols.ts[:k] = raw.ts[:n][keep]
                raw.count = 0
                self._decode_columns(k)
        finally:  # a batch that failed is dropped (counted by the caller), never re-decoded
            raw.count = 0
            with contextlib.suppress(Exception):  # resume reading if a full buffer paused it
                asyncio.get_running_loop().add_reader(raw.sock.fileno(), self._raw_readable)

    def _decode(self, msgs: list[Any]) -> None:
        self._decode_columns(self._cols.fill(msgs))

    def _decode_columns(self, n: int) -> None:
        self._last_rx = time.monotonic()
        cols = self._cols
        self.frames += n
        self.set_online()
        if self.can.j1939:
            self._j1939(cols, n)
        if not self.decoder.n_signals:
            return
        k = self.decoder.decode(cols.ids[:n], cols.data[:n], cols.dlc[:n], self._rows,
                                self._points, self._values)  # fmt: skip
        self.unmatched += self.decoder.last_unmatched
        self.short += self.decoder.last_short
        if k:
            self.batches += 1
            ts = cols.ts[self._rows[:k]]
            self.emit(SampleBatch(self._points[:k].copy(), ts, self._values[:k].copy(),
                                  np.zeros(k, np.uint8)))  # fmt: skip

    def _j1939(self, cols: FrameColumns, n: int) -> None:
        ids = cols.ids[:n]
        ext = (ids & EXTENDED) != 0
        if not ext.any():
            return
        prio, pgn = np.empty(n, np.uint8), np.empty(n, np.uint32)
        sa, da = np.empty(n, np.uint8), np.empty(n, np.uint8)
        codec.split_j1939(ids, prio, pgn, sa, da)
        special = ext & ((pgn == PGN_TP_CM) | (pgn == PGN_TP_DT) | (pgn == PGN_DM1))
        for i in np.flatnonzero(special):
            data = bytes(cols.data[i, : cols.dlc[i]])
            p, s, d, now = int(pgn[i]), int(sa[i]), int(da[i]), float(cols.ts[i])
            if p == PGN_TP_CM:
                self.tp.connection(s, d, data, now)
            elif p == PGN_TP_DT:
                self.tp.data(s, d, data, now)
            else:
                self._dm1(s, data, now)

    def _tp_message(self, pgn: int, source: int, dest: int, payload: bytes) -> None:
        if pgn == PGN_DM1:
            self._dm1(source, payload, self._clock())

    def _dm1(self, source: int, payload: bytes, ts: float) -> None:
        self.dm1 += 1
        codes = {(spn, fmi): oc for spn, fmi, oc in codec.dm1_dtcs(payload)}
        before = self._dtcs.get(source, set())
        now = set(codes)
        for spn, fmi in sorted(now - before):
            detail = f"SA 0x{source:02X} SPN {spn} FMI {fmi} OC {codes[(spn, fmi)]} active"
            self.event("dtc", detail, ts)
        for spn, fmi in sorted(before - now):
            self.event("dtc", f"SA 0x{source:02X} SPN {spn} FMI {fmi} cleared", ts)
        self._dtcs[source] = now

    def _send(self, can_id: int, data: bytes) -> None:
        if self._bus is None:
            return
        if self._raw is not None:
            frame = struct.pack("<IB3x8s", can_id | EXTENDED, len(data), data.ljust(8, b"\0"))
            try:
                self._raw.sock.send(frame)
            except OSError:
                self.send_errors += 1
            return
        import can

        try:
            self._bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))
        except Exception:  # a full TX queue must not stop reception
            self.send_errors += 1

    def connected(self) -> bool:
        return self._bus is not None

    def counters(self) -> Stats:
        return {
            "frames": self.frames,
            "batches": self.batches,
            "unmatched_frames": self.unmatched,
            "short_frames": self.short,
            "dropped_frames": self.dropped,
            "dm1_messages": self.dm1,
            "tp_completed": self.tp.completed,
            "tp_aborted": self.tp.aborted + self.tp.timeouts,
            "send_errors": self.send_errors,
        }
