"""``gateway discover opcua URL``: browse a server's address space, write the ``devices:`` YAML.

Typing thousands of NodeIds by hand is what operators complain about most in every OPC UA
gateway; this writes the point list from what the server says about each variable: its
BrowseName path (the point name), NodeId, DataType (the point type), Description, and the
EngineeringUnits and EURange properties of analog items (unit, range), and AccessLevel (writable).

It is bounded however large the server: a depth limit, a node limit, a timeout on every request,
and batched services (one Browse for up to ``BATCH`` nodes, one Read for up to ``BATCH`` attribute
values, fewer where the server's OperationLimits say so), so a server with 10,000 variables takes a few dozen round trips, not 50,000. Every
failure is one line on stderr and exit code 2 (:class:`DiscoverError`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.drivers.opcua.discover_browse import (
    OBJECTS_FOLDER,
    Browsed,
    DiscoverError,
    _ua,
    browse_all,
    check_root,
    describe,
    parse_root,
    server_limits,
)
from gateway.drivers.opcua.discover_yaml import render

if TYPE_CHECKING:
    from asyncua import Client

log = logging.getLogger("gateway.discover")
SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")


def check_url(url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "opc.tcp" or not parts.hostname or port == -1:
        raise DiscoverError(
            f"{url!r} is not an OPC UA endpoint URL; expected opc.tcp://HOST[:PORT][/PATH], "
            "e.g. opc.tcp://192.168.1.20:4840"
        )


def _identifier(text: str) -> str:
    from gateway.drivers.opcua.discover_yaml import IDENTIFIER

    if not IDENTIFIER.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device name: a letter or '_', then letters, digits, '_'"
        )
    return text


def _read_password(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoverError(f"--password-file {path}: cannot read it: {exc}") from None


def check_options(args: argparse.Namespace) -> None:
    """Everything that can be wrong before connecting, said before a long browse, not after."""
    check_url(args.url)
    if args.depth < 0 or args.max_nodes < 1 or args.timeout <= 0:
        raise DiscoverError("--depth must be >= 0, --max-nodes >= 1 and --timeout > 0")
    if args.security_policy == "None" and args.mode != "None":
        raise DiscoverError(f"--mode {args.mode} needs a --security-policy other than None")
    if args.security_policy != "None":
        if args.mode == "None":
            raise DiscoverError(
                f"--security-policy {args.security_policy} needs --mode Sign or SignAndEncrypt"
            )
        if not args.cert or not args.key:
            raise DiscoverError(
                f"--security-policy {args.security_policy} needs --cert and --key: the client's "
                "application certificate (DER or PEM) and its private key (PEM)"
            )
    files = (("--cert", args.cert), ("--key", args.key), ("--server-cert", args.server_cert))
    for opt, path in files:
        if path and not Path(path).is_file():
            raise DiscoverError(f"{opt} {path}: no such file")
    if args.password_file:
        _read_password(args.password_file)
    if args.out:
        parent = Path(args.out).parent
        if not parent.is_dir():
            raise DiscoverError(f"--out {args.out}: cannot write it: no folder {parent}")


async def _application_uri(cert_path: str) -> str:
    """The URI in the client certificate's subjectAltName: servers check that the client's
    ApplicationUri is the one its certificate names."""
    from asyncua.crypto import uacrypto
    from cryptography import x509

    try:
        cert = await uacrypto.load_certificate(cert_path)
    except Exception as exc:
        raise DiscoverError(f"--cert {cert_path}: not a certificate (DER or PEM): {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return str(uris[0]) if uris else "urn:edge-gateway:discover"


async def _endpoints(args: argparse.Namespace) -> list[Any]:
    """The server's endpoint descriptions (GetEndpoints needs no security)."""
    from asyncua import Client

    return list(await Client(args.url, timeout=args.timeout).connect_and_get_server_endpoints())


def _no_endpoint(args: argparse.Namespace, endpoints: list[Any]) -> DiscoverError:
    offered = sorted(
        {f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints}
    )
    return DiscoverError(
        f"{args.url} offers no endpoint with --security-policy {args.security_policy} --mode "
        f"{args.mode}; it offers (policy/mode): {', '.join(offered) or 'none'}"
    )


