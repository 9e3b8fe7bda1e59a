"""The receiver's control socket: how ``gateway command`` on the cloud host reaches a receiver.

Each ``gateway cloud`` listens on a Unix socket ``<control dir>/<receiver name>.sock``. The
directory is the whole coordination between receivers: a client asks every socket in it which
receiver holds a gateway's session, and sends the command through that one. No shared state in
the store, so it works the same on SQLite and PostgreSQL, and a receiver that died leaves only a
socket nobody answers (skipped; replaced when a receiver of that name starts again).

Authentication: the socket is mode 0600 in a directory created 0700, and every connection's
peer credentials (``SO_PEERCRED``) must be the receiver's own user or root; anyone else is
closed without an answer. Receivers on other hosts need their own CLI on that host.

Protocol: one request, one answer per connection, each a 4-byte big-endian length and a msgpack
map (msgpack, because ``update_model`` carries the model file's bytes):

- ``{op: "gateway", gateway, known: bool}`` -> ``{receiver, known, session: {started,
  last_seen} | None, last_seen}`` (``known`` asks the store too only when the request says so:
  a client polling for an offline gateway must not load the store)
- ``{op: "command", gateway, kind, args, id, timeout}`` -> ``{receiver, id, outcome, detail}``
  or ``{receiver, id, error, detail}`` with ``error`` one of ``offline`` (no session here),
  ``timeout`` (no RESULT in time; the command is forgotten, not resent), ``limit``, ``stopped``,
  ``bad``
- ``{op: "status"}`` -> the receiver's status document (as ``/status`` serves it)
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from gateway.cloud.limits import LimitExceeded
from gateway.uplink import wire

if TYPE_CHECKING:
    from gateway.cloud.receiver import CloudReceiver

_log = logging.getLogger(__name__)

MAX_FRAME = wire.MAX_BODY_BYTES  # a CMD larger than this would not reach the gateway anyway
MAX_TIMEOUT = 3600.0
SUFFIX = ".sock"
#: Receiver names: a file name in the control directory.
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LEN = struct.Struct(">I")


class ControlError(RuntimeError):
    """The control socket cannot be set up (path, permissions, a live receiver of that name)."""


def default_name(endpoint: str) -> str:
    """A receiver name from its bound ROUTER endpoint: stable across restarts."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", endpoint.replace("tcp://", "")).strip("-.")
    return name[:64] or "receiver"


