"""Uplink wire messages: round trip, version check, malformed input rejected cleanly."""

from __future__ import annotations

import zlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.uplink import wire

MESSAGES: list[wire.Message] = [
    wire.Hello("gw-1", {"events": 7, "samples": (1 << 63) - 1}),
    wire.Hello("gw-1", {}),
    wire.Welcome({"events": (7, 0), "samples": (9, 123)}, 10000),
    wire.Data.build("samples", 9, 124, [b"a", b"", b"\x00" * 300]),
    wire.Ack("samples", 9, 126, 5000),
    wire.Nack("samples", 9, 124),
    wire.Error("hello_required", "DATA before HELLO"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: wire.Message) -> None:
    frames = wire.encode(msg)
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)
    assert msgpack.unpackb(frames[1])["v"] == wire.PROTOCOL_VERSION
    assert wire.decode(frames) == msg


@given(
    records=st.lists(st.binary(max_size=64), min_size=1, max_size=20),
    first=st.integers(1, 1 << 40),
    epoch=st.integers(1, (1 << 63) - 1),
)
def test_data_round_trip_property(records: list[bytes], first: int, epoch: int) -> None:
    msg = wire.Data.build("s", epoch, first, records)
    back = wire.decode(wire.encode(msg))
    assert isinstance(back, wire.Data)
    assert back == msg and back.crc_ok()
    assert back.count == len(records) and back.last_seq == first + len(records) - 1


def test_crc_sees_record_boundaries() -> None:
    a = wire.Data.build("s", 1, 1, [b"ab", b"c"])
    b = wire.Data.build("s", 1, 1, [b"a", b"bc"])
    assert a.crcs != b.crcs
    forged = wire.Data("s", 1, 1, (b"a", b"bc"), a.crcs)
    assert not wire.decode(wire.encode(forged)).crc_ok()  # type: ignore[union-attr]


def test_data_carries_the_accept_time_crcs_not_ones_computed_at_send() -> None:
    """A record changed after it was accepted (on disk, in memory) fails at the cloud."""
    accepted = [b"temp=21.5", b"temp=21.6"]
    crcs = [zlib.crc32(r) for r in accepted]
    sent = wire.Data.build("s", 1, 1, [accepted[0], b"temp=91.6"], crcs)
    back = wire.decode(wire.encode(sent))
    assert isinstance(back, wire.Data) and back.crcs == tuple(crcs) and not back.crc_ok()
    assert wire.Data.build("s", 1, 1, accepted, crcs).crc_ok()


@pytest.mark.parametrize("crcs", [[1], [1, 2, 3], [-1, 0], [1 << 32, 0], [True, 0], ["x", 0]])
def test_data_crcs_are_validated(crcs: list[object]) -> None:
    body = {"v": V, "stream": "s", "epoch": 1, "first_seq": 1, "count": 2, "crcs": crcs,
            "records": [b"a", b"b"]}  # fmt: skip
    with pytest.raises(wire.WireError, match="crcs"):
        wire.decode(_frames(b"DATA", body))


V = wire.PROTOCOL_VERSION


def _frames(tag: bytes, body: object) -> list[bytes]:
    return [tag, msgpack.packb(body, use_bin_type=True)]


def test_other_version_is_a_version_error() -> None:
    with pytest.raises(wire.VersionError, match="version 1"):  # v1 DATA had no per-record CRCs
        wire.decode(_frames(b"ACK", {"v": 1, "stream": "s", "epoch": 1, "hw": 1, "credit": 1}))


