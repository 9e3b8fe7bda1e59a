"""Modbus core (gateway.impl.modbus, compiled or pure per GATEWAY_PUREPYTHON) on known vectors."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from gateway.impl import modbus as mb

ORDERS = {"ABCD": (0, "big", "big"), "CDAB": (1, "little", "big")}
ORDERS |= {"BADC": (2, "big", "little"), "DCBA": (3, "little", "little")}

# Hand-computed wire bytes of each value in ABCD order, and the byte permutation of each order.
VECTORS = [
    ("int16", -2, "fffe"),
    ("uint16", 0xABCD, "abcd"),
    ("int32", -123456789, "f8a432eb"),
    ("uint32", 3000000000, "b2d05e00"),
    ("float32", 123.456, "42f6e979"),  # IEEE-754 of 123.456 (rounded to float32)
    ("float64", -1234.5678, "c0934a456d5cfaad"),
]
PERM = {
    1: {"ABCD": [0, 1], "CDAB": [0, 1], "BADC": [1, 0], "DCBA": [1, 0]},
    2: {"ABCD": [0, 1, 2, 3], "CDAB": [2, 3, 0, 1], "BADC": [1, 0, 3, 2], "DCBA": [3, 2, 1, 0]},
    4: {
        "ABCD": [0, 1, 2, 3, 4, 5, 6, 7],
        "CDAB": [6, 7, 4, 5, 2, 3, 0, 1],
        "BADC": [1, 0, 3, 2, 5, 4, 7, 6],
        "DCBA": [7, 6, 5, 4, 3, 2, 1, 0],
    },
}


def crc_frame(frame: bytes) -> bytes:
    crc = mb.crc16(frame)
    return frame + bytes([crc & 0xFF, crc >> 8])


def mbap_response(tid: int, fc: int, payload: bytes, unit: int = 1) -> bytes:
    return struct.pack(">HHHBB", tid, 0, len(payload) + 2, unit, fc) + payload


def read_response(tid: int, registers: bytes, fc: int = 3) -> bytes:
    return mbap_response(tid, fc, bytes([len(registers)]) + registers)


def decode_one(type_name: str, order: str, wire: bytes, scale=1.0, bias=0.0) -> float:
    flags = ORDERS[order][0]
    dec = mb.RegisterDecoder([0], [mb.TYPE_CODES[type_name]], [flags], [scale], [bias])
    out = np.zeros(1)
    dec.decode(wire, out)
    return float(out[0])


def test_constants() -> None:
    assert (mb.T_INT16, mb.T_UINT16, mb.T_INT32, mb.T_UINT32, mb.T_FLOAT32, mb.T_FLOAT64) == (
        0,
        1,
        2,
        3,
        4,
        5,
    )
    assert mb.TYPE_WORDS == {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 4}
    assert mb.TYPE_CODES["float32"] == mb.T_FLOAT32 and len(mb.TYPE_CODES) == 6
    for name, (flags, word, byte) in ORDERS.items():
        assert mb.order_flags(word, byte) == flags, name
    with pytest.raises(ValueError):
        mb.order_flags("middle", "big")


def test_crc16_known_vectors() -> None:
    assert mb.crc16(b"\x01\x03\x00\x00\x00\x0a") == 0xCDC5  # on the wire: C5 CD
    assert crc_frame(b"\x01\x03\x00\x00\x00\x0a")[-2:] == b"\xc5\xcd"
    assert mb.crc16(b"\x11\x03\x00\x6b\x00\x03") == 0x8776  # Modbus spec example: 76 87
    assert mb.crc16(b"") == 0xFFFF
    assert mb.crc16(bytearray(b"123456789")) == mb.crc16(memoryview(b"123456789")) == 0x4B37


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize(("type_name", "value", "abcd"), VECTORS)
def test_decode_every_type_and_order(type_name: str, value: float, abcd: str, order: str) -> None:
    canonical = bytes.fromhex(abcd)
    wire = bytes(canonical[i] for i in PERM[len(canonical) // 2][order])
    expected = struct.unpack(">f", canonical)[0] if type_name == "float32" else value
    assert decode_one(type_name, order, wire) == expected
    # encode_value is the inverse: the same words, in wire order.
    flags = ORDERS[order][0]
    words = mb.encode_value(mb.TYPE_CODES[type_name], flags, 1.0, 0.0, value)
    assert struct.pack(f">{len(words)}H", *words) == wire


def test_float32_123_456_by_hand() -> None:
    assert decode_one("float32", "ABCD", bytes.fromhex("42f6e979")) == pytest.approx(123.456)
    assert decode_one("float32", "CDAB", bytes.fromhex("e97942f6")) == pytest.approx(123.456)
    assert decode_one("float32", "BADC", bytes.fromhex("f64279e9")) == pytest.approx(123.456)
    assert decode_one("float32", "DCBA", bytes.fromhex("79e9f642")) == pytest.approx(123.456)


def test_scale_bias_and_offsets() -> None:
    regs = struct.pack(">hHfiId", -100, 500, 2.5, -7, 7, 1.0e10)
    dec = mb.RegisterDecoder(
        [0, 1, 2, 4, 6, 8],
        [0, 1, 4, 2, 3, 5],
        [0] * 6,
        [0.1, 2, -1, 1, 0.5, 1e-10],
        [1, 0, 0, 3, 0, -1],
    )
    assert (dec.n_points, dec.min_registers) == (6, 12)
    out = np.full(8, -99.0)
    dec.decode(regs, out)
    assert out[:6].tolist() == [-100 * 0.1 + 1, 1000.0, -2.5, -4.0, 3.5, 1.0e10 * 1e-10 - 1]
    assert out[6:].tolist() == [-99.0, -99.0]  # only n_points written
    with pytest.raises(ValueError):
        dec.decode(regs[:-1], out)


def test_nan_inf_pass_through() -> None:
    for value in (math.inf, -math.inf):
        assert decode_one("float32", "ABCD", struct.pack(">f", value)) == value
        assert decode_one("float64", "DCBA", struct.pack("<d", value), scale=2.0) == value
    assert math.isnan(decode_one("float32", "ABCD", b"\x7f\xc0\x00\x00"))


def test_decoder_validates_arguments() -> None:
    with pytest.raises(ValueError):
        mb.RegisterDecoder([0], [9], [0], [1.0], [0.0])
    with pytest.raises(ValueError):
        mb.RegisterDecoder([0], [0], [4], [1.0], [0.0])
    with pytest.raises(ValueError):
        mb.RegisterDecoder([0, 1], [0], [0], [1.0], [0.0])
    empty = mb.RegisterDecoder([], [], [], [], [])
    assert (empty.n_points, empty.min_registers) == (0, 0)
    empty.decode(b"", np.zeros(0))


def test_decode_many_and_strided_out() -> None:
    dec = mb.RegisterDecoder([0, 1], [0, 4], [0, 1], [1.0, 1.0], [0.0, 0.0])
    blocks = b"".join(
        struct.pack(">h", i) + struct.pack(">f", i / 4)[2:] + struct.pack(">f", i / 4)[:2]
        for i in range(5)
    )
    out = np.zeros((5, 2))
    dec.decode_many(blocks, 5, out)
    assert out.tolist() == [[i, i / 4] for i in range(5)]
    wide = np.zeros((2, 5))
    dec.decode_many(blocks, 5, wide.T)  # Fortran-ordered view
    assert wide.T.tolist() == out.tolist()
    with pytest.raises(ValueError):
        dec.decode_many(blocks[:-1], 5, out)
    with pytest.raises(ValueError):
        dec.decode_many(blocks, 5, np.zeros((4, 2)))
    dec.decode_many(b"", 0, out)


def test_unpack_bits() -> None:
    out = np.full(12, 7.0)
    mb.unpack_bits(b"\xcd\x01", 10, out)
    assert out.tolist() == [1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 7, 7]
    with pytest.raises(ValueError):
        mb.unpack_bits(b"\x01", 9, out)


def test_encode_value_rounding_and_ranges() -> None:
    assert mb.encode_value(mb.T_INT16, 0, 1.0, 0.0, 2.5) == [2]  # half to even, like round()
    assert mb.encode_value(mb.T_INT16, 0, 1.0, 0.0, 3.5) == [4]
    assert mb.encode_value(mb.T_INT16, 0, 1.0, 0.0, -2.5) == [0xFFFE]
    assert mb.encode_value(mb.T_UINT16, 2, 0.1, 20.0, 30.0) == [0x6400]  # raw 100, bytes swapped
    assert mb.encode_value(mb.T_UINT32, 1, 1.0, 0.0, 0x12345678) == [0x5678, 0x1234]
    assert mb.encode_value(mb.T_INT32, 0, 1.0, 0.0, -1) == [0xFFFF, 0xFFFF]
    for args in [
        (mb.T_INT16, 32767.5),
        (mb.T_UINT16, -0.6),
        (mb.T_UINT32, 2.0**32),
        (mb.T_INT32, math.nan),
        (mb.T_INT16, math.inf),
        (mb.T_FLOAT32, 1e39),
    ]:
        with pytest.raises(ValueError):
            mb.encode_value(args[0], 0, 1.0, 0.0, args[1])
    with pytest.raises(ValueError):
        mb.encode_value(mb.T_INT16, 0, 0.0, 0.0, 1.0)
    assert mb.encode_value(mb.T_UINT16, 0, 1.0, 0.0, -0.4) == [0]
    assert mb.encode_value(mb.T_FLOAT32, 0, 1.0, 0.0, math.inf) == [0x7F80, 0]
    assert mb.encode_value(mb.T_FLOAT32, 0, 1.0, 0.0, 3.4028235e38) == [0x7F7F, 0xFFFF]
    words = mb.encode_value(mb.T_FLOAT64, 3, 1.0, 0.0, math.nan)
    assert math.isnan(
        struct.unpack("<d", struct.pack("<4H", *[((w & 0xFF) << 8) | (w >> 8) for w in words]))[0]
    )


def test_request_builders() -> None:
    assert mb.build_read_request(1, 17, 3, 0x6B, 3).hex() == "00010000000611030" + "06b0003"
    assert mb.build_read_request(0xFFFF, 1, 1, 0, 2000)[-2:] == b"\x07\xd0"
    assert mb.build_write_single_coil(2, 1, 0xAC, True).hex() == "0002000000060105" + "00acff00"
    assert mb.build_write_single_coil(2, 1, 0xAC, False)[-2:] == b"\x00\x00"
    assert mb.build_write_single_register(3, 1, 1, 3).hex() == "000300000006010600010003"
    coils = [True, False, True, True, False, False, True, True, True, False]
    assert mb.build_write_multiple_coils(4, 1, 0x13, coils).hex() == (
        "000400000009010f0013000a02cd01"
    )
    assert mb.build_write_multiple_registers(5, 1, 1, [0x000A, 0x0102]).hex() == (
        "00050000000b01100001000204000a0102"
    )
    bad = [
        lambda: mb.build_read_request(1, 1, 5, 0, 1),
        lambda: mb.build_read_request(1, 1, 3, 0, 126),
        lambda: mb.build_read_request(1, 1, 3, 65535, 2),
        lambda: mb.build_read_request(65536, 1, 3, 0, 1),
        lambda: mb.build_read_request(1, 256, 3, 0, 1),
        lambda: mb.build_write_single_register(1, 1, 0, 65536),
        lambda: mb.build_write_multiple_registers(1, 1, 0, []),
        lambda: mb.build_write_multiple_registers(1, 1, 0, [0] * 124),
        lambda: mb.build_write_multiple_registers(1, 1, 0, [-1]),
        lambda: mb.build_write_multiple_coils(1, 1, 0, [True] * 1969),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()


def test_mbap_frames_split_at_every_position() -> None:
    stream = read_response(1, b"\x12\x34") + mbap_response(2, 0x83, b"\x02") + read_response(3, b"")
    expected = [(1, 1, 3, b"\x02\x12\x34"), (2, 1, 0x83, b"\x02"), (3, 1, 3, b"\x00")]
    for cut in range(len(stream) + 1):
        framer = mb.MbapFramer()
        frames = framer.feed(stream[:cut]) + framer.feed(memoryview(stream)[cut:])
        assert frames == expected, cut
        assert (framer.frames, framer.bad_frames, framer.discarded_bytes) == (3, 0, 0)
    framer = mb.MbapFramer()
    assert [f for b in stream for f in framer.feed(bytes([b]))] == expected


def test_mbap_bad_headers_resync() -> None:
    good = read_response(9, b"\x00\x01")
    framer = mb.MbapFramer(max_adu=260)
    bad_pid = b"\x00\x01\x00\x05\x00\x06\x01\x03"  # protocol id 5
    assert framer.feed(bad_pid + good) == [(9, 1, 3, b"\x02\x00\x01")]
    assert (framer.bad_frames, framer.discarded_bytes) == (1, len(bad_pid))
    too_long = b"\x00\x01\x00\x00\x01\x00"  # length 256 > 254
    too_short = b"\x00\x01\x00\x00\x00\x01"
    assert framer.feed(too_long + good + too_short + good)[1:] == [(9, 1, 3, b"\x02\x00\x01")]
    assert (framer.frames, framer.bad_frames, framer.discarded_bytes) == (3, 3, 2 * 6 + 8)
    small = mb.MbapFramer(max_adu=10)
    assert small.feed(read_response(1, b"\x00" * 4)) == []  # length 7 > 10 - 6
    assert small.bad_frames == 1


def test_mbap_reset_drops_partial_frame() -> None:
    framer = mb.MbapFramer()
    good = read_response(4, b"\xab\xcd")
    assert framer.feed(good[:7]) == []
    framer.reset()
    assert framer.feed(good) == [(4, 1, 3, b"\x02\xab\xcd")]
    assert framer.frames == 1


def test_decode_stream_skips_and_counts() -> None:
    dec = mb.RegisterDecoder([0, 1], [0, 1], [0, 0], [1.0, 1.0], [0.0, 0.0])
    stream = (
        read_response(1, b"\x00\x01\x00\x02")
        + b"\xff\xff\x55"  # garbage: one resync
        + mbap_response(2, 0x83, b"\x02")  # exception: skipped
        + read_response(3, b"\x00\x01")  # block too short: skipped
        + mbap_response(4, 3, b"\x05\x00\x01\x00\x02")  # byte count != length - 3: skipped
        + read_response(5, b"\xff\xff\x00\x07\x00\x00", fc=4)
        + read_response(6, b"\x00\x03\x00\x04")
        + read_response(7, b"\x00\x05\x00")[:-1]  # truncated tail
    )
    out = np.zeros((8, 2))
    tids = np.zeros(8, np.uint16)
    assert mb.decode_stream(stream, dec, out, tids) == 3
    assert tids[:3].tolist() == [1, 5, 6]
    assert out[:3].tolist() == [[1, 2], [-1, 7], [3, 4]]
    assert dec.last_skipped == 4
    tail = len(read_response(7, b"\x00\x05\x00")) - 1
    assert dec.last_consumed == len(stream) - tail
    # A full `out` stops early; the caller resumes at last_consumed.
    assert mb.decode_stream(stream, dec, out[:1], tids) == 1
    assert dec.last_consumed == len(read_response(1, b"\x00\x01\x00\x02"))
    with pytest.raises(ValueError):
        mb.decode_stream(stream, dec, out, np.zeros(2, np.uint16))


def rtu_response(unit: int, fc: int, body: bytes) -> bytes:
    return crc_frame(bytes([unit, fc]) + body)


RTU_FRAMES = [
    (1, 3, b"\x04\x00\x0a\x00\x02"),
    (17, 1, b"\x01\x05"),
    (2, 0x83, b"\x02"),
    (3, 6, b"\x00\x01\x00\x03"),
    (4, 16, b"\x00\x01\x00\x02"),
]


def test_rtu_frames_split_at_every_position() -> None:
    stream = b"".join(rtu_response(*f) for f in RTU_FRAMES)
    for cut in range(len(stream) + 1):
        framer = mb.RtuFramer()
        frames = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert frames == RTU_FRAMES, cut
        assert (framer.frames, framer.crc_errors, framer.discarded_bytes) == (5, 0, 0)


def test_rtu_resync_after_garbage() -> None:
    frames = [rtu_response(*f) for f in RTU_FRAMES]
    corrupt = bytearray(frames[0])
    corrupt[4] ^= 0x40
    stream = b"\x00\xff\xfe" + frames[0] + bytes(corrupt) + frames[1] + b"\xf8" + frames[2]
    framer = mb.RtuFramer()
    assert framer.feed(stream) == RTU_FRAMES[:3]
    # The corrupt frame and one candidate inside it fail the CRC; every rejected byte is counted.
    assert (framer.frames, framer.crc_errors) == (3, 2)
    assert framer.discarded_bytes == 3 + len(corrupt) + 1


def test_rtu_garbage_announcing_long_frame_waits_until_reset() -> None:
    framer = mb.RtuFramer()
    good = rtu_response(*RTU_FRAMES[3])
    assert framer.feed(b"\x01\x03\xfa" + good) == []  # 255-byte frame announced: wait for it
    framer.reset()  # what a driver does after its response timeout
    assert framer.feed(good) == [RTU_FRAMES[3]]


def test_rtu_request_role() -> None:
    read = crc_frame(b"\x01\x03\x00\x00\x00\x0a")
    assert read[-2:] == b"\xc5\xcd"
    write = crc_frame(b"\x01\x10\x00\x01\x00\x02\x04\x00\x0a\x01\x02")
    framer = mb.RtuFramer("request")
    assert framer.role == "request"
    frames = framer.feed(b"\xff" + read + write[:5]) + framer.feed(write[5:])
    assert frames == [(1, 3, b"\x00\x00\x00\x0a"), (1, 16, b"\x00\x01\x00\x02\x04\x00\x0a\x01\x02")]
    assert (framer.frames, framer.discarded_bytes) == (2, 1)
    with pytest.raises(ValueError):
        mb.RtuFramer("master")


def test_pymodbus_convert_from_registers_agrees() -> None:
    mixin = pytest.importorskip("pymodbus.client.mixin").ModbusClientMixin
    dt = mixin.DATATYPE
    types = {"int16": dt.INT16, "uint16": dt.UINT16, "int32": dt.INT32}
    types |= {"uint32": dt.UINT32, "float32": dt.FLOAT32, "float64": dt.FLOAT64}
    rng = np.random.default_rng(7)
    for type_name, datatype in types.items():
        words = mb.TYPE_WORDS[mb.TYPE_CODES[type_name]]
        for order, (_, word_order, byte_order) in ORDERS.items():
            for _ in range(20):
                wire = rng.integers(0, 256, 2 * words, dtype=np.uint8).tobytes()
                regs = list(struct.unpack(f">{words}H", wire))
                if byte_order == "little":  # pymodbus has no byte order: swap it out first
                    regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
                ref = mixin.convert_from_registers(regs, datatype, word_order=word_order)
                got = decode_one(type_name, order, wire)
                assert got == ref or (math.isnan(got) and math.isnan(ref)), (type_name, order)
