"""Helpers of the OPC UA driver tests: the server child process, a TCP proxy that can cut the
connection mid-message, and a collector of what the device delivered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import DeviceConfig, OpcuaConfig, PointConfig
from gateway.core.model import DeviceEvent, SampleBatch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """tests/opcua_server.py in a child process."""

    def __init__(self, **opts: Any) -> None:
        self.opts = {"port": free_port(), **opts}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.opts['port']}/gw/"

    def start(self, timeout: float = 30.0, **changes: Any) -> ServerProcess:
        self.opts.update(changes)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.opcua_server", json.dumps(self.opts)],
            cwd=ROOT, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        buf = b""
        while b"READY" not in buf:
            assert self.proc.poll() is None, f"OPC UA test server exited: {self.proc.returncode}"
            assert time.monotonic() < deadline, f"OPC UA test server not ready in {timeout}s"
            try:
                buf += os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.05)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Proxy:
    """Loopback TCP proxy; ``cut()`` ends every connection after forwarding half of the next
    server->client message (a PublishResponse cut mid-way)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._cut = asyncio.Event()
        self.cuts = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self._cut.set()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cw.close()
            return
        self._conns.append((cw, sw))

        async def up() -> None:
            while data := await cr.read(65536):
                sw.write(data)
                await sw.drain()

        async def down() -> None:
            while data := await sr.read(65536):
                if self._cut.is_set() and len(data) > 200:
                    cw.write(data[: len(data) // 2])
                    await cw.drain()
                    self._cut.clear()
                    self.cuts += 1
                    break
                cw.write(data)
                await cw.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            pass
        finally:
            for t in tasks:
                t.cancel()
            for w in (cw, sw):
                w.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for cw, sw in self._conns:
            cw.close()
            sw.close()


class Collector:
    """Everything a device hands over, per point id."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []

    def on_batch(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def on_event(self, event: DeviceEvent) -> None:
        self.events.append(event)

    def values(self, pid: int, good_only: bool = True) -> list[float]:
        out: list[float] = []
        for b in self.batches:
            sel = b.point_ids == pid
            if good_only:
                sel &= b.quality == 0
            out.extend(float(v) for v in b.values[sel])
        return out

    def bad_batches(self) -> int:
        return sum(1 for b in self.batches if len(b) and (b.quality == 2).all())

    def last(self, pid: int) -> float:
        vals = self.values(pid)
        return vals[-1] if vals else math.nan


def device_config(url: str, nodes: list[tuple[str, str]], *, poll: float = 0.1,
                  writable: tuple[str, ...] = (), **opcua: Any) -> DeviceConfig:  # fmt: skip
    """A device of points (name, node) in one poll group; security None unless given."""
    opc = {"insecure": True, **opcua}
    if opc.get("security_policy", "None") != "None":
        opc.pop("insecure")
    return DeviceConfig(
        name="press", driver="opcua", timeout=2.0, reconnect_min=0.2, reconnect_max=1.0,
        poll_groups={"default": poll},
        points=tuple(PointConfig(name=n, node=node, writable=n in writable) for n, node in nodes),
        opcua=OpcuaConfig(endpoint=url, **opc),
    )  # fmt: skip


def point_ids(cfg: DeviceConfig) -> dict[str, int]:
    return {f"{cfg.name}.{p.name}": i for i, p in enumerate(cfg.points)}


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def consecutive(values: list[float]) -> list[tuple[float, float]]:
    """Where a counter did not go up by exactly one: (before, after) pairs."""
    a = np.asarray(values)
    bad = np.nonzero(np.diff(a) != 1.0)[0]
    return [(float(a[i]), float(a[i + 1])) for i in bad]


@contextlib.asynccontextmanager
async def running(cfg: DeviceConfig) -> AsyncIterator[tuple[Collector, Any]]:
    """An OpcuaDevice of ``cfg``, started, with what it delivers collected; stopped after."""
    from gateway.drivers.opcua.device import OpcuaDevice

    col = Collector()
    dev = OpcuaDevice(cfg, point_ids(cfg), col.on_batch, col.on_event)
    await dev.start()
    try:
        yield col, dev
    finally:
        await dev.stop()


async def run_until(
    cfg: DeviceConfig, until: Callable[[Collector, Any], bool], what: str, timeout: float = 20.0
) -> tuple[Collector, Any]:
    """Run a device until ``until(collector, device)`` holds."""
    async with running(cfg) as (col, dev):
        await wait_for(lambda: until(col, dev), what, timeout)
    return col, dev
