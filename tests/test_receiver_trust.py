"""The receiver against a peer with a valid key: forged identity, hostile sizes, duplicate ids.

Real sockets on loopback, real CurveZMQ keys, a real SQLite store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.asyncio
from uplink_support import (
    Pki,
    RawPeer,
    bounded,
    make_pki,
    run,
    running_receiver,
    secure_receiver,
    wait_until,
)

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import UplinkConfig
from gateway.uplink import keys, wire
from gateway.uplink.client import Uplink


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def _libzmq_id() -> bytes:
    """A routing id in libzmq's own automatic format (0x00 + 4 bytes). The victim sets it
    explicitly only so that the test knows it; the attacker reuses it."""
    return b"\x00" + os.urandom(4)


@pytest.mark.parametrize("secure", [True, False], ids=["curve", "plaintext"])
def test_reused_routing_id_gets_no_session_without_its_own_hello(pki: Pki, secure: bool) -> None:
    victim_key = pki.gateway("gw-a")
    attacker_key = pki.gateway("gw-b")
    rid = _libzmq_id()

    def curve(pair):  # type: ignore[no-untyped-def]
        return pki.curve(pair) if secure else None

    async def scenario() -> None:
        store = SQLiteCloudStore(pki.root / "cloud.db")
        kw = {"server_key": pki.cloud, "allow": keys.AllowList(pki.allow_dir)} if secure else {}
        async with running_receiver(store, **kw) as rx:
            assert rx.endpoint
            victim = RawPeer(rx.endpoint, curve(victim_key), routing_id=rid)
            assert isinstance(await victim.call(wire.Hello("gw-a", {"s": 1})), wire.Welcome)
            assert await victim.call(wire.Data.build("s", 1, 1, [b"real"])) == wire.Ack(
                "s", 1, 1, rx.credit
            )
            victim.close()
            await wait_until(lambda: rx.counters()["disconnects"] >= 1, "the victim's disconnect")

            attacker = RawPeer(rx.endpoint, curve(attacker_key), routing_id=rid)
            try:
                forged = await attacker.call(wire.Data.build("s", 1, 2, [b"forged"]))
                assert isinstance(forged, wire.Error) and forged.code == "hello_required", forged
                drop = await attacker.call(wire.Drop("s", 1, 2, 50, "quota"))
                assert isinstance(drop, wire.Error) and drop.code == "hello_required", drop
                # After a HELLO as itself, the same connection and routing id write only as gw-b.
                assert isinstance(await attacker.call(wire.Hello("gw-b", {"s": 1})), wire.Welcome)
                assert await attacker.call(wire.Data.build("s", 1, 1, [b"mine"])) == wire.Ack(
                    "s", 1, 1, rx.credit
                )
                assert rx.counters()["hello_required"] == 2
            finally:
                attacker.close()
            # The victim's own next connection (same id again) starts without a session too.
            await wait_until(lambda: rx.counters()["disconnects"] >= 2, "the attacker's disconnect")
            again = RawPeer(rx.endpoint, curve(victim_key), routing_id=rid)
            try:
                reply = await again.call(wire.Data.build("s", 1, 2, [b"late"]))
                assert isinstance(reply, wire.Error) and reply.code == "hello_required"
            finally:
                again.close()
        with SQLiteCloudStore(pki.root / "cloud.db") as s:
            assert [r.payload for r in s.records("gw-a", "s")] == [b"real"]
            assert s.hw("gw-a", "s", 1) == 1 and s.gaps("gw-a", "s", 1) == []
            assert [r.payload for r in s.records("gw-b", "s")] == [b"mine"]

    run(scenario())


def test_oversized_hello_is_refused_quickly_while_another_gateway_is_served(pki: Pki) -> None:
    good_key, bad_key = pki.gateway("good"), pki.gateway("bad")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint
            good = RawPeer(rx.endpoint, pki.curve(good_key))
            bad = RawPeer(rx.endpoint, pki.curve(bad_key))
            try:
                assert isinstance(await good.call(wire.Hello("good", {"s": 1})), wire.Welcome)
                huge = wire.Hello("bad", {f"s{i}": 1 for i in range(100_000)})
                many = wire.Hello("bad", {f"s{i}": 1 for i in range(65)})
                t0 = time.monotonic()
                reply = await bad.call(huge)
                assert isinstance(reply, wire.Error) and "at most 1024" in reply.reason, reply
                reply = await bad.call(many)
                assert isinstance(reply, wire.Error) and reply.code == "limit", reply
                assert "65 streams" in reply.reason and "max_streams" in reply.reason
                assert time.monotonic() - t0 < 2.0
                # A flood of them while the good gateway keeps sending: every ACK within 1 s.
                flood = [wire.encode(huge if i % 2 else many) for i in range(20)]
                for frames in flood:
                    await bad.sock.send_multipart(frames)
                worst = 0.0
                for seq in range(1, 31):
                    t = time.monotonic()
                    ack = await good.call(wire.Data.build("s", 1, seq, [b"x%d" % seq]))
                    assert ack == wire.Ack("s", 1, seq, rx.credit)
                    worst = max(worst, time.monotonic() - t)
                assert worst < 1.0, f"an ACK took {worst:.2f}s behind the hostile HELLOs"
                for _ in flood:
                    refused = wire.decode(await bounded(bad.sock.recv_multipart(), "a refusal"))
                    assert isinstance(refused, wire.Error) and refused.code in ("bad", "limit")
                long_name = await bad.call(wire.Hello("bad", {"x" * 1_000_000: 1}))
                assert isinstance(long_name, wire.Error) and long_name.code == "bad"
                assert len(long_name.reason) < 300
            finally:
                good.close()
                bad.close()
            assert "bad" not in rx.status() or rx.status()["bad"]["streams"] == {}

    run(scenario(), timeout=60)


def test_hostile_hellos_and_data_do_not_grow_the_receivers_memory(tmp_path: Path) -> None:
    from gateway.cloud.limits import Limits

    limits = Limits(max_streams=8, max_gateways=50, max_hw_cache=200)

    async def scenario() -> None:
        store = SQLiteCloudStore(tmp_path / "cloud.db")
        async with running_receiver(store, pub_bind=None, limits=limits) as rx:
            assert rx.endpoint
            peer = RawPeer(rx.endpoint)  # plaintext: any gateway name, any number of them
            try:
                for i in range(400):
                    streams = {f"s{j}": 1 + (i * 31 + j) % 1000 for j in range(8)}
                    await peer.sock.send_multipart(wire.encode(wire.Hello(f"gw{i}", streams)))
                    # New streams and fresh epochs by DATA, beyond the per-gateway limit.
                    data = wire.Data.build(f"n{i}", 1 + i, 1, [b"x"])
                    await peer.sock.send_multipart(wire.encode(data))
                    if i % 50 == 49:  # keep the replies drained
                        for _ in range(100):
                            await bounded(peer.sock.recv_multipart(), "a reply")
                sizes = rx.sizes()
            finally:
                peer.close()
            assert sizes["gateways"] <= 50, sizes
            assert sizes["hw_cache"] <= 200, sizes
            assert sizes["streams"] <= 50 * 8, sizes
            assert sizes["sessions"] <= 1 and sizes["duplicate_watch"] <= 50, sizes
            assert sizes["commands"] == 0
            assert rx.counters()["limit_refused"] > 0

    run(scenario(), timeout=60)


def test_status_lines_stay_short_with_many_long_stream_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cloud.main import status_lines

    async def scenario() -> None:
        store = SQLiteCloudStore(tmp_path / "cloud.db")
        async with running_receiver(store, pub_bind=None) as rx:
            assert rx.endpoint
            peer = RawPeer(rx.endpoint)
            try:
                names = {f"n{i}-".ljust(64, "x"): 1 for i in range(64)}
                assert isinstance(await peer.call(wire.Hello("g" * 128, names)), wire.Welcome)
                lines = status_lines(rx)
            finally:
                peer.close()
        assert lines and max(len(line) for line in lines) < 1200, [len(x) for x in lines]

    run(scenario())


def _uplink_config(pki: Pki, endpoint: str, queue: str) -> UplinkConfig:
    return replace(
        UplinkConfig(),
        endpoints=(endpoint,),
        queue=str(pki.root / queue),
        batch_max_delay=0.005,
        ack_timeout=0.5,
        server_key=str(pki.root / "cloud" / "cloud.key"),
        key_dir=str(pki.gw_dir),
    )


def test_two_gateways_with_one_key_raise_one_duplicate_identity_alarm(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    pki.gateway("gw1")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint and rx.pub_endpoint
            sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"gw1/!alarm")
            sub.connect(rx.pub_endpoint)
            ups = [Uplink(_uplink_config(pki, rx.endpoint, f"q{i}.db"), "gw1") for i in range(2)]
            for up in ups:
                await up.start()
            try:
                with caplog.at_level(logging.ERROR, logger="gateway.cloud.receiver"):

                    def churn() -> bool:
                        for i, up in enumerate(ups):
                            up.submit("s", b"from %d" % i)
                        return rx.counters()["duplicate_identity"] >= 1

                    await wait_until(churn, "the duplicate-identity alarm", 15.0)
                    alarm = msgpack.unpackb(
                        (await bounded(sub.recv_multipart(), "the alarm on PUB"))[1]
                    )
                    assert alarm["alarm"] == "duplicate_identity" and alarm["gateway"] == "gw1"
                    assert rx.status()["gw1"]["duplicate_identity"] is True
                    for _ in range(20):  # the episode goes on: still one alarm
                        churn()
                        await asyncio.sleep(0.05)
                assert rx.counters()["duplicate_identity"] == 1
                logged = [r for r in caplog.records if "duplicate_identity" in r.getMessage()]
                assert len(logged) == 1 and logged[0].levelno == logging.ERROR
            finally:
                for up in ups:
                    await bounded(up.stop(), "uplink stop")
                sub.close(linger=0)
        with SQLiteCloudStore(pki.root / "cloud.db") as s:
            alarms = s.alarms("gw1")
            assert [a.kind for a in alarms] == ["duplicate_identity"]
            assert "alive" in alarms[0].detail or "epoch" in alarms[0].detail

    run(scenario(), timeout=40)


def test_one_gateway_reconnecting_raises_no_duplicate_alarm(pki: Pki) -> None:
    pki.gateway("gw1")

    async def scenario() -> None:
        async with secure_receiver(pki) as rx:
            assert rx.endpoint
            for _ in range(5):  # five restarts of the same gateway on the same queue
                up = Uplink(_uplink_config(pki, rx.endpoint, "q.db"), "gw1")
                await up.start()
                up.submit("s", b"x")
                await wait_until(lambda u=up: u.stats()["link"] == "connected", "a session")
                await bounded(up.stop(), "uplink stop")
            assert rx.counters()["duplicate_identity"] == 0
            assert rx.status()["gw1"]["sessions"] >= 5

    run(scenario(), timeout=40)
