"""Compiled vs pure Modbus core: the same random streams and blocks give the same results."""

from __future__ import annotations

import importlib
import math
import os
import struct
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._pure import modbus as pure


def _native() -> ModuleType | None:
    if os.environ.get("GATEWAY_PUREPYTHON") == "1":
        return None
    try:
        return importlib.import_module("gateway._native.modbus")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        return None


native: Any = _native()
pytestmark = pytest.mark.skipif(native is None, reason="compiled gateway._native.modbus not built")
SETTINGS = settings(
    max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

garbage = st.binary(min_size=1, max_size=12)


@st.composite
def mbap_frame(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=20))
    unit, fc, tid = (
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFFF)),
    )
    if fc in (3, 4) and draw(st.booleans()):
        regs = draw(st.binary(min_size=0, max_size=12).filter(lambda b: len(b) % 2 == 0))
        body = bytes([len(regs)]) + regs
    return struct.pack(">HHHBB", tid, 0, len(body) + 2, unit, fc) + body


@st.composite
def rtu_frame(draw: st.DrawFn) -> bytes:
    unit = draw(st.integers(1, 247))
    kind = draw(st.sampled_from(["read", "write", "exception", "request"]))
    if kind == "read":
        fc = draw(st.integers(1, 4))
        data = draw(st.binary(min_size=1, max_size=16))
        if fc >= 3 and len(data) % 2:
            data += b"\x00"
        pdu = bytes([unit, fc, len(data)]) + data
    elif kind == "write":
        pdu = bytes([unit, draw(st.sampled_from([5, 6, 15, 16]))]) + draw(
            st.binary(min_size=4, max_size=4)
        )
    elif kind == "exception":
        pdu = bytes([unit, draw(st.integers(0x81, 0xFF)), draw(st.integers(1, 11))])
    else:
        pdu = bytes([unit, draw(st.integers(1, 6))]) + draw(st.binary(min_size=4, max_size=4))
    crc = pure.crc16(pdu)
    return pdu + bytes([crc & 0xFF, crc >> 8])


def stream_of(frames: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(frames, garbage), max_size=12).map(b"".join)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@SETTINGS
@given(stream_of(mbap_frame()), st.lists(st.integers(0, 10_000), max_size=8), st.integers(8, 40))
def test_mbap_framer_parity(data: bytes, cuts: list[int], max_adu: int) -> None:
    assert native is not None
    a, b, whole = native.MbapFramer(max_adu), pure.MbapFramer(max_adu), pure.MbapFramer(max_adu)
    got_a: list[tuple[int, int, int, bytes]] = []
    for chunk in chunks(data, cuts):
        fa, fb = a.feed(chunk), b.feed(bytearray(chunk))
        assert fa == fb
        got_a += fa
    assert (a.frames, a.bad_frames, a.discarded_bytes) == (
        b.frames,
        b.bad_frames,
        b.discarded_bytes,
    )
    # Split points never change the outcome.
    assert whole.feed(data) == got_a
    assert (whole.frames, whole.bad_frames, whole.discarded_bytes) == (
        a.frames,
        a.bad_frames,
        a.discarded_bytes,
    )


@SETTINGS
@given(
    stream_of(rtu_frame()),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.sampled_from(["response", "request", "sniff"]),
)
def test_rtu_framer_parity(data: bytes, cuts: list[int], role: str) -> None:
    assert native is not None
    a, b, whole = native.RtuFramer(role), pure.RtuFramer(role), pure.RtuFramer(role)
    got_a: list[tuple[int, int, bytes]] = []
    for chunk in chunks(data, cuts):
        fa, fb = a.feed(memoryview(chunk)), b.feed(chunk)
        assert fa == fb
        got_a += fa
    assert (a.frames, a.crc_errors, a.discarded_bytes) == (
        b.frames,
        b.crc_errors,
        b.discarded_bytes,
    )
    assert whole.feed(data) == got_a
    assert (whole.frames, whole.crc_errors, whole.discarded_bytes) == (
        a.frames,
        a.crc_errors,
        a.discarded_bytes,
    )


points = st.lists(
    st.tuples(
        st.integers(0, 8),
        st.integers(0, 5),
        st.integers(0, 3),
        st.floats(-1e6, 1e6),
        st.floats(-1e6, 1e6),
    ),
    max_size=10,
)


def make_decoders(pts: list[tuple[int, int, int, float, float]]) -> tuple[Any, Any]:
    cols: list[Any] = list(zip(*pts, strict=True)) if pts else [[], [], [], [], []]
    assert native is not None
    return native.RegisterDecoder(*cols), pure.RegisterDecoder(*cols)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


@SETTINGS
@given(points, st.binary(min_size=24, max_size=24), st.integers(1, 4))
def test_decoder_parity(pts: list, block: bytes, n_blocks: int) -> None:
    nd, pd = make_decoders(pts)
    assert (nd.n_points, nd.min_registers) == (pd.n_points, pd.min_registers)
    oa, ob = np.zeros(len(pts)), np.zeros(len(pts))
    nd.decode(block, oa)
    pd.decode(block, ob)
    assert same(oa, ob)
    blocks = bytes(reversed(block * n_blocks))
    ma, mb_ = np.zeros((n_blocks, len(pts))), np.zeros((n_blocks, len(pts)))
    nd.decode_many(blocks, n_blocks, ma)
    pd.decode_many(blocks, n_blocks, mb_)
    assert same(ma, mb_)


