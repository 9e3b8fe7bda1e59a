"""Who may do what on the API: every state-changing route refuses no token, a wrong token and
a read-only user (401/403), logs and counts the refusal and changes nothing; reads are open on
loopback only; logins, sessions, Basic, CSRF guards, TLS, and the limits on what a client may
send."""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from api_support import PASSWORD, Gw, basic, bearer, http
from test_api import ALARM_RULE, run, until

from gateway.api.routes import ROUTES
from gateway.core.httpd import Limits, Response, StatusServer

OPERATOR_ROUTES = [r for r in ROUTES if r.operator]
BODIES = {"/api/points/{name}/write": {"value": 7}, "/api/devices/{name}/poll": {"block": 0},
          "/api/config/validate": {"yaml": "gateway: {id: x}"}}  # fmt: skip
PARAMS = {"/api/points/{name}/write": "pump1.setpoint", "/api/devices/{name}/poll": "press1",
          "/api/alarms/{rule}/ack": "pressure_seen", "/api/rules/{name}/enable": "pressure_seen",
          "/api/rules/{name}/disable": "pressure_seen"}  # fmt: skip


def _path(template: str) -> str:
    value = PARAMS.get(template, "")
    return template.replace("{name}", value).replace("{rule}", value)


def _refusals(gw: Gw) -> dict[str, float]:
    m = gw.rt.metrics
    return {r: m.get("api_refusals_total", (("reason", r),))
            for r in ("unauthenticated", "bad_credentials", "forbidden", "cross_origin")}  # fmt: skip


