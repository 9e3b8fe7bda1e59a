"""What the sender puts on the wire next for one stream, with the end-to-end check applied.

Records are read from the queue with their accept-time CRC. A record whose bytes no longer
match it (corrupted on disk) is never sent: its seqs go upstream as ``DROP{reason: "corrupt"}``.
Seqs that have neither a record nor a gap row were lost from the file (they were assigned, so
they had been accepted): ``DROP{reason: "lost"}``. Either way the cloud stores a gap, never a
wrong value, and the caller raises an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.uplink import wire
from gateway.uplink.queue import DurableQueue

DATA_MAX_RECORDS = 1000  # records per DATA message
DATA_MAX_BYTES = 1 << 20  # payload bytes per DATA message (a single larger record still goes)


@dataclass(frozen=True, slots=True)
class Next:
    """The next message for a stream; ``damage`` names a corrupt/lost range found just now."""

    msg: wire.Data | wire.Drop
    damage: str | None = None


def next_message(
    queue: DurableQueue, stream: str, epoch: int, next_send: int, next_seq: int, window: int
) -> Next | None:
    """DATA of up to ``window`` verified records from ``next_send`` on, or the DROP that covers
    ``next_send``; None when nothing is due (``next_send >= next_seq`` or no window)."""
    n = min(window, DATA_MAX_RECORDS, next_seq - next_send)
    if n <= 0:
        return None
    rows = queue.read_checked(stream, next_send - 1, n)
    if not rows or rows[0][0] != next_send:
        gap = queue.gap_at(stream, next_send)
        if gap is not None:  # a deliberate hole, or a loss already announced when found
            return Next(wire.Drop(stream, epoch, next_send, gap.last, gap.reason))
        last = rows[0][0] - 1 if rows else next_seq - 1
        after = queue.next_gap_first(stream, next_send)
        if after is not None:
            last = min(last, after - 1)
        return Next(wire.Drop(stream, epoch, next_send, last, "lost"), "lost")
    if rows[0][2] is None:
        last = next_send
        for seq, _, crc in rows[1:]:
            if crc is not None or seq != last + 1:
                break
            last = seq
        return Next(wire.Drop(stream, epoch, next_send, last, "corrupt"), "corrupt")
    payloads: list[bytes] = []
    crcs: list[int] = []
    size = 0
    expect = next_send
    for seq, payload, crc in rows:
        if crc is None or seq != expect or (payloads and size + len(payload) > DATA_MAX_BYTES):
            break
        payloads.append(payload)
        crcs.append(crc)
        size += len(payload)
        expect += 1
    return Next(wire.Data.build(stream, epoch, next_send, payloads, crcs))
