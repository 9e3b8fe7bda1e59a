"""NodeDevice: one MicroPython sensor node, its readings in and its writes out.

The link hands over only frames whose MAC under the node's key and replay counter checked out
(or, for a node configured ``insecure: true``, format-1 frames). Readings frames are decoded in
bulk (compiled ``decode_readings`` into uint8/float64 columns), mapped channel -> point id
through a 256-entry lookup array and handed over as one :class:`SampleBatch`. Every readings
frame is acknowledged with its sequence number; a frame whose sequence repeats the last one of
the same session (the node retried because our ACK was lost) is acknowledged again but not
ingested twice. Writes go out as WRITE frames with the gateway's own sequence and wait for the
node's WRITE_ACK, retried like the node retries its readings (each attempt a new counter).

Link state: online at the first frame, offline after ``stale_after`` without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.base import DriverBase, Stats, WriteError
from gateway.drivers.node.keys import load_node_key
from gateway.drivers.node.link import NodeLink, node_link
from gateway.impl import node_frame as nf

_log = logging.getLogger(__name__)
WRITE_ATTEMPTS = 3
_STATUS = {1: "unknown channel", 2: "value rejected by the node"}


class NodeDevice(DriverBase):
    """One node; see the module docstring. Constructor arguments as
    :class:`~gateway.drivers.base.DriverBase`, plus the ``link`` it shares with the other nodes
    on its socket or serial line."""

    kind = "node"

    @classmethod
    def create(
        cls,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float],
        shared: dict[str, Any],
    ) -> NodeDevice:
        link = node_link(config, shared, clock)
        return cls(config, point_ids, on_batch, on_event, clock, link=link)

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
        link: NodeLink | None = None,
    ) -> None:
        if config.node is None:
            raise ValueError(f"{config.name}: driver node needs a node section")
        super().__init__(config, point_ids, on_batch, on_event, clock)
        self.node_id = config.node.node_id
        nd = config.node
        if nd.key_file is not None:
            key: bytes | None = load_node_key(nd.key_file)
        elif nd.insecure:
            key = None
            _log.warning("%s: node %d sends unauthenticated frames (insecure: true): anyone "
                         "who reaches %s can send its readings", config.name, self.node_id,
                         nd.listen if nd.transport == "udp" else nd.port)  # fmt: skip
        else:
            raise ValueError(f"{config.name}: node needs key_file (or insecure: true)")
        self.link = link if link is not None else node_link(config, {}, clock)
        try:
            self.link.add(self.node_id, self, key)
        except ValueError as exc:
            raise ValueError(f"{config.name}: {exc}") from None
        self._lookup = np.full(256, -1, np.int64)  # channel -> point id
        self._types: dict[str, tuple[int, int]] = {}  # point -> (channel, value type)
        for p in config.points:
            assert p.channel is not None
            self._lookup[p.channel] = point_ids[f"{config.name}.{p.name}"]
            self._types[f"{config.name}.{p.name}"] = (
                p.channel,
                nf.VALUE_TYPES.get(p.type, nf.V_FLOAT32),
            )
        self._channels = np.empty(255, np.uint8)
        self._values = np.empty(255, np.float64)
        self._last_seq: int | None = None
        self._session = -1
        self._write_seq = 0
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._last_rx = 0.0
        self.readings_frames = self.duplicates = self.bad_payloads = 0
        self.unmapped_readings = 0
        self.sessions = self.forged = self.replayed = self.unauthenticated = 0

    async def open(self) -> None:
        with contextlib.suppress(OSError):  # reported through link_down; retried by the watchdog
            await self.link.start()

    async def close(self) -> None:
        if self.link.opened.is_set():
            await self.link.stop()

    def tasks(self) -> list[tuple[str, Any]]:
        return [("watchdog", self._watchdog())]

    async def _watchdog(self) -> None:
        assert self.config.node is not None
        stale = self.config.node.stale_after
        while True:
            await asyncio.sleep(min(stale / 4, 1.0))
            if not self.link.opened.is_set():
                with contextlib.suppress(OSError):
                    await self.link.start()
            if self.online and time.monotonic() - self._last_rx > stale:
                self.set_offline(f"no frame for {stale:g}s")

    def link_down(self, reason: str) -> None:
        self.set_offline(reason)

    # -- frames from the node ---------------------------------------------------------------
    def frame(
        self, ftype: int, seq: int, payload: bytes, ts: float, link: NodeLink, epoch: int
    ) -> None:
        """An authentic, fresh frame of session ``epoch`` (0 for format-1 frames)."""
        if epoch != self._session:  # a new session: the node's seq restarted or may have
            self._session = epoch
            self._last_seq = None
            self.sessions += 1
        self._last_rx = time.monotonic()
        self.set_online(ts)
        if ftype == nf.T_READINGS:
            self._readings(seq, payload, ts, link)
        elif ftype == nf.T_WRITE_ACK:
            fut = self._acks.get(seq)
            if fut is not None and not fut.done():
                fut.set_result(payload[0] if payload else 255)

    def refused(self, status: int) -> None:
        """A frame with this node's id the link refused (its reason in ``status``)."""
        if status == nf.FORGED:
            self.forged += 1
        elif status == nf.REPLAY:
            self.replayed += 1
        else:
            self.unauthenticated += 1

    def _readings(self, seq: int, payload: bytes, ts: float, link: NodeLink) -> None:
        n = nf.decode_readings(payload, self._channels, self._values)
        if n < 0:
            self.bad_payloads += 1
            return  # not acknowledged: the node retries, and the count shows the fault
        link.send(self.node_id, nf.T_ACK, seq)
        if seq == self._last_seq:
            self.duplicates += 1
            return
        self._last_seq = seq
        self.readings_frames += 1
        ids = self._lookup[self._channels[:n]]
        known = ids >= 0
        if not known.all():
            self.unmapped_readings += int(n - np.count_nonzero(known))
        if known.any():
            values = self._values[:n][known].copy()
            self.emit_values(ids[known].astype(np.uint32), ts, values)

    # -- writes --------------------------------------------------------------------------------
    async def write_value(self, point: str, value: float) -> None:
        """Send a WRITE frame and wait for the node's WRITE_ACK (3 attempts of ``timeout``)."""
        channel, vtype = self._types[point]
        try:
            payload = nf.encode_readings([(channel, vtype, value)])[1:]  # one entry, no count
        except Exception as exc:  # struct.error for out-of-range integers
            raise WriteError(f"{point}: {value} out of range ({exc})", refused=True) from None
        self._write_seq = (self._write_seq + 1) & 0xFFFF
        seq = self._write_seq
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[seq] = fut
        try:
            for _ in range(WRITE_ATTEMPTS):
                if not self.link.send(self.node_id, nf.T_WRITE, seq, payload):
                    raise WriteError(f"{point}: node {self.name} has not been heard from")
                try:
                    status = await asyncio.wait_for(asyncio.shield(fut), self.config.timeout)
                    break
                except TimeoutError:
                    continue
            else:
                raise WriteError(f"{point}: no WRITE_ACK after {WRITE_ATTEMPTS} attempts")
        finally:
            self._acks.pop(seq, None)
        if status != 0:
            raise WriteError(f"{point}: {_STATUS.get(status, f'node status {status}')}")

    def connected(self) -> bool:
        return self.link.opened.is_set()

    def counters(self) -> Stats:
        return {
            "readings_frames": self.readings_frames,
            "duplicate_frames": self.duplicates,
            "bad_payloads": self.bad_payloads,
            "unmapped_readings": self.unmapped_readings,
            "sessions": self.sessions,
            "forged_frames": self.forged,
            "replayed_frames": self.replayed,
            "unauthenticated_frames": self.unauthenticated,
            **self.link.stats(),
        }
