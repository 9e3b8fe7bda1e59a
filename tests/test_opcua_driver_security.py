"""OPC UA security: every policy and mode connects; a wrong server certificate and wrong
credentials are refused with a message that says what to do; `gateway keys opcua` makes the
gateway's certificate (key mode 0600)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.drivers.opcua.certs import create
from tests.opcua_support import ServerProcess, device_config, run_until

USERS = {"operator": "s3cret"}


def server_cert(d: Path, name: str) -> tuple[Path, Path]:
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(f"urn:test:{name}"), x509.DNSName("127.0.0.1")]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, names, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    cpath, kpath = d / f"{name}.der", d / f"{name}.pem"
    cpath.write_bytes(cert.public_bytes(Encoding.DER))
    kpath.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cpath, kpath


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    cert, key = server_cert(d, "server")
    other, _ = server_cert(d, "impostor")
    create(d / "gw")
    (d / "pw").write_text("s3cret\n")
    (d / "badpw").write_text("guess\n")
    trust = d / "trusted"
    trust.mkdir()
    (trust / "server.der").write_bytes(cert.read_bytes())
    return {"cert": cert, "key": key, "other": other, "gw": d / "gw", "pw": d / "pw",
            "badpw": d / "badpw", "trust": trust}  # fmt: skip


@pytest.fixture(scope="module")
def server(pki: dict[str, Path]):
    srv = ServerProcess(n=5, period=0.2, security="secure", cert=str(pki["cert"]),
                        key=str(pki["key"]), users=USERS)  # fmt: skip
    with srv:
        yield srv


def secure_config(server, pki, policy, mode, **kw):
    opts = dict(security_policy=policy, security_mode=mode, certificate_dir=str(pki["gw"]),
                server_certificate=str(pki["cert"]), username="operator",
                password_file=str(pki["pw"]))  # fmt: skip
    opts.update(kw)
    return device_config(server.url, [("c0", "ns=2;s=C0")], **opts)


@pytest.mark.parametrize("policy", ["Basic256Sha256", "Aes128_Sha256_RsaOaep"])
@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
def test_each_policy_and_mode_connects(server, pki, policy: str, mode: str) -> None:
    cfg = secure_config(server, pki, policy, mode)
    col, dev = asyncio.run(run_until(cfg, lambda c, d: len(c.values(0)) >= 2, f"{policy}/{mode}"))
    assert dev.stats()["connect_failures"] == 0


def test_trust_dir_instead_of_a_pinned_certificate(server, pki) -> None:
    cfg = secure_config(server, pki, "Basic256Sha256", "SignAndEncrypt",
                        server_certificate=None, trust_dir=str(pki["trust"]))  # fmt: skip
    asyncio.run(run_until(cfg, lambda c, d: len(c.values(0)) >= 1, "a value via trust_dir"))


def test_wrong_server_certificate_is_refused(server, pki) -> None:
    cfg = secure_config(server, pki, "Basic256Sha256", "SignAndEncrypt",
                        server_certificate=str(pki["other"]))  # fmt: skip
    col, dev = asyncio.run(
        run_until(cfg, lambda c, d: d.stats()["connect_failures"] >= 1, "refusal")
    )
    (off,) = [e for e in col.events if e.kind == "offline"]
    assert "is not the pinned certificate" in off.detail and str(pki["other"]) in off.detail
    assert col.values(0) == []


def test_wrong_password_is_refused(server, pki) -> None:
    cfg = secure_config(server, pki, "Basic256Sha256", "Sign", password_file=str(pki["badpw"]))
    col, dev = asyncio.run(
        run_until(cfg, lambda c, d: d.stats()["connect_failures"] >= 1, "refusal")
    )
    (off,) = [e for e in col.events if e.kind == "offline"]
    assert "refused the credentials" in off.detail and "password_file" in off.detail


def test_anonymous_refused_where_the_server_wants_a_user(server, pki) -> None:
    cfg = secure_config(server, pki, "Basic256Sha256", "Sign", username=None, password_file=None)
    col, dev = asyncio.run(
        run_until(cfg, lambda c, d: d.stats()["connect_failures"] >= 1, "refusal")
    )
    assert col.values(0) == []


def test_missing_application_certificate_names_the_command(server, pki, tmp_path) -> None:
    cfg = secure_config(server, pki, "Basic256Sha256", "Sign", certificate_dir=str(tmp_path))
    col, dev = asyncio.run(
        run_until(cfg, lambda c, d: d.stats()["connect_failures"] >= 1, "refusal")
    )
    (off,) = [e for e in col.events if e.kind == "offline"]
    assert "gateway keys opcua" in off.detail


def test_gateway_keys_opcua_cli(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "gateway", "keys", "opcua", "--data-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cert, key = tmp_path / "opcua" / "cert.der", tmp_path / "opcua" / "key.pem"
    assert "SHA-1" in out.stdout and str(cert) in out.stdout
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    from cryptography import x509

    c = x509.load_der_x509_certificate(cert.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:edge-gateway:opcua-client" in san.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert socket.gethostname() in san.get_values_for_type(x509.DNSName)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert key.read_bytes()  # kept, not replaced
