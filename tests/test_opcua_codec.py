"""OPC UA decoder: agrees with asyncua's own decoder, compiled == pure, hostile input is refused.

Messages are built with asyncua's encoder (bench/bench_opcua_messages.py) from random values,
decoded by ours (``gateway.impl.opcua``: compiled, or the twin under GATEWAY_PUREPYTHON=1) and
compared with what asyncua decodes from the same bytes. Example counts scale with
``GATEWAY_FUZZ_EXAMPLES`` (``make fuzz`` raises it).
"""

from __future__ import annotations

import importlib
import math
import os
import struct
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_opcua_messages import msg_chunk, publish_response, read_response
from gateway._pure import opcua as pure
from gateway.impl import opcua as impl

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
VT = ua.VariantType
NUMERIC = {VT.Boolean, VT.SByte, VT.Byte, VT.Int16, VT.UInt16, VT.Int32, VT.UInt32, VT.Int64}
NUMERIC |= {VT.UInt64, VT.Float, VT.Double, VT.DateTime, VT.StatusCode}
T0 = datetime(2000, 1, 1, tzinfo=UTC)


def _native() -> ModuleType | None:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return None
    try:
        return importlib.import_module("gateway._native.opcua")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        return None


native: Any = _native()
needs_native = pytest.mark.skipif(native is None, reason="compiled opcua not built")


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Any integer of the range, with its edges (where sign and width bugs live) drawn often."""
    return st.one_of(st.sampled_from([lo, hi, (lo + hi) // 2 + 1]), st.integers(lo, hi))


stamps = st.one_of(st.none(), st.integers(0, 100 * 365 * 86400 * 10**6).map(
    lambda us: T0 + timedelta(microseconds=us)))  # fmt: skip
finite32 = st.floats(width=32, allow_nan=False)
variants = st.one_of(
    st.booleans().map(lambda v: ua.Variant(v, VT.Boolean)),
    ints(-128, 127).map(lambda v: ua.Variant(v, VT.SByte)),
    ints(0, 255).map(lambda v: ua.Variant(v, VT.Byte)),
    ints(-(2**15), 2**15 - 1).map(lambda v: ua.Variant(v, VT.Int16)),
    ints(0, 2**16 - 1).map(lambda v: ua.Variant(v, VT.UInt16)),
    ints(-(2**31), 2**31 - 1).map(lambda v: ua.Variant(v, VT.Int32)),
    ints(0, 2**32 - 1).map(lambda v: ua.Variant(v, VT.UInt32)),
    ints(-(2**63), 2**63 - 1).map(lambda v: ua.Variant(v, VT.Int64)),
    ints(0, 2**64 - 1).map(lambda v: ua.Variant(v, VT.UInt64)),
    finite32.map(lambda v: ua.Variant(v, VT.Float)),
    st.floats(allow_nan=False).map(lambda v: ua.Variant(v, VT.Double)),
    stamps.filter(bool).map(lambda v: ua.Variant(v, VT.DateTime)),
    ints(0, 2**32 - 1).map(lambda v: ua.Variant(ua.StatusCode(v), VT.StatusCode)),
    st.text(max_size=8).map(lambda v: ua.Variant(v, VT.String)),
    st.binary(max_size=8).map(lambda v: ua.Variant(v, VT.ByteString)),
    st.lists(st.integers(-5, 5), max_size=4).map(lambda v: ua.Variant(v, VT.Int32)),
    st.lists(st.text(max_size=3), max_size=3).map(lambda v: ua.Variant(v, VT.String)),
    st.text(max_size=4).map(lambda v: ua.Variant(ua.LocalizedText(v, "en"), VT.LocalizedText)),
    st.integers(0, 9).map(lambda v: ua.Variant(ua.NodeId(v, 2), VT.NodeId)),
    st.just(ua.Variant(None, VT.Null)),
)
statuses = st.sampled_from([0, 0x00A70000, 0x40000000, 0x408F0000, 0x80000000, 0x80340000,
                            0xC0000000])  # fmt: skip
data_values = st.builds(
    lambda v, s, src, srv: ua.DataValue(v, StatusCode=ua.StatusCode(s), SourceTimestamp=src,
                                        ServerTimestamp=srv),  # fmt: skip
    variants, statuses, stamps, stamps,
)  # fmt: skip


def columns(n: int) -> tuple[np.ndarray, ...]:
    return (np.zeros(n, np.uint32), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, np.uint8))


def epoch(ts: datetime | None) -> float:
    return math.nan if ts is None else ts.timestamp()


def expected(dv: ua.DataValue) -> tuple[float, int]:
    """(value, quality) asyncua's decoded DataValue stands for in our columns."""
    code = dv.StatusCode.value if dv.StatusCode is not None else 0
    q = pure.quality_of(code)
    var = dv.Value
    if q == pure.BAD or var is None or var.is_array or var.VariantType not in NUMERIC:
        return math.nan, q
    if var.VariantType == VT.DateTime:
        return epoch(var.Value), q
    if var.VariantType == VT.StatusCode:
        return float(var.Value.value), q
    return float(var.Value), q


