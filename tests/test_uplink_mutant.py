"""Mutant check: a gateway that deletes records on SEND instead of on ACK must be caught.

The same scenario runs against the real Uplink and against a deliberately broken one (patched in
this test to drop each record from the queue as soon as its DATA is sent). A cloud endpoint that
welcomes the gateway and then swallows its DATA (a hung peer) forces the ack timeout and a
failover to a real receiver. The real uplink replays and the cloud gets everything; the mutant has
nothing left to replay, and the very check the other tests use (all records stored) fails.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from uplink_support import bounded, run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import UplinkConfig
from gateway.uplink import wire
from gateway.uplink.client import Uplink

N = 500


async def _black_hole(sock: zmq.asyncio.Socket) -> None:
    """WELCOME every HELLO, never ACK anything."""
    while True:
        ident, *frames = await sock.recv_multipart()
        msg = wire.decode(frames)
        if isinstance(msg, wire.Hello):
            welcome = wire.Welcome({s: (e, 0) for s, e in msg.streams.items()}, 100_000)
            await sock.send_multipart([ident, *wire.encode(welcome)])


async def _scenario(tmp_path: Path, mutant: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    if mutant:
        original = Uplink._send

        async def delete_on_send(self: Uplink, sock: zmq.asyncio.Socket, msg: wire.Message) -> None:
            await original(self, sock, msg)
            if isinstance(msg, wire.Data) and self._writer is not None:
                self._writer.ack(msg.stream, msg.last_seq)  # THE BUG: forget before the ACK

        monkeypatch.setattr(Uplink, "_send", delete_on_send)
    hole = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    hole.setsockopt(zmq.LINGER, 0)
    hole.bind("tcp://127.0.0.1:*")
    hole_task = asyncio.create_task(_black_hole(hole))
    store = SQLiteCloudStore(tmp_path / f"cloud-{mutant}.db")
    try:
        async with running_receiver(store, pub_bind=None) as rx:
            assert rx.endpoint
            config = UplinkConfig(
                endpoints=(hole.getsockopt_string(zmq.LAST_ENDPOINT), rx.endpoint),
                queue=str(tmp_path / f"q-{mutant}.db"),
                batch_max_delay=0.002,
                ack_timeout=0.3,
                insecure=True,
            )
            up = Uplink(config, "gw")
            await up.start()
            try:
                for i in range(N):
                    up.submit("s", b"%d" % i)
                await bounded(up.flush(), "flush")
                await wait_until(lambda: up.stats()["reconnects"] >= 1, "failover to the receiver")

                def settled() -> bool:
                    st = up.stats()
                    s = st["streams"]["s"]  # type: ignore[index]
                    return st["link"] == "connected" and s["depth"] == 0 and st["in_flight"] == 0

                await wait_until(settled, "the uplink to settle", timeout=10)
            finally:
                await bounded(up.stop(), "stop")
    finally:
        hole_task.cancel()
        hole.close(linger=0)
    with SQLiteCloudStore(tmp_path / f"cloud-{mutant}.db") as s:
        return len(s.records("gw", "s", limit=10 * N))


def test_real_uplink_replays_after_a_hung_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(_scenario(tmp_path, False, monkeypatch)) == N


def test_mutant_deleting_on_send_loses_records_and_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = run(_scenario(tmp_path, True, monkeypatch))
    assert stored < N, "the broken build went unnoticed: the scenario cannot tell send from ack"
