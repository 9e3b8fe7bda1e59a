"""Type stub of the compiled CAN decoder (native/can.pyx); see gateway._pure.can."""

from collections.abc import Sequence

import numpy as np

EXTENDED: int

def j1939_key(can_id: int) -> int: ...
def dm1_dtcs(payload: bytes) -> list[tuple[int, int, int]]: ...
def split_j1939(
    ids: np.ndarray, prio: np.ndarray, pgn: np.ndarray, sa: np.ndarray, da: np.ndarray
) -> None: ...

class SignalDecoder:
    @property
    def n_signals(self) -> int: ...
    @property
    def last_unmatched(self) -> int: ...
    @property
    def last_short(self) -> int: ...
    @property
    def j1939(self) -> bool: ...
    @property
    def signals(self) -> list[tuple[int, int, int, bool, bool, float, float, int]]: ...
    def __init__(
        self,
        signals: Sequence[tuple[int, int, int, bool, bool, float, float, int]],
        j1939: bool = False,
    ) -> None: ...
    def key(self, can_id: int) -> int: ...
    def decode(
        self,
        ids: np.ndarray,
        data: np.ndarray,
        dlc: np.ndarray,
        rows: np.ndarray,
        points: np.ndarray,
        values: np.ndarray,
    ) -> int: ...
