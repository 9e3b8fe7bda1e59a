"""Type stub of the compiled node frame codec (native/node_frame.pyx); see gateway._pure.node_frame."""


import numpy as np

_Bytes = bytes | bytearray | memoryview

VERSION: int
T_READINGS: int
T_ACK: int
T_WRITE: int
T_WRITE_ACK: int
V_BOOL: int
V_INT16: int
V_UINT16: int
V_INT32: int
V_UINT32: int
V_FLOAT32: int
V_FLOAT64: int
VALUE_TYPES: dict[str, int]
VALUE_SIZES: dict[int, int]
HEADER: int
MIN_FRAME: int
MAX_PAYLOAD: int

def cobs_encode(data: _Bytes) -> bytes: ...
def cobs_decode(data: _Bytes) -> bytes | None: ...
def encode_frame(type: int, node_id: int, seq: int, payload: _Bytes = b"") -> bytes: ...
def encode_readings(readings: list[tuple[int, int, float]]) -> bytes: ...
def decode_readings(payload: _Bytes, channels: np.ndarray, values: np.ndarray) -> int: ...

class NodeFrameParser:
    @property
    def max_encoded(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def crc_errors(self) -> int: ...
    @property
    def bad_frames(self) -> int: ...
    @property
    def discarded_bytes(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    def __init__(self, max_payload: int = 1024) -> None: ...
    def reset(self) -> None: ...
    def feed(self, data: _Bytes) -> list[tuple[int, int, int, bytes]]: ...
