"""Node frame codec: round trips, hostile input, MACs and replay windows, compiled == pure.

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


# Node ids 0-3 have KEYS[id] (4 has none: format 1 only; 5+ are unknown); frames are sealed
# with one of these keys, so right keys, wrong keys and the wrong direction all occur.
KEYS = [bytes([i + 1]) * (16 + 8 * i) for i in range(4)]
EPOCHS = [0, 1, 7, 0xFFFFFFFF]


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    readings = draw(st.lists(reading, max_size=20))
    payload = (
        pure.encode_readings(readings) if draw(st.booleans()) else draw(st.binary(max_size=40))
    )
    ftype, seq = draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF))
    node = draw(st.one_of(st.integers(0, 6), st.integers(0, 0xFFFF)))
    key = draw(st.one_of(st.none(), st.sampled_from(KEYS)))
    return pure.encode_frame(ftype, node, seq, payload, key=key,
                             epoch=draw(st.sampled_from(EPOCHS)), counter=draw(st.integers(0, 80)),
                             up=draw(st.booleans()) or draw(st.booleans()))  # fmt: skip


def keyed(mod: Any, max_payload: int = pure.MAX_PAYLOAD) -> Any:
    p = mod.NodeFrameParser(max_payload)
    for node, key in enumerate(KEYS):
        p.set_key(node, key)
    p.set_key(4, None)
    p.expect(1, 7)
    p.expect(2, 1)
    p.expect(3, 0xFFFFFFFF)
    return p


stream = st.lists(st.one_of(frame(), st.binary(min_size=1, max_size=30)), max_size=12).map(b"".join)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@SETTINGS
@given(st.lists(reading, max_size=50), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.binary(min_size=16, max_size=64), st.integers(1, 2**32 - 1),
       st.integers(0, 2**32 - 1))  # fmt: skip
def test_round_trip(readings: list[tuple[int, int, float]], node: int, seq: int, key: bytes,
                    epoch: int, counter: int) -> None:  # fmt: skip
    wire = impl.encode_frame(impl.T_READINGS, node, seq, impl.encode_readings(readings),
                             key=key, epoch=epoch, counter=counter, up=True)  # fmt: skip
    assert wire.index(b"\x00") == len(wire) - 1
    parser = impl.NodeFrameParser()
    parser.set_key(node, key)
    assert parser.feed(wire) == [(impl.STALE, impl.T_READINGS, node, seq, epoch, counter, b"")]
    parser.expect(node, epoch)
    (got,) = parser.feed(wire)
    assert got[:6] == (impl.OK, impl.T_READINGS, node, seq, epoch, counter)
    assert parser.epoch(node) == epoch and parser.pending(node) == 0
    assert parser.feed(wire)[0][0] == impl.REPLAY
    ch, vals = np.empty(255, np.uint8), np.empty(255)
    n = impl.decode_readings(got[6], ch, vals)
    assert n == len(readings)
    for i, (c, t, v) in enumerate(readings):
        want = struct.unpack(">f", struct.pack(">f", v))[0] if t == pure.V_FLOAT32 else v
        assert ch[i] == c and vals[i] == want


@needs_native
@SETTINGS
@given(stream, st.lists(st.integers(0, 10_000), max_size=8), st.integers(0, 64))
def test_parser_parity_and_bounded_buffer(data: bytes, cuts: list[int], max_payload: int) -> None:
    a, b = keyed(native, max_payload), keyed(pure, max_payload)
    for chunk in chunks(data, cuts):
        assert a.feed(memoryview(chunk)) == b.feed(chunk)
        assert a.buffered == b.buffered <= a.max_encoded
    for name in COUNTERS:
        assert getattr(a, name) == getattr(b, name), name
    for node in range(4):
        assert (a.epoch(node), a.pending(node)) == (b.epoch(node), b.pending(node))
        if a.epoch(node):  # the gateway's own frames agree too (same counter, same tag)
            assert a.encode(pure.T_ACK, node, 9, b"x") == b.encode(pure.T_ACK, node, 9, b"x")
        if a.pending(node):
            assert a.encode_sync(node, 3, 4) == b.encode_sync(node, 3, 4)


COUNTERS = ("frames", "crc_errors", "bad_frames", "discarded_bytes", "accepted", "stale",
            "replays", "forged", "unknown", "wrong_mode")  # fmt: skip


@needs_native
@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), st.booleans()), max_size=60),
       st.binary(max_size=70), st.binary(min_size=16, max_size=64))  # fmt: skip
def test_replay_window_and_mac_parity(
    sends: list[tuple[int, int, bool]], payload: bytes, key: bytes
) -> None:
    """Counters in any order and repetition, sessions switching: both twins agree frame by frame."""
    a, b = native.NodeFrameParser(), pure.NodeFrameParser()
    for p in (a, b):
        p.set_key(9, key)
    for epoch_pick, counter, offer in sends:
        epoch = EPOCHS[epoch_pick] or 5
        if offer and epoch != a.epoch(9):
            a.expect(9, epoch)
            b.expect(9, epoch)
        wire = pure.encode_frame(pure.T_READINGS, 9, counter & 0xFFFF, payload, key=key,
                                 epoch=epoch, counter=counter, up=True)  # fmt: skip
        assert native.encode_frame(pure.T_READINGS, 9, counter & 0xFFFF, payload, key=key,
                                   epoch=epoch, counter=counter, up=True) == wire  # fmt: skip
        assert a.feed(wire) == b.feed(wire)
    for name in COUNTERS:
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
    p.set_key(1, None)
    good = impl.encode_frame(impl.T_ACK, 1, 2)
    raw = bytes((1, impl.T_ACK, 0, 1, 0, 3, 0x12, 0x34))  # wrong CRC
    flipped = impl.cobs_encode(raw) + b"\x00"
    got = p.feed(b"\x07" * 10_000 + b"\x00" + bytes(flipped) + good)
    assert got == [(impl.OK, impl.T_ACK, 1, 2, 0, 0, b"")]
    assert p.bad_frames == 1 and p.crc_errors == 1 and p.buffered == 0
    assert p.discarded_bytes == 10_000 + len(flipped) - 1
    with pytest.raises(ValueError):
        impl.encode_frame(1, 70000, 0)
    assert impl.decode_readings(b"\x02\x00\x00\x01", np.zeros(4, np.uint8), np.zeros(4)) == -1


def test_window_accepts_reordering_once_and_refuses_replays_forgeries_and_reflections() -> None:
    key = bytes(range(32))
    p = impl.NodeFrameParser()
    p.set_key(3, key)
    p.expect(3, 42)

    def up(counter: int, epoch: int = 42, k: bytes = key, direction: bool = True) -> int:
        wire = impl.encode_frame(impl.T_READINGS, 3, counter & 0xFFFF, b"\x00", key=k,
                                 epoch=epoch, counter=counter, up=direction)  # fmt: skip
        return int(p.feed(wire)[0][0])

    assert [up(10), up(12), up(11), up(11), up(12), up(10)] == [impl.OK] * 3 + [impl.REPLAY] * 3
    assert up(100) == impl.OK and up(37) == impl.OK and up(36) == impl.REPLAY  # 64 behind
    assert up(101, k=bytes(32)) == impl.FORGED  # wrong key
    assert up(101, direction=False) == impl.FORGED  # a gateway frame reflected back
    assert up(101, epoch=41) == impl.STALE  # another session: answered with a SYNC
    assert up(101) == impl.OK
    plain = impl.encode_frame(impl.T_READINGS, 3, 1, b"\x00")
    assert p.feed(plain)[0][0] == impl.MODE  # no unauthenticated frames from a keyed node
    assert (p.accepted, p.replays, p.forged, p.stale, p.wrong_mode) == (6, 4, 2, 1, 1)
    # The gateway's frames use the other direction's key and their own counter.
    down = p.encode(impl.T_ACK, 3, 7)
    q = impl.NodeFrameParser()
    q.set_key(3, key)
    assert q.feed(down)[0][0] == impl.FORGED
    assert impl.cobs_decode(down[:-1])[6:14] == bytes((0, 0, 0, 42, 0, 0, 0, 1))  # type: ignore[index]
    with pytest.raises(ValueError):
        p.set_key(4, b"short")
    with pytest.raises(ValueError):
        impl.NodeFrameParser().encode(impl.T_ACK, 3, 1)  # unknown node


def test_hmac_matches_the_standard() -> None:
    """The compiled SHA-256/HMAC against hashlib on every padding boundary."""
    import hashlib
    import hmac

    key = bytes(range(40))
    up = hmac.digest(key, b"gwnode up", hashlib.sha256)
    assert impl.mac_keys(key)[0] == up
    for n in (0, 1, 41, 42, 49, 50, 105, 106, 1024):
        payload = bytes(range(256)) * 4
        wire = impl.encode_frame(1, 2, 3, payload[:n], key=key, epoch=4, counter=5, up=True)
        raw = impl.cobs_decode(wire[:-1])
        assert raw is not None
        assert raw[-18:-2] == hmac.digest(up, raw[:-18], hashlib.sha256)[:16]
