"""The medium node devices share: one UDP socket per ``listen`` address, one UART per port.

A link parses frames (compiled :class:`NodeFrameParser`), routes them by node id to the device
that owns that node, and sends frames back (to the node's last UDP address, or down the UART).
Frames from node ids nobody configured are counted and not acknowledged, so a misconfigured
node keeps retrying and shows up in ``unknown_node_frames`` instead of silently losing data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.config import DeviceConfig
from gateway.impl import node_frame

_log = logging.getLogger(__name__)


class NodeEndpoint(Protocol):
    def frame(self, ftype: int, seq: int, payload: bytes, ts: float, link: NodeLink) -> None: ...
    def link_down(self, reason: str) -> None: ...


class NodeLink:
    """Base: parsing, routing by node id, reference-counted start/stop."""

    def __init__(self, name: str, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.clock = clock
        self.nodes: dict[int, NodeEndpoint] = {}
        self.parser = node_frame.NodeFrameParser()
        self.peer: dict[int, Any] = {}  # node id -> where to send (UDP address)
        self.opened = asyncio.Event()
        self._starts = 0
        self.unknown_nodes = 0
        self.frames_out = 0

    async def start(self) -> None:
        self._starts += 1
        if self._starts == 1:
            try:
                await self._open()
            except OSError as exc:
                self._starts -= 1
                for ep in self.nodes.values():
                    ep.link_down(f"cannot open {self.name}: {exc}")
                raise
            self.opened.set()

    async def stop(self) -> None:
        self._starts -= 1
        if self._starts == 0:
            self.opened.clear()
            self._close()

    async def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def send(self, node_id: int, frame: bytes) -> bool:
        raise NotImplementedError

    def _on_bytes(self, data: bytes, addr: Any = None) -> None:
        frames = self.parser.feed(data)
        if not frames:
            return
        ts = self.clock()
        for ftype, node_id, seq, payload in frames:
            ep = self.nodes.get(node_id)
            if ep is None:
                self.unknown_nodes += 1
                continue
            if addr is not None:
                self.peer[node_id] = addr
            ep.frame(ftype, seq, payload, ts, self)

    def stats(self) -> dict[str, int]:
        p = self.parser
        return {
            "frames": int(p.frames),
            "crc_errors": int(p.crc_errors),
            "bad_frames": int(p.bad_frames),
            "discarded_bytes": int(p.discarded_bytes),
            "unknown_node_frames": self.unknown_nodes,
        }


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, link: UdpNodeLink) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # One datagram carries whole frames; a truncated one must not glue onto the next.
        self.link.parser.reset()
        self.link._on_bytes(data, addr)


class UdpNodeLink(NodeLink):
    def __init__(self, listen: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__(f"udp:{listen}", clock)
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.transport: asyncio.DatagramTransport | None = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        addr = self.transport.get_extra_info("sockname")
        return addr[0], addr[1]

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def send(self, node_id: int, frame: bytes) -> bool:
        addr = self.peer.get(node_id)
        if self.transport is None or addr is None:
            return False
        self.transport.sendto(frame, addr)
        self.frames_out += 1
        return True


class UartNodeLink(NodeLink):
    """A serial port (pyserial opens it; the loop watches the fd). Frames resync on 0x00."""

    def __init__(self, port: str, baudrate: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(f"uart:{port}", clock)
        self.port, self.baudrate = port, baudrate
        self._serial: Any = None
        self._fd = -1

    async def _open(self) -> None:
        import serial

        try:
            ser = serial.Serial(self.port, self.baudrate, timeout=0, exclusive=True)
        except serial.SerialException as exc:
            raise OSError(str(exc)) from None
        self._serial = ser
        self._fd = ser.fileno()
        os.set_blocking(self._fd, False)
        self.parser.reset()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(str(exc))
            return
        if not data:
            self._fail("end of file")
            return
        self._on_bytes(data)

    def _fail(self, reason: str) -> None:
        _log.warning("node link %s lost: %s", self.name, reason)
        self._close()
        self.opened.clear()
        for ep in self.nodes.values():
            ep.link_down(f"{self.name}: {reason}")

    def _close(self) -> None:
        if self._serial is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        with contextlib.suppress(Exception):
            self._serial.close()
        self._serial = None

    def send(self, node_id: int, frame: bytes) -> bool:
        if self._serial is None:
            return False
        try:
            os.write(self._fd, frame)  # frames are small; the tty buffer takes them whole
        except BlockingIOError:
            return False
        except OSError as exc:
            self._fail(str(exc))
            return False
        self.frames_out += 1
        return True


def node_link(config: DeviceConfig, shared: dict[str, Any], clock: Callable[[], float]) -> NodeLink:
    """The link for a node device, shared with other nodes on the same socket or port."""
    nd = config.node
    assert nd is not None
    key = f"node-{nd.transport}:{nd.listen if nd.transport == 'udp' else nd.port}"
    link = shared.get(key)
    if link is None:
        if nd.transport == "udp":
            link = UdpNodeLink(nd.listen, clock)
        else:
            link = UartNodeLink(nd.port, nd.baudrate, clock)
        shared[key] = link
    assert isinstance(link, NodeLink)
    return link
