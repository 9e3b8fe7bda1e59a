"""A minimal local HTTP endpoint: ``/metrics`` (Prometheus text), ``/status`` and ``/health`` (JSON).

Deliberately tiny (GET only, one request per connection): it serves scrapers and the demo on
loopback, so it must not pull a web framework into a process that should fit in 60 MB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway.core.guard import Faults
from gateway.jsonsafe import dumps

_log = logging.getLogger(__name__)
ROUTES = ("/metrics", "/status", "/health")


class StatusServer:
    def __init__(
        self,
        listen: str,
        metrics: Callable[[], str],
        status: Callable[[], dict[str, Any]],
        health: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self._metrics = metrics
        self._status = status
        self._health = health
        self._server: asyncio.Server | None = None
        self.faults = Faults(_log)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            place = f"status server {path if path in ROUTES else 'other'}"  # bounded labels
            try:
                code, ctype, body = self._answer(parts[0], path)
            except Exception as exc:  # a status bug must never take the gateway down
                self.faults.failed(place, exc)
                code, ctype = "500 Internal Server Error", "text/plain"
                body = f"{type(exc).__name__} (see the gateway log)\n".encode()
            else:
                self.faults.ok(place)
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):  # fmt: skip
            pass
        except Exception as exc:  # a status bug must never take the gateway down
            self.faults.failed("status server", exc)
        finally:
            writer.close()

    def _answer(self, method: bytes, path: str) -> tuple[str, str, bytes]:
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4", self._metrics().encode()
        if path == "/status":
            return "200 OK", "application/json", dumps(self._status()).encode()
        if path == "/health" and self._health is not None:
            # 200 while the runtime is started, its loop turns and nothing is degraded;
            # 503 with the reasons otherwise (Docker HEALTHCHECK, load balancers, operators).
            ok, info = self._health()
            code = "200 OK" if ok else "503 Service Unavailable"
            return code, "application/json", dumps(info).encode()
        return "404 Not Found", "text/plain", b"try /metrics, /status or /health\n"
