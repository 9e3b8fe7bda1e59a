"""Node frame codec: round trips, hostile input, and compiled == pure on every input.

Example counts scale with ``GATEWAY_FUZZ_EXAMPLES`` (``make fuzz`` raises it); the default keeps
the suite fast.
"""

from __future__ import annotations

import importlib
import os
import struct
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._pure import node_frame as pure
from gateway.impl import node_frame as impl

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _native() -> ModuleType | None:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return None
    try:
        return importlib.import_module("gateway._native.node_frame")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        return None


native: Any = _native()
needs_native = pytest.mark.skipif(native is None, reason="compiled node_frame not built")

reading = st.one_of(
    st.tuples(st.integers(0, 255), st.just(pure.V_BOOL), st.booleans().map(float)),
    st.tuples(st.integers(0, 255), st.just(pure.V_INT16), st.integers(-32768, 32767).map(float)),
    st.tuples(st.integers(0, 255), st.just(pure.V_UINT32), st.integers(0, 2**32 - 1).map(float)),
    st.tuples(st.integers(0, 255), st.just(pure.V_FLOAT32),
              st.floats(width=32, allow_nan=False)),
    st.tuples(st.integers(0, 255), st.just(pure.V_FLOAT64), st.floats(allow_nan=False)),
)  # fmt: skip


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    readings = draw(st.lists(reading, max_size=20))
    return pure.encode_frame(
        draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
        pure.encode_readings(readings) if draw(st.booleans()) else draw(st.binary(max_size=40)),
    )  # fmt: skip


stream = st.lists(st.one_of(frame(), st.binary(min_size=1, max_size=30)), max_size=12).map(b"".join)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@SETTINGS
@given(st.lists(reading, max_size=50), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_round_trip(readings: list[tuple[int, int, float]], node: int, seq: int) -> None:
    wire = impl.encode_frame(impl.T_READINGS, node, seq, impl.encode_readings(readings))
    assert wire.index(b"\x00") == len(wire) - 1
    (got,) = impl.NodeFrameParser().feed(wire)
    assert got[:3] == (impl.T_READINGS, node, seq)
    ch, vals = np.empty(255, np.uint8), np.empty(255)
    n = impl.decode_readings(got[3], ch, vals)
    assert n == len(readings)
    for i, (c, t, v) in enumerate(readings):
        want = struct.unpack(">f", struct.pack(">f", v))[0] if t == pure.V_FLOAT32 else v
        assert ch[i] == c and vals[i] == want


@needs_native
@SETTINGS
@given(stream, st.lists(st.integers(0, 10_000), max_size=8), st.integers(0, 64))
def test_parser_parity_and_bounded_buffer(data: bytes, cuts: list[int], max_payload: int) -> None:
    a, b = native.NodeFrameParser(max_payload), pure.NodeFrameParser(max_payload)
    for chunk in chunks(data, cuts):
        assert a.feed(memoryview(chunk)) == b.feed(chunk)
        assert a.buffered == b.buffered <= a.max_encoded
    for name in ("frames", "crc_errors", "bad_frames", "discarded_bytes"):
        assert getattr(a, name) == getattr(b, name), name


@needs_native
@SETTINGS
@given(st.binary(max_size=300))
def test_cobs_and_readings_parity(data: bytes) -> None:
    assert native.cobs_encode(data) == pure.cobs_encode(data)
    assert native.cobs_decode(data.replace(b"\x00", b"")) == pure.cobs_decode(
        data.replace(b"\x00", b"")
    )
    assert pure.cobs_decode(pure.cobs_encode(data)) == data
    ca, va, cb, vb = np.zeros(255, np.uint8), np.zeros(255), np.zeros(255, np.uint8), np.zeros(255)
    ra, rb = native.decode_readings(data, ca, va), pure.decode_readings(data, cb, vb)
    assert ra == rb
    if ra > 0:
        assert (ca[:ra] == cb[:ra]).all()
        np.testing.assert_array_equal(va[:ra], vb[:ra])


def test_oversized_and_corrupt_frames_are_counted_not_kept() -> None:
    p = impl.NodeFrameParser(max_payload=16)
    good = impl.encode_frame(impl.T_ACK, 1, 2)
    raw = bytes((1, impl.T_ACK, 0, 1, 0, 3, 0x12, 0x34))  # wrong CRC
    flipped = impl.cobs_encode(raw) + b"\x00"
    assert p.feed(b"\x07" * 10_000 + b"\x00" + bytes(flipped) + good) == [(impl.T_ACK, 1, 2, b"")]
    assert p.bad_frames == 1 and p.crc_errors == 1 and p.buffered == 0
    assert p.discarded_bytes == 10_000 + len(flipped) - 1
    with pytest.raises(ValueError):
        impl.encode_frame(1, 70000, 0)
    assert impl.decode_readings(b"\x02\x00\x00\x01", np.zeros(4, np.uint8), np.zeros(4)) == -1