def _fingerprint(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()[:16]


async def _check_pinned(args: argparse.Namespace) -> None:
    """Refuse, before any secret is sent, a server whose certificate is not the pinned one."""
    from asyncua.crypto import uacrypto
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        pinned = (await uacrypto.load_certificate(args.server_cert)).public_bytes(Encoding.DER)
    except Exception as exc:
        raise DiscoverError(f"--server-cert {args.server_cert}: not a certificate: {exc}") from None
    endpoints = await _endpoints(args)
    match = [
        ep
        for ep in endpoints
        if ep.SecurityPolicyUri.endswith("#" + args.security_policy)
        and ep.SecurityMode.name == args.mode
    ]
    if not match:
        raise _no_endpoint(args, endpoints)
    der = bytes(match[0].ServerCertificate or b"")
    presented = der[: int.from_bytes(der[2:4], "big") + 4] if len(der) > 4 else der
    if presented != pinned:
        raise DiscoverError(
            f"{args.url} presents another certificate than --server-cert {args.server_cert} "
            f"(SHA-256 {_fingerprint(presented)}..., pinned {_fingerprint(pinned)}...): "
            "not connecting; if the server's certificate was renewed, pin the new one"
        )


async def _secure(client: Client, args: argparse.Namespace) -> None:
    """Apply --security-policy/--mode/--cert/--key/--server-cert and the user identity."""
    from asyncua.crypto import security_policies as sp

    ua = _ua()
    if args.username:
        client.set_user(args.username)
        if args.password_file:
            client.set_password(_read_password(args.password_file))
    if args.security_policy == "None":
        return
    client.application_uri = await _application_uri(args.cert)
    if args.server_cert:
        await _check_pinned(args)
    policy: Any = {
        "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
        "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
    }[args.security_policy]
    try:
        await client.set_security(
            policy,
            args.cert,
            args.key,
            server_certificate=args.server_cert or None,
            mode=getattr(ua.MessageSecurityMode, args.mode),
        )
    except ValueError as exc:  # asyncua: no endpoint with this policy and mode, or a bad file
        raise DiscoverError(f"{args.url}: {exc}") from None


async def run(args: argparse.Namespace) -> tuple[str, Browsed]:
    """Connect, browse, read, render. Raises DiscoverError (or a stack error run() maps)."""
    from asyncua import Client

    from gateway.drivers.opcua.discover_yaml import Endpoint, assign_names
    from gateway.drivers.opcua.discover_yaml import snake as to_snake

    check_options(args)
    root = parse_root(args.root)
    client = Client(args.url, timeout=args.timeout)
    try:
        await _secure(client, args)
        await asyncio.wait_for(client.connect(), args.timeout * 2)
    except Exception as exc:
        if "No matching endpoints" not in str(exc):
            raise
        raise _no_endpoint(args, await _endpoints(args)) from None
    try:
        start = await check_root(client, root)
        root_name = start.display_name
        batch = await server_limits(client)
        browsed = await browse_all(client, start, args.depth, args.max_nodes, batch)
        variables = await describe(client, browsed.variables, batch)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), args.timeout)
        except Exception:  # the answer is in; a server that went away meanwhile is not news
            log.debug("disconnect failed", exc_info=True)
    prefix = assign_names(variables)
    device = args.name or to_snake(prefix[-1] if prefix else root_name) or "opcua_device"
    if not device[0].isalpha() and device[0] != "_":
        device = f"d_{device}"
    points = sum(1 for v in variables if not v.skip)
    command = ["gateway", "discover", "opcua", args.url, "--root", args.root]
    command += ["--depth", str(args.depth)] + (["--name", args.name] if args.name else [])
    header = [
        shlex.join(command),
        f"{points} point(s) from {len(variables)} variable(s) under {root_name} "
        f"({root.to_string()}); {browsed.nodes} node(s) browsed.",
    ]
    if browsed.truncated:
        header.append(f"Incomplete: {browsed.truncated}.")
    if browsed.left_out:
        header.append(
            "Left out, the server's own nodes (give one as --root to see it): "
            + ", ".join(browsed.left_out)
        )
    header += [
        "Skipped variables are commented out with the reason. Names come from the BrowseName",
        "path below the shared prefix; unit, range and description are the server's own.",
        "",
    ]
    endpoint = Endpoint(
        args.url,
        args.security_policy,
        args.mode,
        args.server_cert or "",
        args.username or "",
        args.password_file or "",
    )
    return render(device, endpoint, variables, header), browsed


