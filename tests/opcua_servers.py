"""OPC UA servers for the tests, each in a child process on loopback: start, wait, endpoint.

Three kinds, one interface (:func:`start_server`, or :func:`opcua_server` as a context manager):

- ``"asyncua"``: asyncua's own server (this file run as a script, ``main()`` below);
- ``"node"``: the node-opcua server of ``tests/opcua_node/server.js``, a second implementation
  (skipped with the reason when Node.js or its modules are missing; a failure under CI=true,
  where .ci/run installs them: CI must not skip it silently);
- ``"machine"``: the demo's injection-moulding machine (``gateway sim --factory opcua``).

The asyncua and node servers have the same address space (``Objects/Plant/Doubles/Value0..N-1``,
Doubles changing every ``period_ms``, and ``Objects/Plant/Typed/...``: one variable per type,
a writable ``Setpoint``, analog items with EngineeringUnits and EURange, a ByteString and a Double
array that discovery skips). :data:`TYPED` says what each typed variable is.

Every wait is bounded and says what it waited for. A :class:`RunningServer` can be killed
(SIGKILL), frozen (SIGSTOP/SIGCONT) and restarted on the same port, for reconnect tests. Use it
once per test module (a module-scoped fixture): an asyncua server takes ~2 s to start, node-opcua
~2-4 s.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "opcua_node"
START_TIMEOUT = 30.0  # seconds; a cold node-opcua start makes its certificate first

#: The typed variables of both test servers: BrowseName -> (point type, unit, range, writable);
#: point type None: discovery must skip it.
TYPED: dict[str, tuple[str | None, str, tuple[float, float] | None, bool]] = {
    "Running": ("bool", "", None, False),
    "Counter": ("int32", "", None, False),
    "StatusWord": ("uint16", "", None, False),
    "EnergyWh": ("int64", "", None, False),
    "Ratio": ("float32", "", None, False),
    "Label": ("string", "", None, False),
    "LastChange": ("datetime", "", None, False),
    "Setpoint": ("float64", "", None, True),
    "RawFrame": (None, "", None, False),
    "Spectrum": (None, "", None, False),
    "Temperature": ("float64", "°C", (-40.0, 200.0), False),
    "Pressure": ("float32", "bar", (0.0, 16.0), False),
    "Interval": ("float64", "", None, False),  # DataType Duration, a subtype of Double
    "State": ("int32", "", None, False),  # DataType ServerState, an enumeration
}


class ServerUnavailable(Exception):
    """The server cannot run here (no Node.js, modules not installed): the reason."""


def node_missing() -> str:
    """Why the node-opcua server cannot run here; empty when it can."""
    if shutil.which("node") is None:
        return "Node.js (`node`) is not on PATH; install Node.js >= 18 (.ci/run does)"
    if not (NODE_DIR / "node_modules" / "node-opcua" / "package.json").is_file():
        return "node-opcua is not installed: run `make opcua-node` (npm ci in tests/opcua_node)"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A server child process. ``endpoint`` is its opc.tcp URL on 127.0.0.1."""

    kind: str
    port: int
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    endpoint: str = ""
    limits: tuple[int, int] = (0, 0)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not ended within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot end otherwise
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the server is gone without closing anything."""
        self.proc.kill()
        self.proc.wait(5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop it (if running) and start the same server on the same port."""
        self.stop()
        fresh = _spawn(self.kind, self.argv, self.port, self.log_path, timeout, self.limits)
        self.proc, self.endpoint = fresh.proc, fresh.endpoint


def _argv(kind: str, port: int, doubles: int, period_ms: int, secure: str = "") -> list[str]:
    if kind == "asyncua":
        here = str(Path(__file__).resolve())
        return [
            sys.executable,
            here,
            str(port),
            str(doubles),
            str(period_ms),
            *([secure] if secure else []),
        ]
    if kind == "node":
        return ["node", str(NODE_DIR / "server.js"), str(port), str(doubles), str(period_ms)]
    if kind == "machine":
        return [
            sys.executable,
            "-m",
            "gateway",
            "sim",
            "--factory",
            "opcua",
            "--base-port",
            str(port),
        ]
    raise ValueError(f"unknown OPC UA server kind {kind!r}: asyncua, node or machine")