def check_against_asyncua(dec: Any, data: bytes, cols: tuple[np.ndarray, ...], n: int,
                          dvs: list[ua.DataValue], ids: list[int]) -> None:  # fmt: skip
    points, values, src, srv, quality = cols
    assert points[:n].tolist() == ids
    for i, dv in enumerate(dvs):
        want, q = expected(dv)
        assert quality[i] == q
        # asyncua rounds DateTimes to microseconds; 2**-20 s is below that at today's epochs.
        tol = 2e-6 if dv.Value is not None and dv.Value.VariantType == VT.DateTime else 0
        assert values[i] == pytest.approx(want, nan_ok=True, abs=tol, rel=0)
        assert src[i] == pytest.approx(epoch(dv.SourceTimestamp), nan_ok=True, abs=2e-6)
        assert srv[i] == pytest.approx(epoch(dv.ServerTimestamp), nan_ok=True, abs=2e-6)
    others = {row: (t, off, size) for row, t, off, size in dec.last_other}
    for i, dv in enumerate(dvs):
        var = dv.Value
        if (
            var is None
            or var.VariantType == VT.Null
            or (not var.is_array and var.VariantType in NUMERIC)
        ):
            assert i not in others
            continue
        t, off, size = others[i]
        assert t == var.VariantType.value
        assert ua_binary.variant_from_binary(Buffer(data[off : off + size])) == var


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5), data_values), max_size=12), st.booleans(),
       st.lists(st.integers(0, 2**32 - 1), max_size=4), st.integers(0, 2**32 - 1))  # fmt: skip
def test_publish_matches_asyncua(items: list[Any], chunked: bool, avail: list[int],
                                 seq: int) -> None:  # fmt: skip
    """Handles 0..3 are mapped (to 100+h), 4 and 5 are not: their items are skipped."""
    body = publish_response(items, sequence_number=seq, subscription_id=9, available=avail,
                            extra=[ua.StatusChangeNotification(Status=ua.StatusCode(0x80AB0000))])  # fmt: skip
    data = msg_chunk(body) if chunked else body
    theirs = ua_binary.struct_from_binary(ua.PublishResponse, Buffer(body)).Parameters
    decoded = theirs.NotificationMessage.NotificationData[0].MonitoredItems
    dec = impl.NotificationDecoder([(h, 100 + h) for h in range(4)])
    cols = columns(impl.max_rows(len(data)))
    n = dec.decode_publish(data, *cols)
    mine = [m for m in decoded if m.ClientHandle < 4]
    assert n == len(mine)
    assert dec.last_unknown == len(decoded) - len(mine)
    assert (dec.subscription_id, dec.sequence_number) == (9, seq)
    assert dec.available_sequence_numbers == avail
    assert dec.publish_time == epoch(theirs.NotificationMessage.PublishTime)
    assert dec.status_change == 0x80AB0000
    check_against_asyncua(dec, data, cols, n, [m.Value for m in mine],
                          [100 + m.ClientHandle for m in mine])  # fmt: skip


@SETTINGS
@given(st.lists(data_values, max_size=12))
def test_read_matches_asyncua(dvs: list[ua.DataValue]) -> None:
    data = read_response(dvs)
    theirs = ua_binary.struct_from_binary(ua.ReadResponse, Buffer(data)).Results
    ids = np.arange(500, 500 + len(dvs), dtype=np.uint32)
    dec = impl.NotificationDecoder([])
    cols = columns(len(dvs))
    n = dec.decode_read(data, ids, *cols)
    assert n == len(dvs)
    check_against_asyncua(dec, data, cols, n, theirs, ids.tolist())
    with pytest.raises(ValueError, match="results for"):
        dec.decode_read(data, ids[:-1] if len(ids) else np.zeros(1, np.uint32), *cols)


