"""Node driver against the MicroPython SDK file itself, run under CPython over UDP and a pty.

Every node has its own key; the attacks (forged, replayed, spoofed source, unknown node, an old
session after a restart) come from a second real UDP socket while the good node keeps sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import os
import socket
import threading
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rtu_support import wait_for

from gateway.config import DeviceConfig, NodeConfig, PointConfig
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.modbus_tcp import WriteError
from gateway.drivers.node import NodeDevice, UartNodeLink, UdpNodeLink
from gateway.drivers.node.keys import new_node_key

SDK = Path(__file__).resolve().parents[1] / "micropython" / "gwnode.py"


def load_sdk() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gwnode", SDK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gwnode = load_sdk()


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []

    def values(self, pid: int) -> list[float]:
        return [float(v) for b in self.batches for i, v, q in zip(b.point_ids, b.values, b.quality,
                strict=True) if i == pid and q == Quality.GOOD]  # fmt: skip


def key_file(tmp: Path, node_id: int) -> tuple[str, bytes]:
    path = tmp / f"node{node_id}.key"
    return str(path), new_node_key(path)


def node_config(node_id: int, **node: Any) -> DeviceConfig:
    points = (
        PointConfig("temp", channel=0, type="float32"),
        PointConfig("door", channel=1, type="bool"),
        PointConfig("count", channel=2, type="uint32"),
        PointConfig("pump", channel=3, type="float32", writable=True),
    )
    return DeviceConfig(f"n{node_id}", driver="node", timeout=0.2, points=points,
                        node=NodeConfig(node_id=node_id, **node))  # fmt: skip


def ids(cfg: DeviceConfig) -> dict[str, int]:
    return {f"{cfg.name}.{p.name}": i for i, p in enumerate(cfg.points)}


def in_loop(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30.0))

    return test


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


@contextlib.asynccontextmanager
async def serving(node: Any) -> AsyncIterator[None]:
    """The node serves the gateway's frames (writes) in a thread while the block runs."""
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            node.poll(10)

    done = asyncio.get_running_loop().run_in_executor(None, serve)
    try:
        yield
    finally:
        stop.set()
        await done


@in_loop
async def test_sdk_over_udp_readings_acks_duplicates_and_writes(tmp_path: Path) -> None:
    sink = Sink()
    path, key = key_file(tmp_path, 7)
    cfg = node_config(7, listen="127.0.0.1:0", key_file=path)
    link = UdpNodeLink("127.0.0.1:0")
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    writes: list[tuple[int, float]] = []
    node = gwnode.Node(gwnode.UdpTransport(*link.address), 7, key=key,
                       on_write=lambda ch, v: writes.append((ch, v)) or ch == 3)  # fmt: skip
    try:
        ok = await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 21.5), (1, gwnode.BOOL, 1),
                                                (2, gwnode.UINT32, 4_000_000_000)]))  # fmt: skip
        # The first frame is of a session the gateway does not know: SYNC, then resent at once.
        assert ok and node.resent == 0 and node.syncs == 1
        assert sink.values(0) == [21.5] and sink.values(1) == [1.0]
        assert sink.values(2) == [4e9]
        # A retry of an already received frame (our ACK was lost: same seq, next counter) is
        # ACKed, not ingested twice.
        node.transport.write(node._encode(gwnode.READINGS, node.seq,
                                          gwnode.encode_readings([(0, gwnode.FLOAT32, 99.0)])))  # fmt: skip
        await wait_for(lambda: dev.stats()["duplicate_frames"] == 1, 5.0, "duplicate counted")
        assert sink.values(0) == [21.5]
        # A write from the gateway reaches the node's handler and is acknowledged.
        async with serving(node):
            await dev.write("n7.pump", 2.5)
            with pytest.raises(WriteError) as err:
                await dev.write("n7.temp", 1.0)
            assert err.value.refused
    finally:
        node.transport.close()
        await dev.stop()
    assert writes == [(3, 2.5)]
    assert [e.kind for e in sink.events] == ["online"]
    assert dev.stats()["writes"] == 1 and dev.stats()["crc_errors"] == 0