def start_server(
    kind: str = "asyncua",
    doubles: int = 10,
    period_ms: int = 100,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
    secure: str | Path = "",
    limits: tuple[int, int] = (0, 0),
) -> RunningServer:
    """Start a server and wait (at most ``timeout`` s) until it accepts connections.

    ``secure`` (asyncua only): a folder with ``server.der``/``server.pem`` (see
    :func:`make_certificates`); the server then offers only Basic256Sha256 and
    Aes128_Sha256_RsaOaep (Sign, SignAndEncrypt) and accepts anonymous users and
    ``SECURE_USER`` with ``SECURE_PASSWORD``, no other user. ``limits`` (asyncua only): the
    MaxNodesPerBrowse and MaxNodesPerRead its OperationLimits announce (0: none; asyncua does
    not enforce them, a client must honour them).

    Raises :class:`ServerUnavailable` for a node server that cannot run here, RuntimeError (with
    the server's log) when it does not come up. A free port is chosen unless ``port`` is given;
    if another process takes it meanwhile, a new one is tried (three times).
    """
    if kind == "node":
        why = node_missing()
        if why:
            raise ServerUnavailable(why)
    log_dir = Path(tempfile.mkdtemp(prefix=f"opcua-{kind}-"))
    tries = 1 if port is not None else 3
    for attempt in range(tries):
        p = port if port is not None else free_port()
        log_path = log_dir / f"server-{attempt}.log"
        try:
            argv = _argv(kind, p, doubles, period_ms, str(secure))
            return _spawn(kind, argv, p, log_path, timeout, limits)
        except RuntimeError:
            if attempt == tries - 1 or "in use" not in log_path.read_text(errors="replace"):
                raise
    raise AssertionError("unreachable")


def _spawn(
    kind: str,
    argv: list[str],
    port: int,
    log_path: Path,
    timeout: float,
    limits: tuple[int, int] = (0, 0),
) -> RunningServer:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPCUA_TEST_LIMITS=f"{limits[0]},{limits[1]}")
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes it for as long as it runs
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
    )
    log.close()
    server = RunningServer(kind, port, argv, proc, log_path, limits=limits)
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    if kind == "machine":  # logs to stderr; ready when the port answers
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    server.endpoint = endpoint
                    return server
            time.sleep(0.1)
    else:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        while time.monotonic() < deadline and proc.poll() is None:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if b"READY " in buf and b"\n" in buf.split(b"READY ", 1)[1]:
                sel.close()
                server.endpoint = buf.split(b"READY ", 1)[1].split(b"\n", 1)[0].decode().strip()
                return server
        sel.close()
    code = proc.poll()
    server.stop()
    state = f"exited with {code}" if code is not None else f"not ready after {timeout:g} s"
    raise RuntimeError(
        f"OPC UA {kind} server on port {port} {state} (waited for READY / the port); "
        f"log {log_path}:\n{server.log_tail()}"
    )


@contextlib.contextmanager
def opcua_server(kind: str = "asyncua", **kwargs: Any) -> Iterator[RunningServer]:
    """``with opcua_server("node", doubles=100) as srv: ... srv.endpoint``; stopped after."""
    server = start_server(kind, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def pytest_server(kind: str, **kwargs: Any) -> RunningServer:
    """start_server for a fixture: a node server that cannot run here skips the test (fails
    under CI=true, where .ci/run installs it)."""
    import pytest

    try:
        return start_server(kind, **kwargs)
    except ServerUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"node-opcua server unavailable in CI: {exc}")
        pytest.skip(str(exc))


SECURE_USER, SECURE_PASSWORD = "operator", "s3cret-for-tests"


def make_certificates(folder: Path) -> dict[str, Path]:
    """Self-signed application certificates (DER) and keys (PEM) for a server and a client,
    and a second server certificate (a wrong one to pin): ``{"server.der": path, ...}``."""
    import asyncio
    import socket as _socket

    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder.mkdir(parents=True, exist_ok=True)
    host = _socket.gethostname()
    uses = {
        "server": (ExtendedKeyUsageOID.SERVER_AUTH, "urn:gateway-tests:server"),
        "client": (ExtendedKeyUsageOID.CLIENT_AUTH, "urn:gateway-tests:client"),
        "other": (ExtendedKeyUsageOID.SERVER_AUTH, "urn:gateway-tests:other"),
    }

    async def make() -> None:
        for name, (use, uri) in uses.items():
            await setup_self_signed_certificate(
                folder / f"{name}.pem",
                folder / f"{name}.der",
                uri,
                host,
                [use],
                {"commonName": name},
            )

    asyncio.run(make())
    return {f"{n}.{ext}": folder / f"{n}.{ext}" for n in uses for ext in ("der", "pem")}


# -- the asyncua test server (this file as a script) ---------------------------------------


class _Users:
    """Anonymous and SECURE_USER/SECURE_PASSWORD; any other user name or password refused."""

    def get_user(
        self,
        iserver: object,
        username: str | None = None,
        password: str | None = None,
        certificate: object = None,
    ) -> object:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            return User(role=UserRole.User)
        if username == SECURE_USER and password == SECURE_PASSWORD:
            return User(role=UserRole.User, name=username)
        return None


