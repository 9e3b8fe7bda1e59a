"""OPC UA messages built with asyncua's own encoder, for the decode benchmark and the tests.

Not a benchmark itself: ``bench_opcua_decode.py`` and ``tests/test_opcua_codec.py`` share these
builders so both measure and check the same bytes a real server would send.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from asyncua import ua
from asyncua.ua import ua_binary

MSG_HEADER = struct.Struct("<3scIIIII")  # "MSG", chunk type, size, channel, token, seq, request


def publish_response(
    items: Sequence[tuple[int, ua.DataValue]],
    *,
    sequence_number: int = 1,
    subscription_id: int = 1,
    available: Sequence[int] = (),
    extra: Sequence[object] = (),
    more: bool = False,
) -> bytes:
    """A PublishResponse body (type NodeId first) of one DataChangeNotification + ``extra``."""
    dcn = ua.DataChangeNotification(
        MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=h, Value=dv) for h, dv in items]
    )
    msg = ua.NotificationMessage(
        SequenceNumber=sequence_number,
        PublishTime=datetime(2026, 1, 2, 3, 4, 5, 600000, UTC),
        NotificationData=[dcn, *extra],
    )
    result = ua.PublishResult(
        SubscriptionId=subscription_id,
        AvailableSequenceNumbers=list(available),
        MoreNotifications=more,
        NotificationMessage=msg,
    )
    return bytes(ua_binary.struct_to_binary(ua.PublishResponse(Parameters=result)))


def read_response(values: Sequence[ua.DataValue]) -> bytes:
    """A ReadResponse body (type NodeId first) with ``values`` as its Results."""
    return bytes(ua_binary.struct_to_binary(ua.ReadResponse(Results=list(values))))


def msg_chunk(body: bytes, request_id: int = 7, chunk: bytes = b"F") -> bytes:
    """``body`` as one MSG chunk of SecurityPolicy None, as it comes off the socket."""
    size = MSG_HEADER.size + len(body)
    return MSG_HEADER.pack(b"MSG", chunk, size, 1, 1, 99, request_id) + body


def sample_values(n: int, seed: int = 1) -> list[tuple[int, ua.DataValue]]:
    """``n`` typical monitored-item changes: Doubles, with source and server timestamps."""
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = []
    for i in range(n):
        ts = t0 + timedelta(microseconds=137 * i + seed)
        dv = ua.DataValue(
            ua.Variant(i * 0.25 + seed, ua.VariantType.Double),
            StatusCode=ua.StatusCode(0),
            SourceTimestamp=ts,
            ServerTimestamp=ts,
        )
        out.append((i + 1, dv))
    return out
