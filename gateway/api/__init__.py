"""The REST API on the status listener: routes, OpenAPI, auth (see docs/api.md)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from gateway.api.app import Api, is_loopback
from gateway.core.httpd import StatusServer

if TYPE_CHECKING:
    from gateway.core.runtime import Runtime


class ApiConfigError(ValueError):
    """The listener cannot start as configured (the message says what to change)."""


def build_server(rt: Runtime) -> StatusServer | None:
    """The status listener with the API for ``rt``, or None when ``metrics_listen`` is off.

    Refuses a non-loopback address while no API user exists: such a listener would let anyone
    on the network read the plant, and nobody could act on it.
    """
    from gateway.api.routes import ROUTES

    cfg = rt.config
    if not cfg.metrics_listen:
        return None
    api = Api(rt, ROUTES, open_read=cfg.api_open_read)
    host = cfg.metrics_listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if not _loopback_host(host) and not api.auth.configured():
        raise ApiConfigError(
            f"gateway.metrics_listen {cfg.metrics_listen} is not a loopback address and no API "
            f"user exists in {api.auth.file.path}: create one with `gateway users add "
            f"{cfg.source or 'CONFIG'} NAME --role operator`, or listen on 127.0.0.1"
        )
    context = None
    if cfg.tls_cert or cfg.tls_key:
        if not (cfg.tls_cert and cfg.tls_key):
            raise ApiConfigError("gateway.tls_cert and gateway.tls_key go together; give both")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ApiConfigError(
                f"gateway.tls_cert/tls_key ({cfg.tls_cert}, {cfg.tls_key}): cannot be loaded: {exc}"
            ) from None
    return StatusServer(cfg.metrics_listen, rt.render_metrics, rt.status, rt.health, api,
                        context)  # fmt: skip


def _loopback_host(host: str) -> bool:
    return host == "localhost" or is_loopback(host)