@pytest.mark.parametrize(
    "frames, match",
    [
        ([b"ACK"], "expected 2 frames"),
        ([b"ACK", b"x", b"y"], "expected 2 frames"),
        ([b"ACK", b"\xc1\xc1"], "not valid msgpack"),
        (_frames(b"ACK", [1, 2]), "expected a map"),
        (_frames(b"ACK", {"stream": "s"}), "protocol version"),
        (_frames(b"ACK", {"v": "1"}), "protocol version"),
        (_frames(b"BOGUS", {"v": V}), "unknown message type"),
        (_frames(b"ACK", {"v": V, "stream": "s", "epoch": 1, "hw": 1}), "missing field 'credit'"),
        (_frames(b"ACK", {"v": V, "stream": "s", "epoch": 0, "hw": 1, "credit": 1}), "epoch"),
        (_frames(b"ACK", {"v": V, "stream": "", "epoch": 1, "hw": 1, "credit": 1}), "stream name"),
        (_frames(b"ACK", {"v": V, "stream": "s", "epoch": 1, "hw": -1, "credit": 1}), "hw"),
        (_frames(b"ACK", {"v": V, "stream": "s", "epoch": 1, "hw": True, "credit": 1}), "hw"),
        (_frames(b"NACK", {"v": V, "stream": "s", "epoch": 1, "expected": 1 << 63}), "expected"),
        (_frames(b"HELLO", {"v": V, "gateway": "g", "streams": {"s": "x"}}), "streams"),
        (_frames(b"HELLO", {"v": V, "gateway": "g", "streams": {b"s": 1}}), "stream name"),
        (_frames(b"WELCOME", {"v": V, "hw": {"s": [1]}, "credit": 1}), "epoch, hw"),
        (
            _frames(
                b"DATA",
                {
                    "v": V,
                    "stream": "s",
                    "epoch": 1,
                    "first_seq": 1,
                    "count": 2,
                    "crcs": [0],
                    "records": [b"x"],
                },
            ),
            "count 2 but 1 records",
        ),
        (
            _frames(
                b"DATA",
                {
                    "v": V,
                    "stream": "s",
                    "epoch": 1,
                    "first_seq": 1,
                    "count": 1,
                    "crcs": [0],
                    "records": ["text"],
                },
            ),
            "must all be bin",
        ),
        (
            _frames(
                b"DATA",
                {
                    "v": V,
                    "stream": "s",
                    "epoch": 1,
                    "first_seq": 0,
                    "count": 1,
                    "crcs": [0],
                    "records": [b"x"],
                },
            ),
            "first_seq",
        ),
    ],
)
def test_bad_messages_rejected(frames: list[bytes], match: str) -> None:
    with pytest.raises(wire.WireError, match=match):
        wire.decode(frames)


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_wire_error(body: bytes) -> None:
    for tag in (b"DATA", b"ACK", b"HELLO", b"WELCOME", b"NACK", b"ERROR"):
        try:
            wire.decode([tag, body])
        except wire.WireError:
            pass


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        wire.encode("nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (_frames(b"ACK", {"v": V, "stream": "a b", "epoch": 1, "hw": 1, "credit": 1}), "stream"),
        (_frames(b"ACK", {"v": V, "stream": "x" * 65, "epoch": 1, "hw": 1, "credit": 1}), "64"),
        (_frames(b"NACK", {"v": V, "stream": "\x1b[2J", "epoch": 1, "expected": 1}), "stream"),
        (_frames(b"HELLO", {"v": V, "gateway": "g", "streams": {f"s{i}": 1 for i in range(1025)}}),
         "at most 1024"),
        (_frames(b"HELLO", {"v": V, "gateway": "g w", "streams": {}}), "gateway id"),
        (_frames(b"HELLO", {"v": V, "gateway": "g" * 129, "streams": {}}), "gateway id"),
        (_frames(b"DROP", {"v": V, "stream": "s", "epoch": 1, "from": 1, "to": 2,
                           "reason": "x" * 1000}), "reason"),
    ],
)  # fmt: skip
def test_peer_controlled_names_are_bounded(frames: list[bytes], match: str) -> None:
    with pytest.raises(wire.WireError, match=match) as err:
        wire.decode(frames)
    assert len(str(err.value)) < 300  # peer values are quoted cut short


def test_long_garbage_is_quoted_cut_short_in_errors() -> None:
    for frames in ([b"X" * 100_000, b"\x81\xa1v\x01"], [b"ACK", b"\xc1" * 100_000]):
        with pytest.raises(wire.WireError) as err:
            wire.decode(frames)
        assert len(str(err.value)) < 300
    assert wire.check_stream_name("site-1/line_2.temp:x") == "site-1/line_2.temp:x"
