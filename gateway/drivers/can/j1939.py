"""J1939 transport protocol (TP.CM / TP.DT): BAM and RTS/CTS reassembly, and DM1 trouble codes.

Multi-packet messages (up to 1785 bytes) arrive as a connection-management frame (PGN 0xEC00)
announcing size, packet count and the carried PGN, then numbered data frames (PGN 0xEB00,
7 bytes each). BAM is broadcast and unacknowledged; RTS/CTS is addressed, and the receiver
paces it with CTS and confirms with End-of-Message ACK. Sessions are keyed by (source,
destination), bounded in number, and dropped on timeout (T1 750 ms between packets) or on a
sequence gap, so a lost frame costs one message, never memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

PGN_TP_CM = 0xEC00
PGN_TP_DT = 0xEB00
PGN_DM1 = 0xFECA
CM_RTS, CM_CTS, CM_EOM_ACK, CM_BAM, CM_ABORT = 16, 17, 19, 32, 255
T1 = 0.75  # s between data packets before a session is abandoned
MAX_SESSIONS = 64


@dataclass
class _Session:
    pgn: int
    size: int
    packets: int
    rts: bool
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    next_seq: int = 1


class TransportReassembler:
    """Feeds TP.CM/TP.DT frames; calls ``on_message(pgn, source, dest, payload)`` when whole.

    ``send(can_id, data)`` transmits CTS / EOM ACK for RTS sessions addressed to ``address``
    (None: listen only, RTS sessions to other addresses are followed passively).
    """

    def __init__(
        self,
        on_message: Callable[[int, int, int, bytes], None],
        send: Callable[[int, bytes], None] | None = None,
        address: int | None = None,
    ) -> None:
        self.on_message = on_message
        self.send = send
        self.address = address
        self.sessions: dict[tuple[int, int], _Session] = {}
        self.completed = self.aborted = self.timeouts = 0

    def _reply(self, dest: int, data: bytes) -> None:
        if self.send is not None and self.address is not None:
            self.send((7 << 26) | (PGN_TP_CM << 8) | (dest << 8) | self.address, data)

    def connection(self, source: int, dest: int, data: bytes, now: float) -> None:
        if len(data) < 8:
            return
        ctrl = data[0]
        pgn = data[5] | (data[6] << 8) | (data[7] << 16)
        key = (source, dest)
        if ctrl in (CM_BAM, CM_RTS):
            size, packets = data[1] | (data[2] << 8), data[3]
            if not 9 <= size <= 1785 or packets != (size + 6) // 7:
                return
            if key not in self.sessions and len(self.sessions) >= MAX_SESSIONS:
                self.expire(now, force=True)
            self.sessions[key] = _Session(pgn, size, packets, ctrl == CM_RTS, now + T1)
            if ctrl == CM_RTS and dest == self.address:
                # CTS: all packets at once, starting with 1.
                self._reply(source, bytes((CM_CTS, packets, 1, 0xFF, 0xFF)) + data[5:8])
        elif ctrl == CM_ABORT and key in self.sessions:
            del self.sessions[key]
            self.aborted += 1

    def data(self, source: int, dest: int, data: bytes, now: float) -> None:
        s = self.sessions.get((source, dest))
        if s is None or not data:
            return
        if data[0] != s.next_seq or now > s.deadline:
            del self.sessions[(source, dest)]
            self.aborted += 1
            return
        s.data += data[1:8]
        s.next_seq += 1
        s.deadline = now + T1
        if s.next_seq > s.packets:
            del self.sessions[(source, dest)]
            self.completed += 1
            payload = bytes(s.data[: s.size])
            if s.rts and dest == self.address:
                self._reply(source, bytes((CM_EOM_ACK, s.size & 0xFF, s.size >> 8, s.packets, 0xFF))
                            + s.pgn.to_bytes(3, "little"))  # fmt: skip
            self.on_message(s.pgn, source, dest, payload)

    def expire(self, now: float, force: bool = False) -> None:
        """Drop sessions past their deadline (and the oldest one when ``force``)."""
        for key in [k for k, s in self.sessions.items() if s.deadline < now]:
            del self.sessions[key]
            self.timeouts += 1
        if force and len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions, key=lambda k: self.sessions[k].deadline)
            del self.sessions[oldest]
            self.timeouts += 1