@SETTINGS
@given(points, stream_of(mbap_frame()), st.integers(0, 6))
def test_decode_stream_parity(pts: list, data: bytes, rows: int) -> None:
    nd, pd = make_decoders(pts)
    oa, ob = np.zeros((rows, len(pts))), np.zeros((rows, len(pts)))
    ta, tb = np.zeros(rows, np.uint16), np.zeros(rows, np.uint16)
    na, nb = native.decode_stream(data, nd, oa, ta), pure.decode_stream(data, pd, ob, tb)
    assert na == nb and same(oa, ob) and same(ta, tb)
    assert (nd.last_skipped, nd.last_consumed) == (pd.last_skipped, pd.last_consumed)


@st.composite
def answer_frame(draw: st.DrawFn) -> bytes:
    """An answer a pipelined connection may see: few tids and units, so slots match often."""
    tid, unit = draw(st.integers(0, 5)), draw(st.sampled_from([1, 1, 2]))
    fc = draw(st.sampled_from([3, 4, 0x83, 1, 6]))
    if fc == 0x83:
        body = bytes([draw(st.integers(1, 11))])
    else:
        regs = draw(st.binary(max_size=24))
        body = bytes([draw(st.sampled_from([len(regs), len(regs) + 1]))]) + regs
    return struct.pack(">HHHBB", tid, 0, len(body) + 2, unit, fc) + body


slot = st.tuples(
    st.sampled_from([0, 3, 4, 1]),  # function
    st.integers(0, 12).map(lambda n: 2 * n),  # byte count
    points,  # decoder points (empty: no decoder)
)


@SETTINGS
@given(
    st.lists(slot, min_size=1, max_size=4),
    stream_of(answer_frame()),
    st.integers(0, 5),
    st.integers(0, 2),
)
def test_response_matcher_parity(slots: list, data: bytes, first: int, unarmed: int) -> None:
    """The pipelined path's multi-decoder: same status, spans, values and counters."""
    funcs, counts, decs, offsets = [], [], [], []
    end = 0
    for fc, nbytes, pts in slots:
        fitting = [p for p in pts if 2 * (p[0] + pure.TYPE_WORDS[p[1]]) <= nbytes]
        funcs.append(fc)
        counts.append(nbytes)
        decs.append(make_decoders(fitting) if fitting and fc else (None, None))
        offsets.append(end)
        end += len(fitting)
    matchers = [
        m.ResponseMatcher(funcs, counts, [d[i] for d in decs], offsets)
        for i, m in enumerate((native, pure))
    ]
    results = []
    for m in matchers:
        last = m.arm(first, max(0, len(slots) - unarmed))
        out = np.full(max(end, 1), 7.0)
        got = (last, m.feed(data, 1, out), m.feed(data, 1, out))  # the second: all stale
        spans = [m.span(k) for k in range(len(slots))]
        results.append((got, m.statuses(), spans, out, m.waiting, m.last_consumed,
                        m.last_stale, m.last_bad))  # fmt: skip
    (na, sa, pa, oa, *ca), (nb, sb, pb, ob, *cb) = results
    assert na == nb and sa == sb and pa == pb and ca == cb and same(oa, ob)


@SETTINGS
@given(st.binary(max_size=40), st.integers(0, 320))
def test_crc_and_bits_parity(data: bytes, count: int) -> None:
    assert native.crc16(data) == pure.crc16(data)
    if count <= 8 * len(data):
        oa, ob = np.zeros(count), np.zeros(count)
        native.unpack_bits(data, count, oa)
        pure.unpack_bits(data, count, ob)
        assert same(oa, ob)


@SETTINGS
@given(
    st.integers(0, 5),
    st.integers(0, 3),
    st.sampled_from([1.0, 0.1, -2.5, 1e-3, 3.0]),
    st.floats(-100, 100),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**33), 2**33).map(float)
    ),
)
def test_encode_parity_and_round_trip(
    t: int, flags: int, scale: float, bias: float, value: float
) -> None:
    results = []
    for mod in (native, pure):
        try:
            results.append(("ok", mod.encode_value(t, flags, scale, bias, value)))
        except ValueError as exc:
            results.append(("error", str(exc)))
    assert results[0] == results[1]
    if results[0][0] != "ok":
        return
    words = results[0][1]
    dec = pure.RegisterDecoder([0], [t], [flags], [scale], [bias])
    out = np.zeros(1)
    dec.decode(struct.pack(f">{len(words)}H", *words), out)
    raw = (value - bias) / scale
    if t == pure.T_FLOAT64:
        expected = raw * scale + bias
    elif t == pure.T_FLOAT32:
        expected = struct.unpack(">f", struct.pack(">f", raw))[0] * scale + bias
    else:
        expected = round(raw) * scale + bias
    assert same(out, np.array([expected]))
    if math.isfinite(value) and t != pure.T_FLOAT32 and t != pure.T_FLOAT64:
        assert abs(out[0] - value) <= abs(scale) / 2 + 1e-9 * max(1.0, abs(value))
