"""Issue 15: the receiver commits many DATA messages per transaction (one fsync), and still sends
an ACK only once the records it acknowledges are stored. Real ZeroMQ, real SQLite."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pg_support import StoreMaker
from uplink_support import RawPeer, bounded, run, running_receiver

from gateway.cloud.store import CommitItem, SequenceGap, SQLiteCloudStore
from gateway.uplink import wire


class SlowStore(SQLiteCloudStore):
    """A store whose transactions take ``delay`` s (a slow fsync) and are counted; ``gate``
    holds them until set."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(str(path))
        self.delay = delay
        self.transactions = 0
        self.gate = threading.Event()
        self.gate.set()

    def _slow(self) -> None:
        self.transactions += 1
        assert self.gate.wait(10), "test gate never opened"
        time.sleep(self.delay)

    def commit(
        self, gateway: str, stream: str, epoch: int, first_seq: int, payloads: Sequence[bytes]
    ) -> int:
        self._slow()
        return super().commit(gateway, stream, epoch, first_seq, payloads)

    def commit_many(self, items: Sequence[CommitItem]) -> list[int | SequenceGap]:
        self._slow()
        return super().commit_many(items)


def test_many_data_messages_share_a_commit_and_acks_follow_it_in_order(tmp_path: Path) -> None:
    store = SlowStore(tmp_path / "cloud.db", delay=0.02)
    n = 200

    async def scenario() -> None:
        async with running_receiver(store, pub_bind=None) as rx:
            assert rx.endpoint
            peer = RawPeer(rx.endpoint)
            try:
                welcome = await peer.call(wire.Hello("g", {"s": 1}))
                assert isinstance(welcome, wire.Welcome)
                # ACK only after the commit: nothing comes back while the store is held.
                store.gate.clear()
                await peer.sock.send_multipart(wire.encode(wire.Data.build("s", 1, 1, [b"r1"])))
                early = asyncio.ensure_future(peer.sock.recv_multipart())
                done, _ = await asyncio.wait({early}, timeout=0.3)
                assert not done, "an ACK was sent before its records were committed"
                store.gate.set()
                ack = wire.decode(await bounded(early, "the ACK once the commit is done"))
                assert ack == wire.Ack("s", 1, 1, rx.credit)
                # A burst without waiting for ACKs, with a duplicate and a hole in it.
                msgs = [wire.Data.build("s", 1, seq, [b"r%d" % seq]) for seq in range(2, n + 1)]
                msgs.insert(50, wire.Data.build("s", 1, 10, [b"r10"]))  # duplicate
                msgs.insert(80, wire.Data.build("s", 1, n + 50, [b"hole"]))  # beyond hw + 1
                for m in msgs:
                    await peer.sock.send_multipart(wire.encode(m))
                replies = [
                    wire.decode(await bounded(peer.sock.recv_multipart(), f"reply {i}"))
                    for i in range(len(msgs))
                ]
            finally:
                peer.close()
            counters = rx.counters()
            # In arrival order: each ACK names exactly what was stored up to that message.
            expected: list[wire.Message] = [
                wire.Ack("s", 1, seq, 10000) for seq in range(2, n + 1)
            ]  # fmt: skip
            expected.insert(50, wire.Ack("s", 1, 51, 10000))  # the duplicate: hw at that point
            expected.insert(80, wire.Nack("s", 1, 81))  # the hole: expected = hw + 1 at that point
            assert replies == expected
            assert [r.payload for r in store.records("g", "s", 1)] == [
                b"r%d" % seq for seq in range(1, n + 1)
            ]
            # Group commit: far fewer transactions than messages.
            assert store.transactions < n / 4, (store.transactions, counters)
            assert counters["group_messages"] == n
            assert counters["group_commits"] == store.transactions

    run(scenario(), timeout=60)


def test_commit_many_is_one_transaction_with_per_item_results(make_store: StoreMaker) -> None:
    with make_store("c.db") as store:
        store.commit("g", "s", 1, 1, [b"a"])
        results = store.commit_many(
            [
                ("g", "s", 1, 1, [b"a", b"b"]),  # overlap: b is new
                ("g", "s", 1, 5, [b"e"]),  # hole: not stored
                ("g", "s", 1, 3, [b"c"]),
                ("g", "t", 2, 1, [b"x", b"y"]),
                ("g", "s", 1, 2, [b"b"]),  # pure duplicate
            ]
        )
        assert results[0] == 2 and results[2] == 3 and results[3] == 2 and results[4] == 3
        assert isinstance(results[1], SequenceGap) and results[1].hw == 2
        assert [r.payload for r in store.records("g", "s", 1)] == [b"a", b"b", b"c"]
        assert store.hw("g", "t", 2) == 2
        assert store.commit_many([("g", "s", 1, 1, [b"a"])]) == [3]  # nothing new: no write
