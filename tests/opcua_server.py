"""An asyncua.Server for the driver tests, run as a child process (``python -m tests.opcua_server
JSON``), so it can be SIGKILLed, SIGSTOPped and restarted.

Counters ``ns=2;s=C<i>`` (Double) all take the tick number every ``period`` seconds, starting at
``base``: a client that got every change sees each counter go up by one each time. Beside them,
one variable per scalar type (``ns=2;s=T.<Type>``), a String, a Double array, a writable Int16
(``ns=2;s=W.Int16``), a writable Boolean and a read-only Double (``ns=2;s=RO``). Prints ``READY``
once listening. Options (JSON): port, n, period, base, security ("none" | "secure"), cert,
key, users ({name: password}; anonymous refused when given), events (a BaseEvent "tick N"
from the Server object every fifth tick).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

TYPED = [
    ("Boolean", ua.VariantType.Boolean, True),
    ("Int16", ua.VariantType.Int16, -1234),
    ("UInt16", ua.VariantType.UInt16, 65000),
    ("Int32", ua.VariantType.Int32, -123456),
    ("UInt32", ua.VariantType.UInt32, 4000000000),
    ("Int64", ua.VariantType.Int64, -(2**40)),
    ("UInt64", ua.VariantType.UInt64, 2**50),
    ("Float", ua.VariantType.Float, 1.5),
    ("Double", ua.VariantType.Double, 2.25),
    ("DateTime", ua.VariantType.DateTime, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("StatusCode", ua.VariantType.StatusCode, ua.StatusCode(0x80340000)),
    ("String", ua.VariantType.String, "lot-42"),
]


class Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


async def add_counters(server: Server, parent: ua.NodeId, n: int) -> list[ua.NodeId]:
    """``n`` Double variables in one AddNodes call (one add_variable each takes seconds)."""
    items = []
    for i in range(n):
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = ua.NodeId(f"C{i}", 2)
        item.BrowseName = ua.QualifiedName(f"C{i}", 2)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(f"C{i}")
        attrs.DataType = ua.NodeId(ua.ObjectIds.Double)
        attrs.Value = ua.Variant(0.0, ua.VariantType.Double)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        item.NodeAttributes = attrs
        items.append(item)
    results = await server.iserver.isession.add_nodes(items)
    assert all(r.StatusCode.is_good() for r in results), results[:3]
    return [r.AddedNodeId for r in results]


async def main(opts: dict[str, Any]) -> None:
    users = opts.get("users")
    server = Server(user_manager=Users(users) if users else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{opts['port']}/gw/")
    if opts.get("security") == "secure":
        server.set_security_policy([
            ua.SecurityPolicyType.NoSecurity,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
        ])  # fmt: skip
        await server.load_certificate(opts["cert"])
        await server.load_private_key(opts["key"])
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    idx = await server.register_namespace("urn:gateway:test")
    assert idx == 2
    objects = server.nodes.objects
    counters = await add_counters(server, objects.nodeid, int(opts.get("n", 0)))
    for name, vt, value in TYPED:
        await objects.add_variable(ua.NodeId(f"T.{name}", 2), name, ua.Variant(value, vt))
    await objects.add_variable(
        ua.NodeId("T.Array", 2), "Array", ua.Variant([1.0, 2.0], ua.VariantType.Double)
    )
    w = await objects.add_variable(
        ua.NodeId("W.Int16", 2), "WInt16", ua.Variant(0, ua.VariantType.Int16)
    )
    await w.set_writable()
    wb = await objects.add_variable(
        ua.NodeId("W.Boolean", 2), "WBool", ua.Variant(False, ua.VariantType.Boolean)
    )
    await wb.set_writable()
    await objects.add_variable(ua.NodeId("RO", 2), "RO", 1.0)
    events = None
    if opts.get("events"):  # a BaseEvent from the Server object every fifth tick
        events = await server.get_event_generator()
        events.event.Severity = 500
    period = float(opts.get("period", 0.1))
    tick = int(opts.get("base", 1))
    async with server:
        print("READY", flush=True)
        nxt = time.monotonic()
        while True:
            dv = ua.DataValue(ua.Variant(float(tick), ua.VariantType.Double),
                              SourceTimestamp=datetime.now(UTC))  # fmt: skip
            for nodeid in counters:
                await server.write_attribute_value(nodeid, dv)
            if events is not None and tick % 5 == 0:
                events.event.Message = ua.LocalizedText(f"tick {tick}")
                await events.trigger()
            tick += 1
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(json.loads(sys.argv[1])))
