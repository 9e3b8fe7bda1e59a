"""The REST API's front door: routing, who may do what, limits on bodies, strict JSON errors.

Reading is open without a login from loopback only (``gateway.api_open_read`` opens it to every
address); everything that changes state needs an ``operator``. A refusal is answered 401 (no or
wrong credentials) or 403 (a ``read`` user, or a browser request from another origin), logged
with the user and the address, and counted in ``gateway_api_refusals_total{reason}``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.api.auth import Authenticator, User, UsersError
from gateway.core.httpd import Request, Response

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime

_log = logging.getLogger("gateway.api")
MAX_JSON_DEPTH = 8

Handler = Callable[["Call"], Awaitable[Response]]


class ApiError(Exception):
    """Answered as ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: the request, the path parameters, the user."""

    rt: Runtime
    req: Request
    params: dict[str, str]
    user: User | None
    api: Api

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (strict: no NaN; at most MAX_JSON_DEPTH deep), or {}."""
        if not self.req.body:
            return {}
        ctype = self.req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "send the body as Content-Type: application/json")
        try:
            doc = json.loads(self.req.body, parse_constant=_no_constant)
        except RecursionError:
            raise ApiError(400, f"body nested deeper than {MAX_JSON_DEPTH}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"body is not JSON: {str(exc)[:120]}") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "body must be a JSON object")
        if _depth(doc) > MAX_JSON_DEPTH:
            raise ApiError(400, f"body nested deeper than {MAX_JSON_DEPTH}")
        return doc

    @property
    def by(self) -> str:
        return self.user.name if self.user is not None else "anonymous"


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _depth(doc: object, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(doc, dict):
        return max((_depth(v, level + 1) for v in doc.values()), default=level)
    if isinstance(doc, list):
        return max((_depth(v, level + 1) for v in doc), default=level)
    return level


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # the OpenAPI path, also the metrics label (bounded)
    handler: Handler
    operator: bool  # changes state: needs an operator
    public: bool = False  # no login needed from anywhere (login itself, the page's assets)


def is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


class Api:
    """The routes of :mod:`gateway.api.routes` behind authentication and authorization."""

    def __init__(self, rt: Runtime, routes: list[Route], open_read: bool = False) -> None:
        self.rt = rt
        self.routes = routes
        self.open_read = open_read
        self.auth = Authenticator(rt.config.data_dir)

    async def __call__(self, req: Request) -> Response:
        t0 = time.perf_counter()
        route, params, allowed = self._match(req)
        name = route.name if route is not None else "other"
        try:
            if route is None:
                if allowed:
                    raise ApiError(405, f"{req.path} takes {', '.join(allowed)}",
                                   [("Allow", ", ".join(allowed))])  # fmt: skip
                raise ApiError(404, f"no route {req.path}; the routes are in /api/openapi.json")
            user = await self._authorize(req, route)
            resp = await route.handler(Call(self.rt, req, params, user, self))
        except ApiError as exc:
            resp = Response.json(exc.status, {"error": str(exc), "status": exc.status},
                                 exc.headers)  # fmt: skip
        m = self.rt.metrics
        m.inc("api_requests_total", labels=(("route", name), ("code", str(resp.status))))
        m.observe("api_request_duration_seconds", time.perf_counter() - t0)
        return resp

    async def read_guard(self, req: Request) -> Response | None:
        """For ``/metrics`` and ``/status``: None when ``req`` may read, else the refusal."""
        try:
            await self._authorize(req, _READ_ROUTE)
        except ApiError as exc:
            return Response.json(exc.status, {"error": str(exc), "status": exc.status},
                                 exc.headers)  # fmt: skip
        return None

    def _match(self, req: Request) -> tuple[Route | None, dict[str, str], list[str]]:
        allowed = []
        for r in self.routes:
            m = r.pattern.fullmatch(req.path)
            if m is None:
                continue
            if r.method == req.method:
                return r, m.groupdict(), []
            allowed.append(r.method)
        return None, {}, allowed

    async def _authorize(self, req: Request, route: Route) -> User | None:
        if route.public:
            return None
        header = req.headers.get("authorization", "")
        if not header and req.path == "/api/events" and "access_token" in req.query:
            header = f"Bearer {req.query['access_token']}"  # EventSource cannot send headers
        user: User | None = None
        if header:
            try:
                user = await self.auth.identify(header)
            except UsersError as exc:
                _log.error("api: %s", exc)
                raise ApiError(503, "the users file is unreadable; see the gateway log") from None
            if user is None:
                self.refuse(req, route, "bad_credentials", None)
                raise ApiError(401, "wrong credentials", [("WWW-Authenticate", "Bearer")])
        if route.operator:
            if user is None:
                self.refuse(req, route, "unauthenticated", None)
                raise ApiError(401, f"{route.method} {route.name} needs an operator's token "
                               "(see docs/api.md)", [("WWW-Authenticate", "Bearer")])  # fmt: skip
            if not user.operator:
                self.refuse(req, route, "forbidden", user)
                raise ApiError(403, f"user {user.name} has role {user.role}; "
                               f"{route.method} {route.name} needs role operator")  # fmt: skip
            origin = req.headers.get("origin")
            if origin is not None and not _same_origin(origin, req):
                self.refuse(req, route, "cross_origin", user)
                raise ApiError(403, f"cross-origin request from {origin[:80]!r} refused")
            return user
        if user is None and not (self.open_read or is_loopback(req.peer)):
            self.refuse(req, route, "unauthenticated", None)
            raise ApiError(401, "reading from another host needs a token (see docs/api.md)",
                           [("WWW-Authenticate", "Bearer")])  # fmt: skip
        if user is None and not _plain_host(req.headers.get("host", "")):
            # DNS rebinding: a web page on evil.example whose name resolves to 127.0.0.1 would
            # read the plant through the visitor's browser; its requests carry its own name.
            self.refuse(req, route, "foreign_host", None)
            raise ApiError(403, "anonymous reads need Host: an IP address, localhost or this "
                           "host's name; use a token otherwise")  # fmt: skip
        return user

    def refuse(self, req: Request, route: Route, reason: str, user: User | None) -> None:
        who = user.name if user is not None else "-"
        _log.warning("api: refused %s %s from %s (user %s): %s", req.method, req.path[:200],
                     req.peer, who, reason)  # fmt: skip
        self.rt.metrics.inc("api_refusals_total", labels=(("reason", reason),))


async def _no_handler(call: Call) -> Response:
    raise ApiError(500, "not a route")


_READ_ROUTE = Route("GET", re.compile(r"/(metrics|status)"), "/metrics", _no_handler, False)


def _plain_host(host: str) -> bool:
    """An IP literal, ``localhost`` or this machine's own name (with or without a port), or
    none (HTTP/1.0 tools; browsers always send one)."""
    if not host:
        return True
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    if name in ("localhost", socket.gethostname().lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _same_origin(origin: str, req: Request) -> bool:
    scheme = "https" if req.tls else "http"
    return origin == f"{scheme}://{req.headers.get('host', '')}"
