"""The local HTTP listener: ``/metrics`` (Prometheus text), ``/status`` and ``/health`` (JSON),
and everything else handed to the REST API (:mod:`gateway.api`).

Standard library only (asyncio streams, ``ssl``): an aiohttp server costs 11 MB of RSS and an
ASGI server (uvicorn + h11) 2.7 MB before the first route, this one 0.06 MB (measured, see
docs/api.md). One request per connection (``Connection: close``), every read bounded in size and
time, so a slow or hostile client holds at most one of :attr:`Limits.connections` slots for at
most :attr:`Limits.head_timeout` + :attr:`Limits.body_timeout` seconds; a Server-Sent Events
stream is the only long-lived answer and its writes are bounded too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.core.guard import Faults
from gateway.jsonsafe import dumps

_log = logging.getLogger(__name__)
ROUTES = ("/metrics", "/status", "/health")

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the gateway."""

    head_bytes: int = 8192  # request line + headers
    headers: int = 40
    body_bytes: int = 64 * 1024
    head_timeout: float = 5.0  # the whole head must arrive within this (slowloris)
    body_timeout: float = 10.0
    write_timeout: float = 10.0  # a client that does not read is dropped
    connections: int = 32  # concurrent connections; beyond: 503 and close


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str  # client IP address
    tls: bool = False


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    ctype: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: A long-lived body (Server-Sent Events): chunks written as they come.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        """Strict JSON (NaN and infinities become null, see gateway.jsonsafe)."""
        return cls(status, dumps(doc).encode(), "application/json", headers or [])


class HttpError(Exception):
    """A request refused before it reached a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


App = Callable[[Request], Awaitable[Response]]


class StatusServer:
    """``/metrics``, ``/status``, ``/health``; other paths go to ``api`` when one is given."""

    def __init__(
        self,
        listen: str,
        metrics: Callable[[], str],
        status: Callable[[], dict[str, Any]],
        health: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
        api: App | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = (host or "127.0.0.1").strip("[]")
        self.port = int(port)
        self._metrics = metrics
        self._status = status
        self._health = health
        self._api = api
        self._ssl = ssl_context
        self.limits = limits or Limits()
        self._server: asyncio.Server | None = None
        self._open = 0
        self._tasks: set[asyncio.Task[Any]] = set()  # handlers, ended by stop() (streams)
        self.faults = Faults(_log)
        #: Connections refused because all slots were taken, and requests cut off by a limit.
        self.refused = {"busy": 0, "too_large": 0, "timeout": 0, "malformed": 0}

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=self.limits.head_bytes, ssl=self._ssl,
            ssl_handshake_timeout=self.limits.head_timeout if self._ssl else None,
        )  # fmt: skip
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5.0)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.limits.connections:
            self.refused["busy"] += 1
            try:
                await self._send(writer, self._error(503, "too many connections; retry later"))
            except (TimeoutError, ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()
            return
        self._open += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                req = await self._read(reader, writer)
            except HttpError as exc:
                kind = {408: "timeout", 413: "too_large", 431: "too_large"}.get(exc.status)
                self.refused[kind or "malformed"] += 1
                await self._send(writer, self._error(exc.status, str(exc)))
                return
            place = f"status server {req.path if req.path in ROUTES else 'other'}"  # bounded
            try:
                resp = await self._answer(req)
            except Exception as exc:  # a status bug must never take the gateway down
                self.faults.failed(place, exc)
                resp = Response(
                    500, f"{type(exc).__name__} (see the gateway log)\n".encode(), "text/plain"
                )
            else:
                self.faults.ok(place)
            await self._send(writer, resp)
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass  # the client left, was too slow, or the server stops (an open stream)
        except Exception as exc:  # a status bug must never take the gateway down
            self.faults.failed("status server", exc)
        finally:
            self._open -= 1
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request:
        lim = self.limits
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), lim.head_timeout)
        except TimeoutError:
            raise HttpError(
                408, f"request head not received within {lim.head_timeout:g}s"
            ) from None
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request head larger than {lim.head_bytes} bytes") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, "malformed request line")
        if len(lines) - 1 > lim.headers:
            raise HttpError(431, f"more than {lim.headers} header fields")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(400, "malformed header field")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HttpError(400, "Content-Length is negative")
        if length > lim.body_bytes:
            raise HttpError(413, f"body larger than {lim.body_bytes} bytes")
        body = b""
        if length:
            try:
                body = await asyncio.wait_for(reader.readexactly(length), lim.body_timeout)
            except TimeoutError:
                raise HttpError(408, f"body not received within {lim.body_timeout:g}s") from None
            except asyncio.IncompleteReadError:
                raise ConnectionResetError from None
        url = urlsplit(parts[1])
        try:
            query = dict(parse_qsl(url.query, keep_blank_values=True, max_num_fields=20))
        except ValueError:
            raise HttpError(400, "too many query parameters") from None
        peer = writer.get_extra_info("peername")
        return Request(
            parts[0], unquote(url.path), query, headers, body,
            peer[0] if isinstance(peer, tuple) else "", self._ssl is not None,
        )  # fmt: skip

    async def _answer(self, req: Request) -> Response:
        if req.path in ROUTES:
            if req.method != "GET":
                return Response(405, b"GET only\n", "text/plain", [("Allow", "GET")])
            # /metrics and /status are reads like the API's (loopback or a user); /health stays
            # open for load balancers and orchestrators: it says ok/degraded, not the plant.
            guard = getattr(self._api, "read_guard", None)
            if guard is not None and req.path != "/health":
                refused = await guard(req)
                if refused is not None:
                    return refused
            if req.path == "/metrics":
                return Response(200, self._metrics().encode(), "text/plain; version=0.0.4")
            if req.path == "/status":
                return Response.json(200, self._status())
            if self._health is not None:
                # 200 while the runtime is started, its loop turns and nothing is degraded;
                # 503 with the reasons otherwise (Docker HEALTHCHECK, load balancers, operators).
                ok, info = self._health()
                return Response.json(200 if ok else 503, info)
        if self._api is not None:
            from gateway import web  # the operator's page: static files, no plant data

            if req.method == "GET" and web.is_page(req.path):
                return web.serve(req.path)
            return await self._api(req)
        return Response(404, b"try /metrics, /status or /health\n", "text/plain")

    def _error(self, status: int, message: str) -> Response:
        return Response.json(status, {"error": message, "status": status})

    async def _send(self, writer: asyncio.StreamWriter, resp: Response) -> None:
        head = [
            f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}",
            f"Content-Type: {resp.ctype}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Connection: close",
            *(f"{k}: {v}" for k, v in resp.headers),
        ]
        if resp.stream is None:
            head.append(f"Content-Length: {len(resp.body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
        timeout = self.limits.write_timeout
        await asyncio.wait_for(writer.drain(), timeout)
        if resp.stream is not None:
            try:
                async for chunk in resp.stream:
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), timeout)
            finally:
                aclose = getattr(resp.stream, "aclose", None)
                if aclose is not None:
                    await aclose()