def test_every_state_changing_route_refuses_anonymous_wrong_and_read_only_users(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(OPERATOR_ROUTES) >= 7
    caplog.set_level(logging.WARNING, "gateway.api")

    async def body(gw: Gw) -> None:
        await until(gw, "/api/alarms?state=active_unacked", lambda d: d, "the alarm")
        before_sp = gw.factory.values("pump1")["setpoint"]
        writes_before = len(gw.upstream("write"))
        cases = [
            ({}, 401, "unauthenticated"),
            (bearer("not-a-token"), 401, "bad_credentials"),
            (basic("op", "wrong password"), 401, "bad_credentials"),
            (bearer(gw.tokens["viewer"]), 403, "forbidden"),
            (basic("viewer", PASSWORD), 403, "forbidden"),
        ]
        for headers, code, reason in cases:
            for route in OPERATOR_ROUTES:
                counted = _refusals(gw)[reason]
                path = _path(route.name)
                answer = await gw.post(path, BODIES.get(route.name), user=None, headers=headers)
                assert answer.status == code, (route.name, headers, answer.body)
                assert answer.json()["status"] == code
                if code == 401:
                    assert answer.headers["www-authenticate"] == "Bearer"
                assert _refusals(gw)[reason] == counted + 1, (route.name, reason)
                logged = [r.getMessage() for r in caplog.records]
                assert any(f"refused POST {path} " in m and m.endswith(reason) for m in logged)
        # nothing changed: no write, the alarm unacknowledged, every rule still enabled
        assert gw.factory.values("pump1")["setpoint"] == before_sp
        assert len(gw.upstream("write")) == writes_before
        alarms = (await gw.get("/api/alarms")).json()
        assert next(a for a in alarms if a["rule"] == "pressure_seen")["acked"] is False
        assert all(r["enabled"] for r in (await gw.get("/api/rules")).json())
        assert gw.rt.metrics.get("rule_reloads_total", (("outcome", "applied"),)) == 0
        viewer_names = [m for m in (r.getMessage() for r in caplog.records) if "(user viewer)" in m]
        assert len(viewer_names) == 2 * len(OPERATOR_ROUTES)
        # the same credentials may read
        assert (await gw.get("/api/rules", headers=bearer(gw.tokens["viewer"]))).status == 200

    run(tmp_path, body, extra_rules=[ALARM_RULE])


def test_login_session_basic_logout_and_browser_guards(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        wrong = await gw.post("/api/login", {"user": "op", "password": "nope"}, user=None)
        assert wrong.status == 401
        for _ in range(4):  # five wrong passwords in a minute lock the name for a while
            await gw.post("/api/login", {"user": "viewer", "password": "nope"}, user=None)
        locked = await gw.post("/api/login", {"user": "viewer", "password": "nope"}, user=None)
        assert locked.status == 401
        right = await gw.post("/api/login", {"user": "viewer", "password": PASSWORD}, user=None)
        assert right.status == 429 and int(right.headers["retry-after"]) > 0
        assert (await gw.get("/api/whoami", headers=basic("viewer", PASSWORD))).status == 401
        login = await gw.post("/api/login", {"user": "op", "password": PASSWORD}, user=None)
        assert login.status == 200 and login.json()["role"] == "operator"
        assert "set-cookie" not in login.headers  # never a cookie: nothing for CSRF to ride on
        token = login.json()["token"]
        who = (await gw.get("/api/whoami", headers=bearer(token))).json()
        assert who == {"user": "op", "role": "operator", "via": "session"}
        ok = await gw.post("/api/rules/pressure_seen/disable", {}, user=None,
                           headers=bearer(token))  # fmt: skip
        assert ok.status == 200
        by_basic = await gw.post("/api/rules/pressure_seen/enable", {}, user=None,
                                 headers=basic("op", PASSWORD))  # fmt: skip
        assert by_basic.status == 200
        port = gw.port
        evil = await gw.post("/api/rules/reload", headers={"Origin": "http://evil.example"})
        assert evil.status == 403 and gw.rt.metrics.get(
            "api_refusals_total", (("reason", "cross_origin"),)) == 1  # fmt: skip
        same = await gw.post("/api/rules/reload", headers={"Origin": f"http://127.0.0.1:{port}"})
        assert same.status == 200
        form = await gw.post("/api/points/pump1.setpoint/write", raw=b"value=1",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert form.status == 415
        assert (await gw.post("/api/logout", user=None, headers=bearer(token))).status == 200
        after = await gw.post("/api/rules/reload", user=None, headers=bearer(token))
        assert after.status == 401
        rebound = await gw.get("/api/points", headers={"Host": "evil.example:9108"})
        assert rebound.status == 403 and "Host" in rebound.json()["error"]
        assert (await gw.get("/metrics", headers={"Host": "evil.example"})).status == 403
        assert (await gw.get("/api/points", headers={"Host": f"localhost:{port}"})).status == 200
        assert (await gw.get("/api/points", headers={"Host": "[::1]:1"})).status == 200
        named = await gw.get("/api/points", headers={"Host": "evil.example",
                                                       **bearer(gw.tokens["viewer"])})  # fmt: skip
        assert named.status == 200  # a user's token is not something a rebinding page has
        sse = await http(port, "GET", f"/api/events?access_token={token}&interval_ms=200x")
        assert sse.status == 401  # a logged-out token, even in the query

    run(tmp_path, body, extra_rules=[ALARM_RULE])


def _outward_address() -> str | None:
    """This host's address on its default route, if it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_reads_from_another_address_need_a_user(tmp_path: Path) -> None:
    addr = _outward_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address")

    async def body(gw: Gw) -> None:
        far = await http(gw.port, "GET", "/api/points", host=addr)
        assert far.status == 401
        assert (await http(gw.port, "GET", "/api/points", host=addr,
                           headers=bearer(gw.tokens["viewer"]))).status == 200  # fmt: skip
        assert (await gw.get("/api/points")).status == 200  # loopback
        assert (await http(gw.port, "GET", "/metrics", host=addr)).status == 401
        assert (await http(gw.port, "GET", "/status", host=addr)).status == 401
        assert (await http(gw.port, "GET", "/status", host=addr,
                           headers=bearer(gw.tokens["viewer"]))).status == 200  # fmt: skip
        assert (await http(gw.port, "GET", "/health", host=addr)).status in (200, 503)
        assert (await gw.get("/metrics")).status == 200
        login = await http(gw.port, "POST", "/api/login", {"user": "viewer", "password": PASSWORD},
                           host=addr)  # fmt: skip
        assert login.status == 200  # a tablet on the network logs in, then reads with it
        session = bearer(login.json()["token"])
        assert (await http(gw.port, "GET", "/api/alarms", host=addr, headers=session)).status == 200

    run(tmp_path, body, metrics_listen="0.0.0.0:0")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "api.crt", tmp_path / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_tls_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    async def body(gw: Gw) -> None:
        ctx = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=ctx,
                                                       server_hostname="localhost")  # fmt: skip
        writer.write(b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 OK")
        plain = await _raw(gw.port, b"GET /api/whoami HTTP/1.1\r\n\r\n")  # no TLS: no answer
        assert not plain.startswith(b"HTTP/1.1 200")

    run(tmp_path, body, tls_cert=str(cert), tls_key=str(key))


async def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def test_limits_on_head_headers_body_slow_clients_and_connections() -> None:
    async def app(req: Any) -> Response:
        if req.path == "/hold":
            await asyncio.sleep(30)
        return Response.json(200, {"n": len(req.body)})

    async def main() -> None:
        lim = Limits(head_timeout=0.5, body_timeout=0.5, connections=3)
        srv = StatusServer("127.0.0.1:0", str, dict, None, app, limits=lim)
        await srv.start()
        port = srv.port
        try:
            big = b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"
            assert (await _raw(port, big)).startswith(b"HTTP/1.1 431")
            many = b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(41)) + b"\r\n"
            assert (await _raw(port, many)).startswith(b"HTTP/1.1 431")
            huge = b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
            assert (await _raw(port, huge)).startswith(b"HTTP/1.1 413")
            chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            assert (await _raw(port, chunked)).startswith(b"HTTP/1.1 411")
            slow = await _raw(port, b"GET / HTTP/1.1\r\nX: 1\r\n", timeout=5)  # never finishes
            assert slow.startswith(b"HTTP/1.1 408")
            short_body = await _raw(port, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", 5)
            assert short_body.startswith(b"HTTP/1.1 408")
            assert (await _raw(port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
            ok = await _raw(port, b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b'{"n": 2}')
            held = [asyncio.create_task(_raw(port, b"GET /hold HTTP/1.1\r\n\r\n", 30))
                    for _ in range(3)]  # fmt: skip
            await asyncio.sleep(0.3)
            assert (await _raw(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 503")
            assert srv.refused == {"busy": 1, "too_large": 3, "timeout": 2, "malformed": 2}
        finally:
            await srv.stop()
        for t in held:
            t.cancel()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_json_bodies_are_strict_and_shallow(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        deep = b'{"value": ' + b"[" * 50 + b"1" + b"]" * 50 + b"}"
        answer = await gw.post("/api/points/pump1.setpoint/write", raw=deep)
        assert answer.status == 400 and "deeper" in answer.json()["error"]
        for raw in (b'{"value": Infinity}', b"[1]", b"\xff\xfe", b'{"value": 1'):
            assert (await gw.post("/api/points/pump1.setpoint/write", raw=raw)).status == 400

    run(tmp_path, body)


def test_users_file_holds_hashes_only_and_is_private(tmp_path: Path) -> None:
    from api_support import add_users

    tokens = add_users(tmp_path)
    text = (tmp_path / "users.json").read_text()
    assert tokens["op"] not in text and PASSWORD not in text
    assert base64.b64encode(PASSWORD.encode()).decode() not in text
    assert stat.S_IMODE(os.stat(tmp_path / "users.json").st_mode) == 0o600


def test_tls_files_that_cannot_be_loaded_stop_the_start_with_the_reason(tmp_path: Path) -> None:
    from test_supervisor import CONFIG

    from gateway.config import load_config_text
    from gateway.core.runtime import Runtime, RuntimeStartError

    base = CONFIG.format(data=tmp_path, port=9)
    (tmp_path / "bad.pem").write_text("not a certificate")
    cases = {
        "tls_cert: {d}/bad.pem, tls_key: {d}/bad.pem": "cannot be loaded",
        "tls_cert: {d}/bad.pem": "go together",
    }
    for extra, message in cases.items():
        text = base.replace(
            "stall_periods: 2}", "stall_periods: 2, " + extra.format(d=tmp_path) + "}"
        )
        with pytest.raises(RuntimeStartError, match=message):
            Runtime(load_config_text(text))


def test_a_broken_users_file_refuses_credentials_with_503_and_stays_closed(tmp_path: Path) -> None:
    async def body(gw: Gw) -> None:
        users = Path(gw.rt.config.data_dir) / "users.json"
        users.write_text("{broken")
        answer = await gw.post("/api/rules/reload")
        assert answer.status == 503 and "users file" in answer.json()["error"]
        assert (await gw.post("/api/rules/reload", user=None)).status == 401
        assert gw.rt.metrics.get("rule_reloads_total", (("outcome", "applied"),)) == 0

    run(tmp_path, body)
