"""A cloud store file deleted or replaced under a running receiver, and what follows.

The store notices before it answers (:class:`~gateway.uplink.store.StoreReplaced`), so nothing is
acknowledged from the lost file after that point. What the lost file had acknowledged, the
gateways have deleted: it cannot be resent. :func:`record_lost` writes it into the new store as
``store_lost`` gaps, so each stream's hw continues (the gateway resends only what it still has,
in the same epoch) and the loss is stored and published like any announced gap, not silent.
"""

from __future__ import annotations

from gateway.uplink.store import STORE_LOST, CloudStore, StreamStatus

#: (gateway, stream, epoch, first, last) of one recorded loss.
LostRange = tuple[str, str, int, int, int]


def record_lost(
    store: CloudStore, lost: list[StreamStatus], unacked: tuple[str, str, int, int] | None
) -> list[LostRange]:
    """Record what ``lost`` (the old file's streams) had acknowledged beyond ``store``'s hw.

    ``unacked`` is the commit that noticed the loss: it went into the old file but was never
    acknowledged, so the gateway still has it and its range is not lost. Runs on the store
    thread.
    """
    gaps: list[LostRange] = []
    for st in lost:
        acked = st.hw
        if unacked is not None and (st.gateway, st.stream, st.epoch) == unacked[:3]:
            acked = unacked[3]
        have = store.hw(st.gateway, st.stream, st.epoch)
        if acked > have:
            store.drop(st.gateway, st.stream, st.epoch, have + 1, acked, STORE_LOST)
            gaps.append((st.gateway, st.stream, st.epoch, have + 1, acked))
    return gaps