def discover_main(args: argparse.Namespace) -> int:
    """Exit 0 with the YAML on stdout (or --out), 2 with one line on stderr."""
    if args.log_level != "debug":  # asyncua logs each failure at length; we say it once
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    try:
        check_options(args)  # before asyncua is imported: a typo costs no second
        text, browsed = asyncio.run(run(args))
    except DiscoverError as exc:
        return _fail(str(exc))
    except ImportError as exc:  # asyncua is the OPC UA stack; a gateway without OPC UA may lack it
        return _fail(f"the OPC UA stack is not installed ({exc}); pip install asyncua==2.1.0")
    except TimeoutError:
        return _fail(
            f"{args.url}: no answer within {args.timeout:g} s (--timeout); is the server up and the port right?"
        )
    except ConnectionRefusedError:
        return _fail(f"{args.url}: connection refused; is the server running and the port right?")
    except OSError as exc:
        return _fail(f"{args.url}: cannot connect: {exc.strerror or exc}")
    except Exception as exc:  # the stack's own errors: a status code, a closed connection...
        log.debug("discovery failed", exc_info=True)
        return _fail(f"{args.url}: {_error_text(exc)}")
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"--out {args.out}: cannot write it: {exc.strerror or exc}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    points = text.count("\n      - {")
    where = f" to {args.out}" if args.out else ""
    print(f"gateway discover: {points} point(s) written{where}", file=sys.stderr)
    if browsed.truncated:
        print(f"gateway discover: incomplete: {browsed.truncated}", file=sys.stderr)
    return 0


def _error_text(exc: Exception) -> str:
    from asyncua.ua.uaerrors import UaStatusCodeError

    if isinstance(exc, UaStatusCodeError):
        from asyncua.ua.status_codes import get_name_and_doc

        name, doc = get_name_and_doc(exc.code)
        hint = ""
        if name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            hint = "; check --username and --password-file"
        elif name in (
            "BadCertificateUntrusted",
            "BadSecurityChecksFailed",
            "BadCertificateInvalid",
        ):
            hint = "; the server must trust --cert (copy it into the server's trusted certificates)"
        return f"the server answered {name} ({doc.rstrip('.')}){hint}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fail(message: str) -> int:
    print(f"gateway discover: {message}", file=sys.stderr)
    return 2


def build_args(argv: list[str]) -> argparse.Namespace:
    """The parsed options of ``gateway discover opcua ARGV`` (for calling :func:`run` directly)."""
    parser = argparse.ArgumentParser(prog="gateway")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["discover", "opcua", *argv])
    args.log_level = "info"
    return args


def add_parser(sub: Any) -> None:
    """``gateway discover opcua URL ...`` (a protocol word first: others may follow)."""
    s = sub.add_parser("discover", help="browse a device and write the config for its points")
    psub = s.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    p = psub.add_parser(
        "opcua",
        help="browse an OPC UA server's address space, write the devices: YAML",
        description="Browse an OPC UA server and write a `devices:` section with one point per "
        "variable found (DataType, unit, EURange, description and writability from the server).",
    )
    p.add_argument("url", help="endpoint, opc.tcp://HOST:PORT[/PATH]")
    p.add_argument("--root", default=OBJECTS_FOLDER, metavar="NODE", help="NodeId to browse from")
    p.add_argument("--depth", type=int, default=10, metavar="N", help="levels below the root")
    p.add_argument("--max-nodes", type=int, default=20000, metavar="N", help="stop after N nodes")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds per request")
    p.add_argument(
        "--name",
        type=_identifier,
        metavar="DEVICE",
        help="device name (default: from the browse path)",
    )
    p.add_argument("--out", metavar="FILE", help="write the YAML here instead of stdout")
    p.add_argument("--security-policy", choices=SECURITY_POLICIES, default="None")
    p.add_argument("--mode", choices=SECURITY_MODES, default="None", help="message security mode")
    p.add_argument(
        "--cert", metavar="FILE", help="client application certificate (secured policies)"
    )
    p.add_argument("--key", metavar="FILE", help="its private key (PEM)")
    p.add_argument(
        "--server-cert",
        metavar="FILE",
        help="the server's certificate, pinned (default: taken from its endpoints)",
    )
    p.add_argument("--username", metavar="USER", help="user identity (default: anonymous)")
    p.add_argument("--password-file", metavar="FILE", help="file whose first line is the password")
    p.set_defaults(fn=discover_main)
