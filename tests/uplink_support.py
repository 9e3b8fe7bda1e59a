"""Shared helpers of the uplink tests: bounded waits, a running receiver, a raw DEALER peer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
import zmq
import zmq.asyncio

from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.store import CloudStore, SQLiteCloudStore
from gateway.config import GatewayConfig, load_config_text
from gateway.uplink import keys, wire
from hil_tests.rig import only_devices


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    """Run a test coroutine with a hard deadline, so a hang fails instead of blocking CI."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def bounded(aw: Awaitable[Any], what: str, timeout: float = 5.0) -> Any:
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@contextlib.asynccontextmanager
async def running_receiver(
    store: CloudStore,
    bind: str = "tcp://127.0.0.1:0",
    pub_bind: str | None = "tcp://127.0.0.1:0",
    **kwargs: Any,
) -> AsyncIterator[CloudReceiver]:
    stop = asyncio.Event()
    receiver = CloudReceiver(bind, pub_bind, store, **kwargs)
    task = asyncio.create_task(receiver.run(stop))
    ready = asyncio.ensure_future(receiver.ready.wait())
    await bounded(asyncio.wait({task, ready}, return_when="FIRST_COMPLETED"), "receiver bind")
    ready.cancel()
    if task.done():
        task.result()
    try:
        yield receiver
    finally:
        stop.set()
        await bounded(task, "receiver shutdown")


@dataclass
class Pki:
    root: Path
    cloud: keys.KeyPair
    allow_dir: Path
    gw_dir: Path

    def gateway(self, name: str, allowed: bool = True) -> keys.KeyPair:
        pair = keys.create(self.gw_dir, name)
        if allowed:
            keys.allow(self.gw_dir / f"{name}.key", self.allow_dir)
        return pair

    def curve(self, pair: keys.KeyPair, server: bytes | None = None) -> tuple[bytes, bytes, bytes]:
        assert pair.secret is not None
        return (server or self.cloud.public, pair.public, pair.secret)


def make_pki(tmp_path: Path) -> Pki:
    """A cloud key pair in ``tmp_path/cloud``, gateway keys in ``gw``, the allow-list in
    ``allowed``."""
    cloud = keys.create(tmp_path / "cloud", "cloud")
    return Pki(tmp_path, cloud, tmp_path / "allowed", tmp_path / "gw")


@contextlib.asynccontextmanager
async def secure_receiver(pki: Pki, **kw: object) -> AsyncIterator[CloudReceiver]:
    store = SQLiteCloudStore(pki.root / "cloud.db")
    allow = keys.AllowList(pki.allow_dir)
    async with running_receiver(store, server_key=pki.cloud, allow=allow, **kw) as rx:
        yield rx


class RawPeer:
    """A bare DEALER that speaks the wire protocol by hand (for protocol-level tests).

    ``curve`` = (server public key, own public key, own secret key), all Z85.
    """

    def __init__(
        self,
        endpoint: str,
        curve: tuple[bytes, bytes, bytes] | None = None,
        routing_id: bytes | None = None,
    ) -> None:
        self.sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if curve is not None:
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, curve[0])
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, curve[1])
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, curve[2])
        self.sock.connect(endpoint)

    async def call(self, msg: wire.Message | list[bytes]) -> wire.Message:
        frames = msg if isinstance(msg, list) else wire.encode(msg)
        await self.sock.send_multipart(frames)
        reply = await bounded(self.sock.recv_multipart(), "reply from the receiver")
        return wire.decode(reply)

    def close(self) -> None:
        self.sock.close(linger=0)


DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"


def without_opcua(doc: dict[str, Any]) -> dict[str, Any]:
    """The demo config ``doc`` without its OPC UA machine (and that machine's asset), for tests
    that simulate the Modbus factory only (tests/test_sim_opcua.py and the OPC UA tests cover it)."""
    return only_devices(doc, lambda d: d.get("driver") != "opcua")


def modbus_demo() -> GatewayConfig:
    """``examples/demo.yaml`` :func:`without_opcua`, its relative paths resolved as in the file."""
    doc = without_opcua(yaml.safe_load(DEMO.read_text()))
    return load_config_text(yaml.safe_dump(doc, sort_keys=False), str(DEMO))


def demo_config(
    tmp_path: Path, ports: dict[str, int], endpoint: str, queue: str | Path
) -> GatewayConfig:
    """``examples/demo.yaml`` against simulated devices on ``ports`` and a plaintext receiver at
    ``endpoint``, with its data in ``tmp_path`` (no status listener); the Modbus factory only."""
    base = modbus_demo()
    return dataclasses.replace(
        base,
        data_dir=str(tmp_path),
        metrics_listen=None,
        devices=tuple(dataclasses.replace(d, port=ports[d.name]) for d in base.devices),
        uplink=dataclasses.replace(
            base.uplink, endpoints=(endpoint,), queue=str(queue), insecure=True
        ),
    )