@in_loop
async def test_unknown_node_is_refused_and_logged_once_while_a_good_node_flows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    path, key = key_file(tmp_path, 8)
    cfg = node_config(8, key_file=path)
    link = UdpNodeLink("127.0.0.1:0")
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    # Node 9 is not configured (its own key is of no help): no ACK, so it retries, and the
    # refusals are logged once for the episode, not once per frame.
    stranger = gwnode.Node(gwnode.UdpTransport(*link.address), 9, ack_timeout_ms=30, retries=2,
                           key=key)  # fmt: skip
    good = gwnode.Node(gwnode.UdpTransport(*link.address), 8, key=key)
    caplog.set_level(logging.INFO, "gateway.drivers.node")
    try:
        for i in range(2):
            assert not await in_thread(lambda: stranger.send([(0, gwnode.FLOAT32, 1.0)]))
            assert await in_thread(lambda i=i: good.send([(0, gwnode.FLOAT32, float(i))]))
    finally:
        stranger.transport.close()
        good.transport.close()
        await dev.stop()
    assert stranger.resent == 4 and stranger.failed == 2
    assert dev.stats()["unknown_node_frames"] == 6 and sink.values(0) == [0.0, 1.0]
    logged = [r for r in caplog.records if "unconfigured node 9" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING


@in_loop
async def test_discovery_lists_unknown_nodes_without_accepting_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = UdpNodeLink("127.0.0.1:0", discovery=True)
    sink = Sink()
    dev = NodeDevice(node_config(1, insecure=True), ids(node_config(1, insecure=True)),
                     sink.batches.append, sink.events.append, link=link)  # fmt: skip
    await dev.start()
    caplog.set_level(logging.INFO, "gateway.drivers.node")
    node = gwnode.Node(gwnode.UdpTransport(*link.address), 40, ack_timeout_ms=20, retries=1)
    try:
        assert not await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 1.0)]))
    finally:
        node.transport.close()
        await dev.stop()
    assert list(link.discovered) == [40] and dev.stats()["discovered_nodes"] == 1
    assert sum("discovered node 40" in r.getMessage() for r in caplog.records) == 1
    assert not sink.batches


