"""CAN frame decoding, pure-Python twin of native/can.pyx.

Frames arrive as typed columns (``ids`` uint32 with bit 31 set for 29-bit ids, ``data`` uint8
rows of 8 bytes, ``dlc`` uint8). :class:`SignalDecoder` is compiled once from a DBC layout
(cantools parses the file; :mod:`gateway.drivers.can.dbc` turns it into the tuples below) and
extracts every mapped signal of a batch into ``(row, point, value)`` columns. J1939 ids split
into priority, PGN, source and destination in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EXTENDED = 0x80000000
#: Signal tuple: (message key, start bit, length, big_endian, signed, scale, offset, point id)
Signal = tuple[int, int, int, bool, bool, float, float, int]


def j1939_key(can_id: int) -> int:
    """Message key of a J1939 frame: its PGN (PDU1 keeps the destination out), extended flag."""
    pgn = (can_id >> 8) & 0x3FFFF
    if ((pgn >> 8) & 0xFF) < 240:
        pgn &= 0x3FF00
    return pgn | EXTENDED


def split_j1939(
    ids: np.ndarray, prio: np.ndarray, pgn: np.ndarray, sa: np.ndarray, da: np.ndarray
) -> None:
    """Priority, PGN, source address and destination (255 = global for PDU2) of each id."""
    for i in range(len(ids)):
        can_id = int(ids[i]) & 0x1FFFFFFF
        p = (can_id >> 8) & 0x3FFFF
        pf = (p >> 8) & 0xFF
        prio[i] = (can_id >> 26) & 7
        sa[i] = can_id & 0xFF
        if pf < 240:
            da[i] = p & 0xFF
            p &= 0x3FF00
        else:
            da[i] = 255
        pgn[i] = p


def _raw(data: bytes, start: int, length: int, big_endian: bool) -> int:
    if big_endian:
        be = int.from_bytes(data, "big")
        msb = (start // 8) * 8 + (7 - start % 8)
        shift = 64 - msb - length
        if shift < 0:
            return -1
        return (be >> shift) & ((1 << length) - 1)
    if start + length > 64:
        return -1
    return (int.from_bytes(data, "little") >> start) & ((1 << length) - 1)


class SignalDecoder:
    """Extract mapped signals from batches of frames (see the module docstring).

    Parameters
    ----------
    signals : the signals to extract; frames are matched on ``key``: the 29-bit id with bit 31
        set, or the 11-bit id, or (``j1939``) :func:`j1939_key` of the id.
    j1939 : match extended frames by PGN, whatever their source address and priority.
    """

    def __init__(self, signals: Sequence[Signal], j1939: bool = False) -> None:
        for key, start, length, _big, _signed, scale, _off, pid in signals:
            if not 1 <= length <= 64 or not 0 <= start <= 63 or pid < 0 or key < 0:
                raise ValueError(f"bad signal layout {(key, start, length, pid)}")
            if scale != scale:
                raise ValueError("scale must be a number")
        self.signals = list(signals)
        self.j1939 = j1939
        self.by_key: dict[int, list[Signal]] = {}
        for s in self.signals:
            self.by_key.setdefault(s[0], []).append(s)
        self.n_signals = len(self.signals)
        self.last_unmatched = 0
        self.last_short = 0

    def key(self, can_id: int) -> int:
        if self.j1939 and can_id & EXTENDED:
            return j1939_key(can_id & 0x1FFFFFFF)
        return can_id

    def decode(
        self, ids: np.ndarray, data: np.ndarray, dlc: np.ndarray, rows: np.ndarray,
        points: np.ndarray, values: np.ndarray,
    ) -> int:  # fmt: skip
        """Decode frames ``0..len(ids)``; write one (row, point, value) per signal found.

        Returns the number written; stops early when the outputs are full. Frames of unknown
        ids count in ``last_unmatched``; a signal that does not fit in the frame's ``dlc`` bytes
        is skipped and counts in ``last_short``.
        """
        n, cap = 0, min(len(rows), len(points), len(values))
        unmatched = short = 0
        for i in range(len(ids)):
            sigs = self.by_key.get(self.key(int(ids[i])))
            if sigs is None:
                unmatched += 1
                continue
            frame = bytes(data[i, :8])
            size = int(dlc[i])
            for _key, start, length, big, signed, scale, offset, pid in sigs:
                if n >= cap:
                    self.last_unmatched, self.last_short = unmatched, short
                    return n
                if not _fits(start, length, big, size):
                    short += 1
                    continue
                raw = _raw(frame, start, length, big)
                if signed and raw >> (length - 1):
                    raw -= 1 << length
                rows[n] = i
                points[n] = pid
                p = float(raw) * scale
                values[n] = p + offset
                n += 1
        self.last_unmatched, self.last_short = unmatched, short
        return n


def _fits(start: int, length: int, big: bool, size: int) -> bool:
    if big:
        msb = (start // 8) * 8 + (7 - start % 8)
        return msb + length <= 8 * size
    return start + length <= 8 * size


def dm1_dtcs(payload: bytes) -> list[tuple[int, int, int]]:
    """Active DTCs of a DM1 payload as (SPN, FMI, occurrence count); none for "no DTC"."""
    out = []
    for pos in range(2, len(payload) - 3, 4):
        b = payload[pos : pos + 4]
        spn = b[0] | (b[1] << 8) | ((b[2] & 0xE0) << 11)
        fmi = b[2] & 0x1F
        if spn == 0 and fmi == 0:
            continue
        out.append((spn, fmi, b[3] & 0x7F))
    return out
