"""The medium node devices share: one UDP socket per ``listen`` address, one UART per port.

A link parses frames (compiled :class:`NodeFrameParser`, which also checks each frame's MAC
and replay window under the node's key), routes authentic, fresh frames by node id to the
device that owns that node, and sends frames back: over UDP only to the address of the node's
last accepted frame, never to whoever sent the last datagram. A frame that is authentic but of
no session the gateway knows (the node or the gateway restarted) is answered with a SYNC that
offers a fresh session (docs/node-frame.md). Forged, replayed and unauthenticated frames and
frames from node ids nobody configured are refused, counted, and logged once per episode; a
refused frame is never acknowledged, so a misconfigured node keeps its data and retries.
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
from gateway.impl import node_frame as nf

_log = logging.getLogger(__name__)
SYNC_INTERVAL = 0.05  # s between SYNCs to one node: bounds what replays can make us send
QUIET = 60.0  # s without a refusal of a kind before the next one is logged again
MAX_DISCOVERED = 256
_REFUSED = {nf.REPLAY: "a replayed frame", nf.FORGED: "a forged frame (wrong MAC)",
            nf.MODE: "an unauthenticated frame (or one of the wrong format)"}  # fmt: skip


class NodeEndpoint(Protocol):
    def frame(
        self, ftype: int, seq: int, payload: bytes, ts: float, link: NodeLink, epoch: int
    ) -> None: ...
    def refused(self, status: int) -> None: ...
    def link_down(self, reason: str) -> None: ...


class Episodes:
    """Whether to log a refusal: the first of its kind, or the first after QUIET seconds."""

    def __init__(self, quiet: float = QUIET) -> None:
        self.quiet = quiet
        self._last: dict[Any, float] = {}

    def starts(self, kind: Any) -> bool:
        now = time.monotonic()
        prev = self._last.get(kind)
        self._last[kind] = now
        return prev is None or now - prev > self.quiet


class NodeLink:
    """Base: parsing and authentication, routing by node id, reference-counted start/stop."""

    def __init__(
        self, name: str, clock: Callable[[], float] = time.time, discovery: bool = False
    ) -> None:
        self.name = name
        self.clock = clock
        self.discovery = discovery
        self.nodes: dict[int, NodeEndpoint] = {}
        self.parser = nf.NodeFrameParser()
        self.peer: dict[int, Any] = {}  # node id -> address of its last accepted frame (UDP)
        self.opened = asyncio.Event()
        self._starts = 0
        self._sync_at: dict[int, float] = {}
        self._episodes = Episodes()
        self.discovered: dict[int, Any] = {}  # node id -> last address (with discovery: true)
        self.unknown_nodes = self.syncs = self.frames_out = self.endpoint_errors = 0

    def add(self, node_id: int, endpoint: NodeEndpoint, key: bytes | None) -> None:
        """Route ``node_id`` to ``endpoint``; frames must carry a MAC under ``key`` (None:
        format-1 frames without one, for nodes configured ``insecure: true``)."""
        if node_id in self.nodes:
            raise ValueError(f"node id {node_id} is used twice on {self.name}")
        self.parser.set_key(node_id, key)
        self.nodes[node_id] = endpoint

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

    def send(self, node_id: int, ftype: int, seq: int, payload: bytes = b"") -> bool:
        """Encode a frame for the node's current session and send it where the node is.

        False when the node has no session yet (never heard from) or the medium is down.
        """
        if node_id not in self.nodes or not self._reachable(node_id):
            return False
        try:
            frame = self.parser.encode(ftype, node_id, seq, payload)
        except ValueError:  # no session yet: nothing authentic to answer to
            return False
        return self._transmit(frame, self.peer.get(node_id))

    def _reachable(self, node_id: int) -> bool:
        raise NotImplementedError

    def _transmit(self, frame: bytes, addr: Any) -> bool:
        raise NotImplementedError

    def _on_bytes(self, data: bytes, addr: Any = None) -> None:
        frames = self.parser.feed(data)
        if not frames:
            return
        ts = self.clock()
        for status, ftype, node_id, seq, epoch, counter, payload in frames:
            if status == nf.OK:
                if addr is not None:
                    self.peer[node_id] = addr
                try:
                    self.nodes[node_id].frame(ftype, seq, payload, ts, self, epoch)
                except Exception as exc:  # one frame's consumer must not cost the rest
                    self.endpoint_errors += 1
                    if self._episodes.starts("endpoint"):
                        _log.exception("%s: node %d: handling a frame failed: %s", self.name,
                                       node_id, exc)  # fmt: skip
            elif status == nf.STALE:
                self._sync(node_id, epoch, counter, addr)
            elif status == nf.UNKNOWN:
                self._unknown(node_id, addr)
            else:
                self.nodes[node_id].refused(status)
                if self._episodes.starts((status, node_id)):
                    _log.warning("%s: node %d: refused %s from %s (counted in stats; "
                                 "logged again after %gs without one)", self.name, node_id,
                                 _REFUSED[status], addr or "the line", QUIET)  # fmt: skip

    def _sync(self, node_id: int, epoch: int, counter: int, addr: Any) -> None:
        """Offer a fresh session to an authentic frame of an unknown one (rate-limited).

        The SYNC goes to the frame's source, the one reply not sent to the registered
        address: a node that rebooted onto a new address must be able to resume. It is no
        larger than the frame that caused it and carries nothing secret.
        """
        now = time.monotonic()
        if now - self._sync_at.get(node_id, -1e9) < SYNC_INTERVAL:
            return
        self._sync_at[node_id] = now
        if self.parser.pending(node_id) == 0:
            current = self.parser.epoch(node_id)
            nonce = current
            while nonce in (0, current):
                nonce = int.from_bytes(os.urandom(4), "big")
            self.parser.expect(node_id, nonce)
        if self._transmit(self.parser.encode_sync(node_id, epoch, counter), addr):
            self.syncs += 1

    def _unknown(self, node_id: int, addr: Any) -> None:
        self.unknown_nodes += 1
        if self.discovery:
            new = node_id not in self.discovered
            if new and len(self.discovered) >= MAX_DISCOVERED:
                return
            self.discovered[node_id] = addr
            if new:
                _log.info("%s: discovered node %d at %s (not configured: its frames are "
                          "counted, not acknowledged)", self.name, node_id, addr or "the line")  # fmt: skip
        elif self._episodes.starts("unknown"):
            _log.warning("%s: refused frames of unconfigured node %d from %s (counted in "
                         "unknown_node_frames; logged again after %gs without one)", self.name,
                         node_id, addr or "the line", QUIET)  # fmt: skip

    def stats(self) -> dict[str, int]:
        p = self.parser
        return {
            "frames": int(p.frames),
            "crc_errors": int(p.crc_errors),
            "bad_frames": int(p.bad_frames),
            "discarded_bytes": int(p.discarded_bytes),
            "unknown_node_frames": self.unknown_nodes,
            "link_forged_frames": int(p.forged),
            "link_replayed_frames": int(p.replays),
            "link_unauthenticated_frames": int(p.wrong_mode),
            "stale_session_frames": int(p.stale),
            "syncs_sent": self.syncs,
            "discovered_nodes": len(self.discovered),
            "endpoint_errors": self.endpoint_errors,
        }


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, link: UdpNodeLink) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # One datagram carries whole frames; a truncated one must not glue onto the next.
        self.link.parser.reset()
        self.link._on_bytes(data, addr)


class UdpNodeLink(NodeLink):
    def __init__(
        self, listen: str, clock: Callable[[], float] = time.time, discovery: bool = False
    ) -> None:
        super().__init__(f"udp:{listen}", clock, discovery)
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

    def _reachable(self, node_id: int) -> bool:
        return node_id in self.peer

    def _transmit(self, frame: bytes, addr: Any) -> bool:
        if self.transport is None or addr is None:
            return False
        self.transport.sendto(frame, addr)
        self.frames_out += 1
        return True


class UartNodeLink(NodeLink):
    """A serial port (pyserial opens it; the loop watches the fd). Frames resync on 0x00."""

    def __init__(
        self, port: str, baudrate: int, clock: Callable[[], float] = time.time,
        discovery: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(f"uart:{port}", clock, discovery)
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

    def _reachable(self, node_id: int) -> bool:
        return True

    def _transmit(self, frame: bytes, addr: Any) -> bool:
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
            link = UdpNodeLink(nd.listen, clock, nd.discovery)
        else:
            link = UartNodeLink(nd.port, nd.baudrate, clock, nd.discovery)
        shared[key] = link
    assert isinstance(link, NodeLink)
    link.discovery = link.discovery or nd.discovery  # any node on the medium can turn it on
    return link