async def serve_asyncua(port: int, doubles: int, period_ms: int, secure: str = "") -> None:
    import asyncio
    import datetime
    import math

    from asyncua import Server, ua

    from gateway.drivers.sim.opcua_machine import add_variable

    server = Server(user_manager=_Users() if secure else None)  # type: ignore[arg-type]
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    if secure:
        await server.load_certificate(str(Path(secure) / "server.der"))
        await server.load_private_key(str(Path(secure) / "server.pem"))
        P = ua.SecurityPolicyType
        server.set_security_policy([
            P.Basic256Sha256_Sign, P.Basic256Sha256_SignAndEncrypt,
            P.Aes128Sha256RsaOaep_Sign, P.Aes128Sha256RsaOaep_SignAndEncrypt,
        ])  # fmt: skip
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:gateway-tests:asyncua")
    plant = await server.nodes.objects.add_object(
        ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns)
    )
    folder = await plant.add_object(ua.NodeId("Plant.Doubles", ns), ua.QualifiedName("Doubles", ns))
    values = [
        await add_variable(server, folder, ns, f"Value{i}", 0.0, "Double", prefix="Plant.Doubles")
        for i in range(doubles)
    ]
    typed = await plant.add_object(ua.NodeId("Plant.Typed", ns), ua.QualifiedName("Typed", ns))

    async def add(name: str, value: object, vtype: str, **kw: object) -> object:
        return await add_variable(server, typed, ns, name, value, vtype, prefix="Plant.Typed", **kw)  # type: ignore[arg-type]

    nodes = {
        "Running": await add("Running", True, "Boolean", description="Machine running"),
        "Counter": await add("Counter", 0, "Int32", description="Signed counter"),
        "StatusWord": await add("StatusWord", 0x0101, "UInt16"),
        "EnergyWh": await add("EnergyWh", 123456, "Int64", description="Energy, 64-bit"),
        "Ratio": await add("Ratio", 0.5, "Float"),
        "Label": await add("Label", "batch-1", "String", description="Current batch, text"),
        "LastChange": await add("LastChange", datetime.datetime.now(datetime.timezone.utc), "DateTime"),
        "Temperature": await add(
            "Temperature", 20.0, "Double", description="Oven temperature",
            unit=("CEL", "°C", "degree Celsius"), eu_range=(-40.0, 200.0),
        ),
    }  # fmt: skip
    await add("Setpoint", 12.5, "Double", description="Writable setpoint", writable=True)
    await add("RawFrame", b"\x01\x02\x03", "ByteString", description="Opaque bytes")
    await add("Pressure", 6.0, "Float", unit=("BAR", "bar", "bar"), eu_range=(0.0, 16.0))
    await add("Interval", 250.0, "Double", description="Sampling interval, ms", datatype=290)
    await add("State", 0, "Int32", description="A state, as an enumeration", datatype=852)
    spectrum = await add("Spectrum", [1.0, 2.0, 3.0, 4.0], "Double")
    await spectrum.write_value_rank(1)  # type: ignore[attr-defined]
    browse_limit, read_limit = (
        int(x) for x in os.environ.get("OPCUA_TEST_LIMITS", "0,0").split(",")
    )
    for nid, limit in ((11710, browse_limit), (11705, read_limit)):
        if limit:
            await server.get_node(ua.NodeId(nid)).write_value(
                ua.Variant(limit, ua.VariantType.UInt32)
            )
    await server.start()
    sys.stdout.write(f"READY opc.tcp://127.0.0.1:{port}\n")
    sys.stdout.flush()
    ids = [v.nodeid for v in values]  # type: ignore[attr-defined]
    tick = 0
    try:
        while True:
            await asyncio.sleep(period_ms / 1000)
            tick += 1
            t = tick * period_ms / 1000
            for i, nid in enumerate(ids):  # the server's fast path: no per-write checks
                dv = ua.DataValue(
                    ua.Variant(1000.0 + 900.0 * math.sin(0.5 * t + i), ua.VariantType.Double)
                )
                await server.write_attribute_value(nid, dv)
            await nodes["Counter"].write_value(ua.Variant(tick, ua.VariantType.Int32))  # type: ignore[attr-defined]
            temp = 20.0 + 5.0 * math.sin(t)
            await nodes["Temperature"].write_value(ua.Variant(temp, ua.VariantType.Double))  # type: ignore[attr-defined]
    finally:
        await server.stop()


def main() -> None:
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    port, doubles, period_ms = (int(a) for a in sys.argv[1:4])
    secure = sys.argv[4] if len(sys.argv) > 4 else ""
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve_asyncua(port, doubles, period_ms, secure))


if __name__ == "__main__":
    main()
