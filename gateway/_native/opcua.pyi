"""Type stub of the compiled OPC UA decoder (native/opcua.pyx); see gateway._pure.opcua."""

from collections.abc import Iterable

import numpy as np

from gateway._pure.opcua import max_rows as max_rows
from gateway._pure.opcua import quality_of as quality_of
from gateway._pure.opcua import ticks_to_epoch as ticks_to_epoch

_Bytes = bytes | bytearray | memoryview

GOOD: int
UNCERTAIN: int
BAD: int
MAX_ARRAY: int
MAX_DEPTH: int
PUBLISH_RESPONSE: int
READ_RESPONSE: int
SERVICE_FAULT: int
DATA_CHANGE: int
EVENT_LIST: int
STATUS_CHANGE: int

class NotificationDecoder:
    n_handles: int
    by_handle: dict[int, int]
    service_result: int
    request_handle: int
    subscription_id: int
    sequence_number: int
    publish_time: float
    more_notifications: bool
    available_sequence_numbers: list[int]
    status_change: int
    last_events: int
    last_unknown: int
    last_other: list[tuple[int, int, int, int]]
    def __init__(self, handles: Iterable[tuple[int, int]]) -> None: ...
    def decode_publish(
        self,
        data: _Bytes,
        points: np.ndarray,
        values: np.ndarray,
        source_ts: np.ndarray,
        server_ts: np.ndarray,
        quality: np.ndarray,
    ) -> int: ...
    def decode_read(
        self,
        data: _Bytes,
        ids: np.ndarray,
        points: np.ndarray,
        values: np.ndarray,
        source_ts: np.ndarray,
        server_ts: np.ndarray,
        quality: np.ndarray,
    ) -> int: ...
