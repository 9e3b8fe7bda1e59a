"""``gateway discover opcua`` against a secured asyncua server: each policy and mode connects,
a wrong user, a wrong pinned server certificate and an unsecured request are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from opcua_servers import (
    SECURE_PASSWORD,
    SECURE_USER,
    RunningServer,
    make_certificates,
    start_server,
)

pytest.importorskip("asyncua")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(certs: dict[str, Path]) -> Iterator[RunningServer]:
    srv = start_server("asyncua", doubles=3, period_ms=500, secure=certs["server.der"].parent)
    yield srv
    srv.stop()


def discover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "discover", "opcua", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def secured(server: RunningServer, certs: dict[str, Path], policy: str, mode: str) -> list[str]:
    return [
        server.endpoint, "--root", "ns=2;s=Plant.Typed",
        "--security-policy", policy, "--mode", mode,
        "--cert", str(certs["client.der"]), "--key", str(certs["client.pem"]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "mode"),
    [("Basic256Sha256", "SignAndEncrypt"), ("Aes128_Sha256_RsaOaep", "Sign")],
)
def test_secured_discovery_with_a_user(
    server: RunningServer, certs: dict[str, Path], tmp_path: Path, policy: str, mode: str
) -> None:
    password = tmp_path / "password"
    password.write_text(SECURE_PASSWORD + "\n", encoding="utf-8")
    r = discover(
        *secured(server, certs, policy, mode),
        "--server-cert", str(certs["server.der"]),
        "--username", SECURE_USER, "--password-file", str(password),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    device = yaml.safe_load(r.stdout)["devices"][0]
    assert device["opcua"] == {
        "endpoint": server.endpoint,
        "mode": "subscribe",
        "security_policy": policy,
        "security_mode": mode,
        "server_certificate": str(certs["server.der"]),
        "username": SECURE_USER,
        "password_file": str(password),
    }
    names = {p["name"] for p in device["points"]}
    assert {"temperature", "setpoint", "label"} <= names
    assert SECURE_PASSWORD not in r.stdout + r.stderr


def test_server_certificate_from_the_endpoints_when_not_pinned(
    server: RunningServer, certs: dict[str, Path]
) -> None:
    r = discover(*secured(server, certs, "Basic256Sha256", "Sign"))
    assert r.returncode == 0, r.stderr
    assert "server_certificate" not in yaml.safe_load(r.stdout)["devices"][0]["opcua"]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (
            ["--username", SECURE_USER, "--password-file", "{wrong}"],
            "BadUserAccessDenied (User does not have permission to perform the requested operation); "
            "check --username and --password-file",
        ),
        (["--server-cert", "{other}"], "presents another certificate than --server-cert"),
    ],
)
def test_refusals_are_one_line(
    server: RunningServer, certs: dict[str, Path], tmp_path: Path, extra: list[str], expect: str
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    extra = [a.format(wrong=wrong, other=certs["other.der"]) for a in extra]
    r = discover(*secured(server, certs, "Basic256Sha256", "SignAndEncrypt"), *extra)
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith("gateway discover: ") and r.stderr.count("\n") == 1, r.stderr
    assert expect in r.stderr and "Traceback" not in r.stderr


def test_unsecured_request_to_a_secured_server(server: RunningServer) -> None:
    r = discover(server.endpoint)
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith("gateway discover: ") and r.stderr.count("\n") == 1, r.stderr
    offered = (
        "offers no endpoint with --security-policy None --mode None; it offers (policy/mode): "
        "Aes128_Sha256_RsaOaep/Sign, Aes128_Sha256_RsaOaep/SignAndEncrypt, Basic256Sha256/Sign, "
        "Basic256Sha256/SignAndEncrypt"
    )
    assert offered in r.stderr
    assert "Traceback" not in r.stderr
