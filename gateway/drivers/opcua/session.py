"""The session of an OPC UA device: asyncua's Client for channel, security and identity.

asyncua's ``Client`` opens the secure channel (every policy and mode), creates and activates
the session and renews the channel's token; its own reconnect supervisor and publish loop are not
used: the device runs ours (:mod:`gateway.drivers.opcua.device`). One ``Client`` lives as long as
the device so that after a lost connection the same session can be re-activated on a new channel
(its subscriptions, and the notifications the server still holds, survive).

Raw services (CreateSubscription, CreateMonitoredItems, Publish, Read, Republish,
TransferSubscriptions) go through :func:`request`, which hands back the response body as bytes
(after chunk reassembly, signature check and decryption): Publish and Read bodies go to the
compiled decoder, the rare others to asyncua's ``struct_from_binary``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.ua.ua_binary import struct_from_binary

from gateway.config import DeviceConfig
from gateway.config.opcua import CERT_FILE, KEY_FILE, OpcuaConfig
from gateway.drivers.opcua.certs import APPLICATION_URI, CertificateError, check_server, der_of

_log = logging.getLogger(__name__)

_POLICIES: dict[str, Any] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
}
_MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


class Refused(Exception):
    """The server or the gateway refused the connection for a reason retrying will not fix
    soon (certificate, credentials, policy); the message says what to do."""


def read_password(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise Refused(f"cannot read password_file {path}: {exc.strerror}") from None


async def make_client(config: DeviceConfig) -> Client:
    """A Client set up for the device's endpoint, security and identity (not connected)."""
    opc = config.opcua
    assert opc is not None
    client = Client(opc.endpoint, timeout=config.timeout)
    client.application_uri = APPLICATION_URI
    client.name = client.description = f"edge-gateway {config.name}"
    client.session_timeout = int(opc.lifetime * 1000)
    if opc.username is not None and opc.password_file is not None:
        client.set_user(opc.username)
        client.set_password(read_password(opc.password_file))
    if opc.security_policy != "None":
        await _secure(client, opc)
    return client


async def _secure(client: Client, opc: OpcuaConfig) -> None:
    """Check the server's certificate against the pinned one / the trust dir, then set the
    channel's policy with it (asyncua would otherwise take whatever the endpoint offers)."""
    cert_dir = opc.certificate_dir or ""
    cert, key = os.path.join(cert_dir, CERT_FILE), os.path.join(cert_dir, KEY_FILE)
    for path in (cert, key):
        if not os.path.isfile(path):
            raise Refused(
                f"the gateway's application certificate {path} is missing; create it with "
                f"`gateway keys opcua --dir {cert_dir}` and trust cert.der on the server"
            )
    probe = Client(opc.endpoint, timeout=client.uaclient._timeout)
    try:
        endpoints = await probe.connect_and_get_server_endpoints()
    finally:
        probe.disconnect_socket()
    mode = _MODES[opc.security_mode]
    policy = _POLICIES[opc.security_policy]
    match = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
    if not match:
        offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}"
                          for e in endpoints})  # fmt: skip
        raise Refused(
            f"the server offers no endpoint with {opc.security_policy}/{opc.security_mode}; "
            f"it offers: {', '.join(offered)}"
        )
    der = der_of(bytes(match[0].ServerCertificate or b""))
    try:
        check_server(der, opc.server_certificate, opc.trust_dir)
    except CertificateError as exc:
        raise Refused(str(exc)) from None
    await client.set_security(policy, cert, key, server_certificate=der, mode=mode)


async def open_session(client: Client) -> bool:
    """Socket, channel and session. True when the client's previous session was re-activated
    (its subscriptions live on), False for a new session."""
    if client.uaclient.has_session:
        reused: bool = await client._try_reactivate_existing_session()
        return reused
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client._create_and_activate_session()
        client._start_renew_loop()
    except Exception:
        client.disconnect_socket()
        raise
    return False


async def close_transport(client: Client) -> None:
    """Drop the socket but keep the session (the server holds it for ``lifetime``)."""
    await client._teardown_transport_only()


async def close_session(client: Client) -> None:
    """End the session (and its subscriptions) and the channel: the device stops."""
    try:
        await client.uaclient.close_session(True)
    except Exception:  # already gone: nothing to end
        _log.debug("close_session failed", exc_info=True)
    await client._cancel_task(client._renew_channel_task)
    try:
        await client.close_secure_channel()
    except Exception:
        _log.debug("close_secure_channel failed", exc_info=True)
    client.disconnect_socket()


async def request(client: Client, req: Any, timeout: float | None = None) -> bytes:
    """Send a service request; the response body (type id onwards) as bytes."""
    data = await client.uaclient._send_request(req, timeout)
    return bytes(data)


async def call(client: Client, req: Any, response_type: type, timeout: float | None = None) -> Any:
    """Send a request and decode its response with asyncua; a Bad ServiceResult raises."""
    data = await client.uaclient._send_request(req, timeout)
    response: Any = struct_from_binary(response_type, data)
    response.ResponseHeader.ServiceResult.check()
    return response