def outcome(mod: Any, data: bytes, cap: int) -> Any:
    """Everything a decode yields (or its error), for comparing the two implementations."""
    dec = mod.NotificationDecoder([(h, 7 * h) for h in range(4)])
    cols = columns(cap)
    try:
        n = dec.decode_publish(data, *cols)
    except ValueError as e:
        return "error", str(e)
    meta = (dec.service_result, dec.subscription_id, dec.sequence_number, dec.publish_time,
            dec.more_notifications, dec.available_sequence_numbers, dec.status_change,
            dec.last_events, dec.last_unknown, dec.last_other)  # fmt: skip
    return n, [c[:n].tobytes() for c in cols], meta


def mutations(data: bytes, draw: Any) -> bytes:
    kind = draw(st.sampled_from(["cut", "flip", "splice", "garbage", "none"]))
    if kind == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip" and data:
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        return bytes(buf)
    if kind == "splice" and data:
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    return data


@needs_native
@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5), data_values), max_size=8), st.booleans(),
       st.integers(0, 12), st.data())  # fmt: skip
def test_native_equals_pure_on_any_input(items: list[Any], chunked: bool, cap: int,
                                         data: st.DataObject) -> None:  # fmt: skip
    body = publish_response(items, available=[3, 4],
                            extra=[ua.EventNotificationList(), ua.StatusChangeNotification()])  # fmt: skip
    raw = mutations(msg_chunk(body) if chunked else body, data.draw)
    a, b = outcome(native, raw, cap), outcome(pure, raw, cap)
    assert a == b


HOSTILE = [
    (b"", "type id needs 1 bytes"),
    (b"MSG", "MSG header needs 4 bytes"),
    (b"MSGC" + struct.pack("<I", 8), "only final MSG chunks"),
    (b"MSGF" + struct.pack("<I", 9999), "MSG size 9999 != 8"),
    (b"\x01\x00\x7a\x02", "type id 634 is not the expected 829"),
    (b"\x07", "NodeId encoding 0x7"),
]


@pytest.mark.parametrize(("data", "match"), HOSTILE)
def test_hostile_frames_are_refused_with_position(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        impl.NotificationDecoder([]).decode_publish(data, *columns(4))
    assert " at byte " in str(e.value)


def test_huge_array_lengths_fail_fast_without_allocating() -> None:
    body = bytearray(publish_response([(1, ua.DataValue(ua.Variant(1.0, VT.Double)))]))
    head = len(publish_response([])) - 4 * 3  # NotificationData count, Results, DiagnosticInfos
    # The ExtensionObject count of NotificationData sits right before the DataChangeNotification.
    count_at = body.index(b"\x01\x00\x2b\x03") - 4  # FourByte NodeId 811
    assert count_at <= head + 4
    for n in (2**31 - 1, 2**20 + 1, 50, -2):
        body[count_at : count_at + 4] = struct.pack("<i", n)
        with pytest.raises(ValueError, match=f"NotificationData length {n} is out of bounds"):
            impl.NotificationDecoder([]).decode_publish(bytes(body), *columns(4))


def test_deep_nesting_and_full_columns_are_refused() -> None:
    nested = ua.Variant(1.0, VT.Double)
    for _ in range(pure.MAX_DEPTH + 2):
        nested = ua.Variant([nested], VT.Variant)
    deep = publish_response([(1, ua.DataValue(nested))])
    with pytest.raises(ValueError, match="nested too deep"):
        impl.NotificationDecoder([(1, 1)]).decode_publish(deep, *columns(4))
    three = publish_response([(1, ua.DataValue(ua.Variant(float(i), VT.Double))) for i in range(3)])
    with pytest.raises(ValueError, match="output columns hold 2 rows"):
        impl.NotificationDecoder([(1, 1)]).decode_publish(three, *columns(2))


def test_service_fault_sets_result_and_yields_nothing() -> None:
    fault = ua.ServiceFault()
    fault.ResponseHeader.ServiceResult = ua.StatusCode(0x80790000)  # BadNoSubscription
    data = msg_chunk(bytes(ua_binary.struct_to_binary(fault)))
    dec = impl.NotificationDecoder([(1, 1)])
    assert dec.decode_publish(data, *columns(4)) == 0
    assert dec.service_result == 0x80790000


def test_decoder_refuses_bad_handle_maps() -> None:
    with pytest.raises(ValueError, match="mapped twice"):
        impl.NotificationDecoder([(1, 1), (1, 2)])
    with pytest.raises(ValueError, match="uint32"):
        impl.NotificationDecoder([(-1, 1)])
