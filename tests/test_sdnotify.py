"""sd_notify from the runtime's own loop, against a real unix datagram socket as NOTIFY_SOCKET.

The hung-loop test blocks the event loop from inside (a callback that waits on a threading.Event),
drains what was already sent, and checks that no WATCHDOG=1 arrives while the loop is blocked and
that pings resume once it is released: exactly what systemd's WatchdogSec= relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.core.runtime import Runtime
from gateway.core.sdnotify import SystemdNotifier, parse_address

CONFIG = """\
gateway: {id: sdn-gw, data_dir: data, metrics_listen: "127.0.0.1:0"}
uplink: {endpoints: ["tcp://127.0.0.1:9"], queue: data/q.db, insecure: true}
"""


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to 108 bytes, so not under pytest's long tmp_path.
    d = tempfile.mkdtemp(prefix="sdn")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


def recv_until(sock: socket.socket, want: str, timeout: float = 10.0) -> list[str]:
    """Messages up to and including the first that contains the field ``want``."""
    sock.settimeout(timeout)
    got: list[str] = []
    while True:
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no {want!r} within {timeout}s; got {got}") from None
        got.append(msg)
        if want in msg.split("\n"):
            return got


def drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return out


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = SystemdNotifier(environ={})
    assert not n.enabled
    n.ready()
    n.tick()
    n.stopping()
    assert n.sent == 0


def test_abstract_socket_address() -> None:
    assert parse_address("@/org/sd/notify") == b"\0/org/sd/notify"
    assert parse_address("/run/systemd/notify") == "/run/systemd/notify"


def test_watchdog_pings_at_half_the_timeout(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    clock = FakeClock()
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=clock)
    assert n.watchdog_interval == 1.0
    n.ready("up")
    msgs = drain(sock)
    assert msgs[0].split("\n")[0] == "READY=1" and "STATUS=up" in msgs[0]
    assert msgs[1:] == ["WATCHDOG=1"]
    clock.t += 0.99
    n.tick()
    assert drain(sock) == []
    clock.t += 0.02
    n.tick()
    assert drain(sock) == ["WATCHDOG=1"]
    n.stopping()
    assert drain(sock) == ["STOPPING=1\nSTATUS=stopping"]
    n.close()


def test_watchdog_for_another_pid_is_ignored(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    n = SystemdNotifier(env)
    assert n.watchdog_interval is None
    n.ready()
    assert [m.split("\n")[0] for m in drain(sock)] == ["READY=1"]


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000"})
    n.ready()
    n.tick()
    assert n.sent == 0


def _status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_runtime_notifies_ready_pings_from_its_loop_and_stops_when_the_loop_hangs(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    (tmp_path / "gw.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "gw.yaml")
    # WatchdogSec=0.4s: the runtime pings every 0.2 s from its 0.1 s tick.
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    runtime = Runtime(config, notifier=notifier)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    done = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            loop.run_until_complete(runtime.run(stop))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    entered, release = threading.Event(), threading.Event()
    try:
        first = recv_until(sock, "READY=1")
        assert not any("WATCHDOG=1" in m for m in first[:-1]), "pinged before READY"
        recv_until(sock, "WATCHDOG=1", 5)
        recv_until(sock, "WATCHDOG=1", 5)  # and again: the loop keeps pinging

        port = runtime._status_server.port  # type: ignore[union-attr]
        code, body = _get(f"http://127.0.0.1:{port}/health")
        assert code == 200 and body["status"] == "ok", body

        def hang() -> None:
            entered.set()
            release.wait(30)

        loop.call_soon_threadsafe(hang)
        assert entered.wait(10), "the hang callback never ran on the loop"
        drain(sock)  # pings sent before the loop blocked
        sock.settimeout(1.0)  # 5 ping intervals
        with pytest.raises(TimeoutError):
            msg = sock.recv(4096)
            pytest.fail(f"a blocked loop still sent {msg!r}")
        release.set()
        recv_until(sock, "WATCHDOG=1", 5)

        # A stuck run loop (the event loop still serving HTTP) makes /health stale: 503.
        runtime._last_tick -= 10
        stale = runtime.health()
        assert stale[0] is False and stale[1]["status"] == "stale"
    finally:
        release.set()
        loop.call_soon_threadsafe(stop.set)
        assert done.wait(20), "runtime did not stop"
        thread.join(5)
        loop.close()
    assert not errors, errors
    tail = recv_until(sock, "STOPPING=1", 2)
    assert "STATUS=stopping" in tail[-1]
    assert runtime.health()[0] is False


def test_health_is_503_before_start_and_404_is_explicit(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(CONFIG)
    runtime = Runtime(load_config(tmp_path / "gw.yaml"), notifier=SystemdNotifier({}))
    ok, info = runtime.health()
    assert not ok and info["status"] == "not running"

    async def main() -> tuple[int, dict, int]:
        server = runtime._status_server
        assert server is not None
        await server.start()
        try:
            code, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/health")
            missing = await asyncio.to_thread(_status_code, f"http://127.0.0.1:{server.port}/x")
        finally:
            await server.stop()
        return code, body, missing

    code, body, missing = asyncio.run(main())
    assert code == 503 and body["status"] == "not running"
    assert missing == 404
