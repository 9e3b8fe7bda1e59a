"""A minimal local HTTP endpoint: ``/metrics`` (Prometheus text), ``/status`` and ``/health`` (JSON).

Deliberately tiny (GET only, one request per connection): it serves scrapers and the demo on
loopback, so it must not pull a web framework into a process that should fit in 60 MB.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)


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
            if parts[0] != b"GET":
                code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                code, ctype = "200 OK", "text/plain; version=0.0.4"
                body = self._metrics().encode()
            elif path == "/status":
                code, ctype = "200 OK", "application/json"
                body = json.dumps(self._status(), default=str).encode()
            elif path == "/health" and self._health is not None:
                # 200 only while the runtime is started and its loop turns (Docker HEALTHCHECK).
                ok, info = self._health()
                code = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(info).encode()
            else:
                code, ctype = "404 Not Found", "text/plain"
                body = b"try /metrics, /status or /health\n"
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:  # a status bug must never take the gateway down
            _log.exception("status request failed")
        finally:
            writer.close()
