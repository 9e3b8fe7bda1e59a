"""Bytes captured from a real asyncua subscription on loopback decode to what asyncua delivered.

An ``asyncua.Server`` (a stack we did not write) publishes changes of variables of every scalar
type the hot path decodes, plus a String (which goes to ``last_other``). The asyncua client's
socket protocol is tapped, so every byte the server sent is kept; the PublishResponse chunks among
them are decoded by ours and compared, item by item and in order, with what the client's
subscription handler received.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import Client, Server, ua
from asyncua.client import ua_session
from asyncua.client.ua_client import UASocketProtocol
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary

from gateway.impl import opcua as impl
from tests.test_opcua_codec import columns, epoch, expected

VT = ua.VariantType
KINDS = [
    (VT.Double, lambda i, r: i * 1.5 + r / 8),
    (VT.Float, lambda i, r: float(i) + 0.25 * r),
    (VT.Int32, lambda i, r: -i * 1000 - r),
    (VT.UInt16, lambda i, r: (i * 7 + r) % 65536),
    (VT.Int64, lambda i, r: -(2**40) * i - r),
    (VT.UInt64, lambda i, r: 2**63 + i + r),
    (VT.Boolean, lambda i, r: (i + r) % 2 == 0),
    (VT.SByte, lambda i, r: -(i % 100) - r),
    (VT.DateTime, lambda i, r: datetime(2025, 1, 1 + r, 0, 0, i % 60, tzinfo=UTC)),
    (VT.String, lambda i, r: f"lot-{i}-{r}"),
]
N_VARS, ROUNDS = 60, 3
TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chunks(stream: bytes) -> list[bytes]:
    """Split what the server sent into its chunks (header: type, chunk type, uint32 size)."""
    out, pos = [], 0
    while pos + 8 <= len(stream):
        size = struct.unpack_from("<I", stream, pos + 4)[0]
        out.append(stream[pos : pos + size])
        pos += size
    assert pos == len(stream), "capture ends mid-chunk"
    return out


class Handler:
    def __init__(self) -> None:
        self.items: list[ua.MonitoredItemNotification] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.items.append(data.monitored_item)


async def run_capture(tap: bytearray) -> tuple[list[ua.MonitoredItemNotification], list[int]]:
    url = f"opc.tcp://127.0.0.1:{free_port()}/gw-test/"
    server = Server()
    await server.init()
    server.set_endpoint(url)
    idx = await server.register_namespace("urn:gateway:test")
    folder = await server.nodes.objects.add_object(idx, "Machine")
    nodes = []
    for i in range(N_VARS):
        vt, make = KINDS[i % len(KINDS)]
        nodes.append((await folder.add_variable(idx, f"v{i}", make(i, 0), vt), vt, make, i))
    handler = Handler()
    async with server, Client(url) as client:
        sub = await client.create_subscription(20, handler)
        await sub.subscribe_data_change([client.get_node(n.nodeid) for n, *_ in nodes])
        expect = N_VARS
        for r in range(1, ROUNDS + 1):
            await wait_for(handler, expect)
            for node, vt, make, i in nodes:
                await node.write_value(ua.Variant(make(i, r), vt))
            expect += N_VARS
        await wait_for(handler, expect)
        handles = list(sub._monitored_items)
        await sub.delete()
    return handler.items, handles


async def wait_for(handler: Handler, count: int) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + TIMEOUT
    while len(handler.items) < count:
        if loop.time() > end:
            raise AssertionError(f"waited {TIMEOUT}s for {count} notifications from asyncua")
        await asyncio.sleep(0.01)


def test_captured_publish_responses_decode_to_what_asyncua_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tap = bytearray()
    original = UASocketProtocol.data_received

    def tapped(self: UASocketProtocol, data: bytes) -> None:
        tap.extend(data)
        original(self, data)

    # Where the driver will take the bytes: the service body after asyncua's secure channel
    # (reassembled, verified, decrypted), before asyncua decodes it.
    bodies: list[bytes] = []
    parse = ua_session.struct_from_binary

    def keep(objtype: Any, data: Any) -> Any:
        if objtype is ua.PublishResponse:
            bodies.append(bytes(data))
        return parse(objtype, data)

    monkeypatch.setattr(UASocketProtocol, "data_received", tapped)
    monkeypatch.setattr(ua_session, "struct_from_binary", keep)
    delivered, handles = asyncio.run(run_capture(tap))
    publishes = [
        c for c in chunks(bytes(tap)) if c[:4] == b"MSGF" and c[24:28] == b"\x01\x00\x3d\x03"
    ]
    assert publishes, "no PublishResponse captured"
    assert [c[24:] for c in publishes] == bodies
    dec = impl.NotificationDecoder([(h, h) for h in handles])
    rows: list[tuple[Any, ...]] = []
    strings: list[Any] = []
    seqs: list[int] = []
    for chunk in publishes:
        cols = columns(impl.max_rows(len(chunk)))
        n = dec.decode_publish(chunk, *cols)
        assert dec.last_unknown == 0
        if n:
            seqs.append(dec.sequence_number)
        for _row, vt, off, size in dec.last_other:
            assert vt == VT.String.value
            strings.append(ua_binary.variant_from_binary(Buffer(chunk[off : off + size])).Value)
        rows += zip(*(c[:n].tolist() for c in cols), strict=True)
    assert len(rows) == len(delivered) >= N_VARS * (ROUNDS + 1)
    for (point, value, src, srv, quality), item in zip(rows, delivered, strict=True):
        want, q = expected(item.Value)
        assert (point, quality) == (item.ClientHandle, q)
        assert value == pytest.approx(want, nan_ok=True, abs=2e-6, rel=0)
        assert src == pytest.approx(epoch(item.Value.SourceTimestamp), nan_ok=True, abs=2e-6)
        assert srv == pytest.approx(epoch(item.Value.ServerTimestamp), nan_ok=True, abs=2e-6)
    want_strings = [
        i.Value.Value.Value for i in delivered if i.Value.Value.VariantType == VT.String
    ]
    assert strings == want_strings
    assert not any(math.isnan(v) for (_, v, *_), i in zip(rows, delivered, strict=True)
                   if i.Value.Value.VariantType != VT.String)  # fmt: skip
    # Data-carrying notifications are numbered one after the other (what Republish relies on).
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
