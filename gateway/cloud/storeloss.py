"""A cloud store file deleted or replaced under a running receiver, and what follows.

The store notices before it answers (:class:`~gateway.cloud.store.StoreReplaced`), so nothing is
acknowledged from the lost file after that point. What the lost file had acknowledged, the
gateways have deleted: it cannot be resent. :func:`record_lost` writes it into the new store as
``store_lost`` gaps, so each stream's hw continues (the gateway resends only what it still has,
in the same epoch) and the loss is stored and published like any announced gap, not silent.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.cloud.store import STORE_LOST, CloudStore, StreamStatus

#: (gateway, stream, epoch, first, last) of one recorded loss.
LostRange = tuple[str, str, int, int, int]


def record_lost(
    store: CloudStore, lost: list[StreamStatus], unacked: Sequence[tuple[str, str, int, int]]
) -> list[LostRange]:
    """Record what ``lost`` (the old file's streams) had acknowledged beyond ``store``'s hw.

    ``unacked`` is the (group) commit that noticed the loss, per stream with its hw before: it
    went into the old file but was never acknowledged, so the gateway still has it and its range
    is not lost. Runs on the store thread.
    """
    before = {(g, s, e): hw for g, s, e, hw in unacked}
    gaps: list[LostRange] = []
    for st in lost:
        acked = before.get((st.gateway, st.stream, st.epoch), st.hw)
        have = store.hw(st.gateway, st.stream, st.epoch)
        if acked > have:
            store.drop(st.gateway, st.stream, st.epoch, have + 1, acked, STORE_LOST)
            gaps.append((st.gateway, st.stream, st.epoch, have + 1, acked))
    return gaps