class Attacker:
    """A second real UDP socket on loopback: what a hostile host on the network can send."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.target = target

    def send(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.target)

    def received(self) -> list[bytes]:
        got = []
        try:
            while True:
                got.append(self.sock.recv(2048))
        except TimeoutError:
            return got


@in_loop
async def test_forged_replayed_and_spoofed_frames_are_refused_while_the_node_flows(
    tmp_path: Path,
) -> None:
    sink = Sink()
    path, key = key_file(tmp_path, 7)
    cfg = node_config(7, key_file=path)
    link = UdpNodeLink("127.0.0.1:0")
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    writes: list[tuple[int, float]] = []
    node = gwnode.Node(gwnode.UdpTransport(*link.address), 7, key=key,
                       on_write=lambda ch, v: writes.append((ch, v)) or True)  # fmt: skip
    evil = Attacker(link.address)
    payload = gwnode.encode_readings([(0, gwnode.FLOAT32, 666.0)])
    heard: list[bytes] = []  # every datagram the gateway sent the node
    read = node.transport.read
    node.transport.read = lambda: (lambda d: (d and heard.append(d), d)[1])(read())  # type: ignore[method-assign]
    try:
        assert await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 1.0)]))
        home = link.peer[7]
        up, _ = gwnode.mac_keys(bytes(32))
        # Forged: right node id, right session and counter, wrong key.
        evil.send(gwnode.encode_frame(gwnode.READINGS, 7, 99, payload, up, node.epoch,
                                      node.counter + 1))  # fmt: skip
        # Replayed: the node's last frame byte for byte, from another address.
        last = gwnode.encode_frame(gwnode.READINGS, 7, node.seq,
                                   gwnode.encode_readings([(0, gwnode.FLOAT32, 1.0)]),
                                   node._up, node.epoch, node.counter)  # fmt: skip
        evil.send(last)
        # Unauthenticated format 1 (what every node sent before): refused from a keyed node.
        evil.send(gwnode.encode_frame(gwnode.READINGS, 7, 98, payload))
        # A gateway frame reflected back to it (captured ACK): the other direction's key.
        evil.send(link.parser.encode(gwnode.ACK, 7, 5))
        await wait_for(lambda: dev.stats()["forged_frames"] == 2, 5.0, "forgeries counted")
        await wait_for(lambda: dev.stats()["replayed_frames"] == 1, 5.0, "replay counted")
        await wait_for(lambda: dev.stats()["unauthenticated_frames"] == 1, 5.0, "plain counted")
        assert link.peer[7] == home  # replies still go to the node, not to the last sender
        for i in range(3):  # the good node keeps flowing
            assert await in_thread(lambda i=i: node.send([(0, gwnode.FLOAT32, 2.0 + i)]))
        async with serving(node):
            await dev.write("n7.pump", 2.5)
        assert evil.received() == []  # no ACK, no write, not even a SYNC went to the attacker
        # The node checks the gateway's frames the same way: a recorded WRITE played back to
        # it, or one under the wrong key, is not applied.
        to_node = node.transport.sock.getsockname()
        recorded = list(heard)
        for frame in recorded:
            evil.sock.sendto(frame, to_node)
        _, down = gwnode.mac_keys(bytes(32))
        evil.sock.sendto(gwnode.encode_frame(gwnode.WRITE, 7, 77, bytes((3, gwnode.FLOAT32)) +
                                             bytes(4), down, node.epoch, 999), to_node)  # fmt: skip
        await in_thread(lambda: node.poll(200))
        assert node.refused == len(recorded) + 1 and len(recorded) >= 6  # SYNC, 4 ACKs, WRITE
    finally:
        node.transport.close()
        evil.sock.close()
        await dev.stop()
    assert sink.values(0) == [1.0, 2.0, 3.0, 4.0] and writes == [(3, 2.5)]
    assert dev.stats()["readings_frames"] == 4


@in_loop
async def test_restarts_start_a_new_session_and_old_sessions_stay_refused(tmp_path: Path) -> None:
    """Gateway restart (new link, no state kept) and node reboot (new epoch): one SYNC each;
    frames recorded in an earlier session are never accepted again."""
    path, key = key_file(tmp_path, 5)
    cfg = node_config(5, key_file=path)
    sink = Sink()
    link = UdpNodeLink("127.0.0.1:0")
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    port = link.address[1]
    node = gwnode.Node(gwnode.UdpTransport(*link.address), 5, key=key)
    recorded: list[bytes] = []
    write = node.transport.write
    node.transport.write = lambda frame: (recorded.append(frame), write(frame))[1]  # type: ignore[method-assign]
    evil = Attacker(link.address)
    try:
        assert await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 1.0)]))
        await dev.stop()  # the gateway restarts: a new link and device, nothing persisted
        link = UdpNodeLink(f"127.0.0.1:{port}")
        dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
        await dev.start()  # the old socket closes on the next loop turn: the watchdog retries
        await wait_for(link.opened.is_set, 5.0, "the restarted gateway's socket")
        for frame in recorded:  # replayed from the old session: answered, never accepted
            evil.send(frame)
        await wait_for(lambda: link.stats()["stale_session_frames"] == len(recorded), 5.0,
                       "old-session frames seen")  # fmt: skip
        answers = [gwnode.cobs_decode(f[:-1]) for f in evil.received()]
        assert 1 <= len(answers) <= len(recorded)  # rate-limited, never larger than the frame
        assert all(a is not None and a[1] == gwnode.SYNC for a in answers)
        assert await in_thread(lambda: node.send([(0, gwnode.FLOAT32, 2.0)]))
        assert node.syncs == 2
        rebooted = gwnode.Node(gwnode.UdpTransport(*link.address), 5, key=key)  # new epoch
        try:
            assert await in_thread(lambda: rebooted.send([(0, gwnode.FLOAT32, 3.0)]))
        finally:
            rebooted.transport.close()
        assert rebooted.syncs == 1 and dev.stats()["sessions"] == 2
        for frame in recorded:
            evil.send(frame)
        await asyncio.sleep(0.1)
    finally:
        node.transport.close()
        evil.sock.close()
        await dev.stop()
    assert sink.values(0) == [1.0, 2.0, 3.0]


@in_loop
async def test_insecure_node_speaks_format_1_only_when_configured() -> None:
    sink = Sink()
    link = UdpNodeLink("127.0.0.1:0")
    cfg = node_config(4, insecure=True)
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    plain = gwnode.Node(gwnode.UdpTransport(*link.address), 4)
    keyed = gwnode.Node(gwnode.UdpTransport(*link.address), 4, key=bytes(32), retries=0,
                        ack_timeout_ms=30)  # fmt: skip
    try:
        assert await in_thread(lambda: plain.send([(0, gwnode.FLOAT32, 1.0)]))
        assert not await in_thread(lambda: keyed.send([(0, gwnode.FLOAT32, 2.0)]))
    finally:
        plain.transport.close()
        keyed.transport.close()
        await dev.stop()
    assert sink.values(0) == [1.0] and dev.stats()["unauthenticated_frames"] == 1
    with pytest.raises(ValueError, match="key_file"):
        NodeDevice(node_config(6), {}, sink.batches.append, sink.events.append, link=link)


class PtyUart:
    """machine.UART-like object on the master side of a pty (the node's end of the wire)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 4096) or None
        except (BlockingIOError, OSError):
            return None


@in_loop
async def test_sdk_over_a_pty_uart_with_garbage_on_the_line(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    sink = Sink()
    path, key = key_file(tmp_path, 3)
    cfg = node_config(3, transport="uart", port=os.ttyname(slave), key_file=path)
    link = UartNodeLink(os.ttyname(slave), 115200)
    dev = NodeDevice(cfg, ids(cfg), sink.batches.append, sink.events.append, link=link)
    await dev.start()
    node = gwnode.Node(gwnode.UartTransport(PtyUart(master)), 3, key=key)
    try:
        os.write(master, b"\x13\x37noise without a delimiter" * 5)  # boot-loader chatter
        for i in range(5):
            assert await in_thread(lambda i=i: node.send([(0, gwnode.FLOAT32, float(i))]))
    finally:
        await dev.stop()
        os.close(master)
        os.close(slave)
    assert sink.values(0) == [0.0, 1.0, 2.0, 3.0, 4.0]
    st = dev.stats()
    assert st["bad_frames"] == 1 and st["discarded_bytes"] > 100


NODE_YAML = """
gateway: {{id: gw1}}
uplink: {{insecure: true}}
devices:
  - name: tank
    driver: node
    node: {{node_id: 3{extra}}}
    points:
      - {{name: level, channel: 0}}
"""


def test_config_binds_loopback_and_needs_a_key_file_or_insecure(tmp_path: Path) -> None:
    from gateway.config import ConfigError, check_main, load_config_text

    def load(extra: str) -> Any:
        return load_config_text(NODE_YAML.format(extra=extra), base_dir=tmp_path)

    new_node_key(tmp_path / "tank.key")
    nd = load(", key_file: tank.key").devices[0].node
    assert nd.listen == "127.0.0.1:47800" and nd.key_file == str(tmp_path / "tank.key")
    assert load(", insecure: true").devices[0].node.insecure
    bad = {
        "": "key_file: required unless insecure: true",
        ", key_file: missing.key": "cannot read the node key",
        ", key_file: tank.key, insecure: true": "remove one of them",
        ", key_file: open.key": "chmod 600",
        ", key_file: short.key": "hex digits",
    }
    (tmp_path / "open.key").write_text("00" * 32)
    (tmp_path / "open.key").chmod(0o644)
    (tmp_path / "short.key").write_text("abcd")
    (tmp_path / "short.key").chmod(0o600)
    for extra, message in bad.items():
        with pytest.raises(ConfigError) as err:
            load(extra)
        assert message in str(err.value), (extra, str(err.value))
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(NODE_YAML.format(extra=", key_file: open.key"))
    assert check_main(str(cfg)) == 1  # `gateway check` says so too


def test_sdk_hmac_is_the_standard_one() -> None:
    """The SDK builds HMAC from hashlib (MicroPython has no hmac): same bytes as the stdlib."""
    import hashlib
    import hmac

    for n in (0, 16, 64, 65, 100):
        key, msg = bytes(range(n)), bytes(range(n, n + 70))
        want = hmac.digest(key, msg, hashlib.sha256)
        assert (
            gwnode.hmac_sha256(key, msg) == gwnode.hmac_sha256(gwnode.hmac_pads(key), msg) == want
        )
