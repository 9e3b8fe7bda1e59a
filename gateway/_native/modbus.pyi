"""Type stub of the compiled Modbus core (native/modbus.pyx); see gateway._pure.modbus."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

_Bytes = bytes | bytearray | memoryview

T_INT16: int
T_UINT16: int
T_INT32: int
T_UINT32: int
T_FLOAT32: int
T_FLOAT64: int
TYPE_CODES: dict[str, int]
TYPE_WORDS: dict[int, int]
WORD_LITTLE: int
BYTE_LITTLE: int
MBAP_MAX_LENGTH: int

def crc16(data: _Bytes) -> int: ...
def order_flags(word_order: str, byte_order: str) -> int: ...
def build_read_request(tid: int, unit: int, function: int, address: int, count: int) -> bytes: ...
def build_write_single_coil(tid: int, unit: int, address: int, value: bool) -> bytes: ...
def build_write_single_register(tid: int, unit: int, address: int, value: int) -> bytes: ...
def build_write_multiple_coils(
    tid: int, unit: int, address: int, values: Sequence[bool]
) -> bytes: ...
def build_write_multiple_registers(
    tid: int, unit: int, address: int, values: Sequence[int]
) -> bytes: ...
def encode_value(
    type_code: int, flags: int, scale: float, bias: float, value: float
) -> list[int]: ...

class MbapFramer:
    @property
    def frames(self) -> int: ...
    @property
    def bad_frames(self) -> int: ...
    @property
    def discarded_bytes(self) -> int: ...
    def __init__(self, max_adu: int = 260) -> None: ...
    def feed(self, data: _Bytes) -> list[tuple[int, int, int, bytes]]: ...
    def reset(self) -> None: ...

class RtuFramer:
    @property
    def role(self) -> str: ...
    @property
    def frames(self) -> int: ...
    @property
    def crc_errors(self) -> int: ...
    @property
    def discarded_bytes(self) -> int: ...
    def __init__(self, role: str = "response") -> None: ...
    def feed(self, data: _Bytes) -> list[Any]: ...
    def reset(self) -> None: ...

class RegisterDecoder:
    @property
    def n_points(self) -> int: ...
    @property
    def min_registers(self) -> int: ...
    @property
    def last_skipped(self) -> int: ...
    @property
    def last_consumed(self) -> int: ...
    def __init__(
        self,
        offsets: Sequence[int],
        types: Sequence[int],
        flags: Sequence[int],
        scales: Sequence[float],
        biases: Sequence[float],
    ) -> None: ...
    def decode(self, registers: _Bytes, out: npt.NDArray[np.float64]) -> None: ...
    def decode_many(self, blocks: _Bytes, n_blocks: int, out: npt.NDArray[np.float64]) -> None: ...

def unpack_bits(body: _Bytes, count: int, out: npt.NDArray[np.float64]) -> None: ...
def decode_stream(
    stream: _Bytes,
    decoder: RegisterDecoder,
    out: npt.NDArray[np.float64],
    tids: npt.NDArray[np.uint16],
) -> int: ...
def decode_rtu_stream(
    stream: _Bytes,
    decoder: RegisterDecoder,
    out: npt.NDArray[np.float64],
    units: npt.NDArray[np.uint8],
) -> int: ...

class ResponseMatcher:
    n_slots: int
    n_values: int
    last_consumed: int
    last_stale: int
    last_bad: int
    def __init__(
        self,
        functions: Sequence[int],
        byte_counts: Sequence[int],
        decoders: Sequence[RegisterDecoder | None],
        offsets: Sequence[int],
    ) -> None: ...
    def feed(
        self,
        stream: _Bytes,
        unit: int,
        tids: npt.NDArray[np.intc],
        status: npt.NDArray[np.int8],
        spans: npt.NDArray[np.intp],
        out: npt.NDArray[np.float64],
    ) -> int: ...