def pack(obj: dict[str, Any]) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def unpack(body: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a map, got {type(obj).__name__}")
    return obj


async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if size > MAX_FRAME:
        raise ValueError(f"request of {size} bytes exceeds {MAX_FRAME}")
    return unpack(await reader.readexactly(size))


class ControlServer:
    """Serves one receiver's control socket (see the module doc)."""

    def __init__(
        self, receiver: CloudReceiver, directory: str, name: str, status: Callable[[], Any]
    ) -> None:
        if not NAME_RE.fullmatch(name):
            raise ControlError(
                f"receiver name {name!r} must be 1 to 64 letters, digits or '_.-' (--name)"
            )
        self.receiver = receiver
        self.name = name
        self.path = os.path.join(directory, name + SUFFIX)
        self._status = status
        self._server: asyncio.Server | None = None
        self._uid = os.getuid()
        self.commands: dict[str, int] = {}  # outcome or error -> count (metrics)
        self.refused_peers = 0

    async def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.stat(directory)
        except OSError as exc:
            raise ControlError(f"control directory {directory}: {exc} (--control-dir)") from None
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise ControlError(
                f"control directory {directory} is writable by others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): anyone could replace the socket; chmod 700 it"
            )
        if len(os.fsencode(self.path)) > 107:
            raise ControlError(
                f"control socket path {self.path} is longer than the 107 bytes a Unix socket "
                "may have; choose a shorter --control-dir or --name"
            )
        self._clear_stale()
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, self.path, limit=MAX_FRAME + 16
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    def _clear_stale(self) -> None:
        if not os.path.lexists(self.path):
            return
        if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; remove it or use --name")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody answers: a receiver of this name died
            return
        finally:
            probe.close()
        raise ControlError(
            f"another receiver named {self.name!r} is running ({self.path}); give this one "
            "another --name"
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except (OSError, AttributeError):
            return False
        return uid in (self._uid, 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._peer_allowed(writer):
                self.refused_peers += 1
                _log.warning("cloud: control socket: refused a peer of another user")
                return
            try:
                req = await asyncio.wait_for(_read(reader), 30.0)
            except (ValueError, msgpack.UnpackException, TimeoutError) as exc:
                writer.write(pack({"error": "bad", "detail": f"unreadable request: {exc}"[:300]}))
                return
            answer = await self._answer(req, reader)
            writer.write(pack({"receiver": self.name, **answer}))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a control bug must never take the receiver down
            _log.exception("cloud: control request failed")
        finally:
            writer.close()

    async def _answer(self, req: dict[str, Any], reader: asyncio.StreamReader) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"status": self._status()}
        gateway = req.get("gateway")
        if not isinstance(gateway, str) or not wire.GATEWAY_ID_RE.fullmatch(gateway):
            return {"error": "bad", "detail": "gateway must be a gateway id"}
        if op == "gateway":
            return {
                "known": await self.receiver.knows(gateway) if req.get("known", True) else None,
                "session": self.receiver.session_of(gateway),
                "last_seen": self.receiver.last_seen(gateway),
            }
        if op == "command":
            return await self._command(gateway, req, reader)
        return {"error": "bad", "detail": f"unknown op {str(op)[:40]!r}"}

    async def _command(
        self, gateway: str, req: dict[str, Any], reader: asyncio.StreamReader
    ) -> dict[str, Any]:
        kind, args, cid, timeout = (req.get(k) for k in ("kind", "args", "id", "timeout"))
        if not (
            isinstance(kind, str)
            and isinstance(args, dict)
            and isinstance(cid, str)
            and 0 < len(cid) <= 128
            and isinstance(timeout, int | float)
            and 0 < timeout <= MAX_TIMEOUT
        ):
            return {"error": "bad", "detail": "command needs kind, args (map), id, timeout"}
        answer = await self._run(gateway, kind, args, cid, float(timeout), reader)
        key = str(answer.get("outcome") or answer.get("error"))
        self.commands[key] = self.commands.get(key, 0) + 1
        return {"id": cid, **answer}

    async def _run(
        self,
        gateway: str,
        kind: str,
        args: dict[str, Any],
        cid: str,
        timeout: float,
        reader: asyncio.StreamReader,
    ) -> dict[str, Any]:
        if self.receiver.session_of(gateway) is None:
            return {"error": "offline", "detail": f"{gateway} has no session on {self.name}"}
        rx = self.receiver
        task = asyncio.ensure_future(rx.command(gateway, kind, args, command_id=cid))
        gone = asyncio.ensure_future(reader.read(1))  # the client hung up (Ctrl-C): stop waiting
        try:
            await asyncio.wait({task, gone}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            rx.cancel_command(cid)
            return {
                "error": "timeout",
                "detail": f"no RESULT from {gateway} within {timeout:g}s",
            }
        try:
            result = task.result()
        except LimitExceeded as exc:
            return {"error": "limit", "detail": str(exc)}
        except (RuntimeError, asyncio.CancelledError) as exc:
            return {"error": "stopped", "detail": f"receiver {self.name}: {exc}"}
        return {"outcome": result.outcome, "detail": result.detail}


def receivers(directory: str) -> list[Path]:
    """The control sockets in ``directory`` (one per receiver), sorted."""
    try:
        return sorted(p for p in Path(directory).iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def ask(path: str | os.PathLike[str], request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to one receiver's control socket (blocking). Raises OSError if nobody
    answers there, ValueError on an unreadable answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(pack(request))
        head = _recv_exactly(sock, _LEN.size)
        (size,) = _LEN.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"answer of {size} bytes")
        return unpack(_recv_exactly(sock, size))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the receiver closed the control connection")
        buf += chunk
    return bytes(buf)
