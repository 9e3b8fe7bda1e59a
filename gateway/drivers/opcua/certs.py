"""The gateway's OPC UA application certificate and the server certificates it trusts.

``gateway keys opcua --data-dir DIR`` makes a self-signed application instance certificate
(``DIR/opcua/cert.der``) and its RSA key (``DIR/opcua/key.pem``, mode 0600, never replaced unless
``--force``). The certificate carries :data:`APPLICATION_URI` as its URI SubjectAltName (the
servers check it against the session's ApplicationUri) and this host's name; copy ``cert.der``
into the server's trusted-clients store.

The server's certificate is checked before the secure channel is opened: the endpoint's
certificate (from GetEndpoints) must be the pinned one, or one of the files of the trust
directory. Anything else is refused with both fingerprints named.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
from pathlib import Path

from gateway.config.opcua import CERT_FILE, CERT_SUBDIR, KEY_FILE

#: The ApplicationUri of the gateway's OPC UA client (and its certificate's URI SAN).
APPLICATION_URI = "urn:edge-gateway:opcua-client"
VALID_DAYS = 5 * 365


class CertificateError(Exception):
    """A certificate is missing, unreadable or not trusted; the message says which and why."""


def create(cert_dir: str | Path, *, force: bool = False, host: str | None = None) -> Path:
    """Write a new key and self-signed certificate into ``cert_dir``; return the certificate."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    d = Path(cert_dir)
    cert, key = d / CERT_FILE, d / KEY_FILE
    if not force and (cert.exists() or key.exists()):
        raise CertificateError(f"{d} already holds a certificate; --force replaces it")
    d.mkdir(parents=True, exist_ok=True)
    private = cert_gen.generate_private_key()
    host = host or socket.gethostname()
    names = [x509.UniformResourceIdentifier(APPLICATION_URI), x509.DNSName(host)]
    certificate = cert_gen.generate_self_signed_app_certificate(
        private, "edge-gateway", {}, names, [ExtendedKeyUsageOID.CLIENT_AUTH], days=VALID_DAYS
    )
    tmp = key.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(private))
    os.replace(tmp, key)
    cert.write_bytes(certificate.public_bytes(Encoding.DER))
    return cert


def der_of(data: bytes) -> bytes:
    """DER bytes of a certificate given as DER or PEM."""
    if data.lstrip().startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def fingerprint(der: bytes) -> str:
    """SHA-1 thumbprint as OPC UA tools show it (hex, colon separated)."""
    digest = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def trusted(pinned: str | None, trust_dir: str | None) -> list[bytes]:
    """DER of every certificate the config trusts (the pinned one, or the trust dir's files)."""
    paths = [Path(pinned)] if pinned else []
    if trust_dir:
        paths = sorted(p for p in Path(trust_dir).iterdir() if p.is_file())
    out = []
    for p in paths:
        try:
            out.append(der_of(p.read_bytes()))
        except (OSError, ValueError) as exc:
            raise CertificateError(f"cannot read trusted certificate {p}: {exc}") from None
    return out


def check_server(der: bytes, pinned: str | None, trust_dir: str | None) -> None:
    """Refuse a server certificate that is not the pinned one / not in the trust directory."""
    allowed = trusted(pinned, trust_dir)
    if der in allowed:
        return
    where = f"the pinned certificate {pinned}" if pinned else f"any certificate in {trust_dir}"
    known = ", ".join(fingerprint(a) for a in allowed) or "none"
    raise CertificateError(
        f"server certificate {fingerprint(der)} is not {where} (trusted: {known}); if the "
        "server's certificate really changed, replace the trusted file"
    )


def add_keys_parser(keys_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``gateway keys opcua --data-dir DIR [--force]``."""
    s = keys_sub.add_parser("opcua", help="create the gateway's OPC UA application certificate")
    s.add_argument("--data-dir", default="var", help="the gateway's data_dir (cert in DIR/opcua)")
    s.add_argument("--dir", default=None, help="certificate directory (default DATA_DIR/opcua)")
    s.add_argument("--force", action="store_true", help="replace an existing certificate")
    s.set_defaults(fn=cmd_keys_opcua)


def cmd_keys_opcua(args: argparse.Namespace) -> int:
    cert_dir = Path(args.dir or os.path.join(args.data_dir, CERT_SUBDIR))
    try:
        cert = create(cert_dir, force=args.force)
    except (CertificateError, OSError) as exc:
        print(f"gateway keys opcua: {exc}", file=sys.stderr)
        return 1
    der = cert.read_bytes()
    print(f"{cert}  SHA-1 {fingerprint(der)}  (key {cert_dir / KEY_FILE}, mode 0600)")
    print("copy the certificate into the OPC UA server's trusted client certificates")
    return 0
