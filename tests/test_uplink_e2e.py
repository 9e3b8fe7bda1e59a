"""End to end over real ZeroMQ and a real store (SQLite; PostgreSQL where parametrised): Uplink -> CloudReceiver -> Subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from pg_support import StoreMaker
from uplink_support import bounded, run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.cloud.subscriber import Gap, Record, Subscriber
from gateway.config import UplinkConfig
from gateway.uplink import wire
from gateway.uplink.client import Uplink, UplinkError

GW = "gw-test"


def _config(tmp_path: Path, endpoint: str, **kw: object) -> UplinkConfig:
    base = UplinkConfig(
        endpoints=(endpoint,),
        queue=str(tmp_path / "queue.db"),
        batch_max_records=200,
        batch_max_delay=0.005,
        ack_timeout=2.0,
        insecure=True,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_uplink(config: UplinkConfig) -> AsyncIterator[Uplink]:
    up = Uplink(config, GW)
    await up.start()
    try:
        yield up
    finally:
        await bounded(up.stop(), "uplink stop")


def _stored(where: Path | StoreMaker, stream: str) -> list[tuple[int, int, bytes]]:
    """(epoch, seq, payload) of ``stream`` in the SQLite store in ``where`` or the maker's."""
    store = SQLiteCloudStore(where / "cloud.db") if isinstance(where, Path) else where("cloud.db")
    with store as s:
        return [(r.epoch, r.seq, r.payload) for r in s.records(GW, stream, limit=1_000_000)]


def _acked(up: Uplink, stream: str, n: int) -> Callable[[], bool]:
    def check() -> bool:
        streams = up.stats()["streams"]
        assert isinstance(streams, dict)
        return stream in streams and streams[stream]["acked_hw"] >= n

    return check


def test_secure_without_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UplinkError, match="CurveZMQ needs uplink.server_key"):
        Uplink(replace(_config(tmp_path, "tcp://127.0.0.1:1"), insecure=False), GW)


def test_delivers_everything_in_order_exactly_once(tmp_path: Path, make_store: StoreMaker) -> None:
    async def scenario() -> None:
        store = make_store("cloud.db")
        async with running_receiver(store) as rx:
            assert rx.endpoint and rx.pub_endpoint
            gaps: list[Gap] = []
            with Subscriber(rx.pub_endpoint, f"{GW}/", on_gap=gaps.append) as sub:
                async with running_uplink(_config(tmp_path, rx.endpoint)) as up:
                    # PUB/SUB joins asynchronously: send warm-up records until one arrives.
                    for _ in range(200):
                        up.submit("warmup", b"w")
                        nxt = asyncio.ensure_future(sub.recv())
                        done, _ = await asyncio.wait({nxt}, timeout=0.05)
                        if done:
                            break
                        nxt.cancel()
                    else:
                        raise AssertionError("subscriber never joined")
                    n = 1500
                    for i in range(n):
                        up.submit("samples", f"s{i}".encode())
                        if i % 10 == 0:
                            up.submit("events", f"e{i}".encode())
                    await bounded(up.flush(), "flush")
                    got: dict[str, list[Record]] = {"samples": [], "events": []}
                    while len(got["samples"]) < n or len(got["events"]) < n // 10:
                        rec = await bounded(sub.recv(), "published records")
                        if rec.stream in got:
                            got[rec.stream].append(rec)
                    await wait_until(_acked(up, "samples", n), "all samples acked")
                    stats = up.stats()
                    assert stats["link"] == "connected" and stats["committed"] == stats["submitted"]
                    assert stats["streams"]["samples"]["depth"] == 0  # type: ignore[index]
                    assert stats["oldest_age_s"] == 0.0 and stats["dropped"] == 0
            assert [r.payload for r in got["samples"]] == [f"s{i}".encode() for i in range(n)]
            assert [r.seq for r in got["samples"]] == list(range(1, n + 1))
            assert [r.payload for r in got["events"]] == [f"e{i}".encode() for i in range(0, n, 10)]
            assert gaps == [] and sub.gaps == 0
        stored = _stored(make_store, "samples")
        assert [p for _, _, p in stored] == [f"s{i}".encode() for i in range(n)]
        assert len({(e, s) for e, s, _ in stored}) == n

    run(scenario())


def test_receiver_restart_loses_nothing_and_stores_no_duplicates(
    tmp_path: Path, make_store: StoreMaker
) -> None:
    async def scenario() -> None:
        store = make_store("cloud.db")
        async with running_receiver(store, pub_bind=None) as rx:
            endpoint = rx.endpoint
            assert endpoint
            config = _config(tmp_path, endpoint, ack_timeout=0.5)
            up = Uplink(config, GW)
            await up.start()
            for i in range(600):
                up.submit("s", b"%d" % i)
            await wait_until(_acked(up, "s", 200), "first records acked")
        # The receiver is down (mid-stream); the gateway keeps accepting records.
        try:
            for i in range(600, 1200):
                up.submit("s", b"%d" % i)
            await bounded(up.flush(), "flush while the cloud is down")
            async with running_receiver(make_store("cloud.db"), bind=endpoint):
                await wait_until(_acked(up, "s", 1200), "all acked after restart", timeout=10)
        finally:
            await bounded(up.stop(), "uplink stop")
        assert up.stats()["reconnects"] >= 1  # type: ignore[operator]
        stored = _stored(make_store, "s")
        assert [p for _, _, p in stored] == [b"%d" % i for i in range(1200)]
        assert [s for _, s, _ in stored] == list(range(1, 1201))

    run(scenario(), timeout=30)


def test_uplink_restart_resumes_from_cloud_hw(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteCloudStore(tmp_path / "cloud.db")
        async with running_receiver(store, pub_bind=None) as rx:
            assert rx.endpoint
            config = _config(tmp_path, rx.endpoint)
            async with running_uplink(config) as up:
                for i in range(300):
                    up.submit("s", b"a%d" % i)
                await wait_until(_acked(up, "s", 300), "first run acked")
                epoch = up.stats()["streams"]["s"]["epoch"]  # type: ignore[index]
            # Records accepted while the link is down, then the process "restarts".
            down = replace(config, endpoints=("tcp://127.0.0.1:1",))
            async with running_uplink(down) as up:
                for i in range(300, 500):
                    up.submit("s", b"a%d" % i)
                await bounded(up.flush(), "flush offline")
                assert up.stats()["streams"]["s"]["depth"] == 200  # type: ignore[index]
            async with running_uplink(config) as up:
                await wait_until(_acked(up, "s", 500), "second run acked")
                assert up.stats()["streams"]["s"]["epoch"] == epoch  # type: ignore[index]
                assert up.stats()["retransmits"] == 0
            assert rx.status()[GW]["duplicates"] == 0
        stored = _stored(tmp_path, "s")
        assert [p for _, _, p in stored] == [b"a%d" % i for i in range(500)]
        assert {e for e, _, _ in stored} == {epoch}

    run(scenario())


class FaultyProxy:
    """ROUTER in front of the receiver; ``fault`` may rewrite or swallow gateway->cloud frames."""

    def __init__(self, upstream: str, fault: Callable[[list[bytes]], list[bytes] | None]) -> None:
        ctx = zmq.asyncio.Context.instance()
        self.front = ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.front.bind("tcp://127.0.0.1:*")
        self.endpoint = self.front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.upstream = upstream
        self.fault = fault
        self.backs: dict[bytes, zmq.asyncio.Socket] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        while True:
            ident, *frames = await self.front.recv_multipart()
            back = self.backs.get(ident)
            if back is None:  # one upstream connection per gateway connection
                back = self.backs[ident] = zmq.asyncio.Context.instance().socket(zmq.DEALER)
                back.setsockopt(zmq.LINGER, 0)
                back.connect(self.upstream)
                self.tasks.append(asyncio.create_task(self._back(ident, back)))
            out = self.fault(frames)
            if out is not None:
                await back.send_multipart(out)

    async def _back(self, ident: bytes, back: zmq.asyncio.Socket) -> None:
        while True:
            frames = await back.recv_multipart()
            await self.front.send_multipart([ident, *frames])

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for s in self.backs.values():
            s.close(linger=0)
        self.front.close(linger=0)


def _with_proxy(tmp_path: Path, fault: Callable[[list[bytes]], list[bytes] | None]) -> Uplink:
    """Send 400 records through a faulty proxy; return the stopped uplink for its stats."""

    async def scenario() -> Uplink:
        async with running_receiver(SQLiteCloudStore(tmp_path / "cloud.db"), pub_bind=None) as rx:
            assert rx.endpoint
            proxy = FaultyProxy(rx.endpoint, fault)
            task = asyncio.create_task(proxy.run())
            try:
                config = _config(tmp_path, proxy.endpoint, ack_timeout=0.3)
                async with running_uplink(config) as up:
                    for i in range(400):
                        up.submit("s", b"r%d" % i)
                    await wait_until(_acked(up, "s", 400), "all acked through the proxy")
                    return up
            finally:
                task.cancel()
                proxy.close()

    up: Uplink = run(scenario())
    stored = _stored(tmp_path, "s")
    assert [p for _, _, p in stored] == [b"r%d" % i for i in range(400)]
    assert [s for _, s, _ in stored] == list(range(1, 401))
    return up


def _first_data_only(action: Callable[[wire.Data], list[bytes] | None]):  # type: ignore[no-untyped-def]
    hit: list[bool] = []

    def fault(frames: list[bytes]) -> list[bytes] | None:
        if frames[0] == b"DATA" and not hit:
            hit.append(True)
            msg = wire.decode(frames)
            assert isinstance(msg, wire.Data)
            return action(msg)
        return frames

    return fault


def test_nack_on_bad_crc_rewinds_and_resends(tmp_path: Path) -> None:
    def corrupt(msg: wire.Data) -> list[bytes]:
        return wire.encode(replace(msg, crcs=(msg.crcs[0] ^ 1, *msg.crcs[1:])))

    up = _with_proxy(tmp_path, _first_data_only(corrupt))
    stats = up.stats()
    assert stats["nacks"] >= 1 and stats["retransmits"] >= 1  # type: ignore[operator]


def test_ack_timeout_reconnects_and_replays(tmp_path: Path) -> None:
    hellos: list[bool] = []

    def swallow_first_session(frames: list[bytes]) -> list[bytes] | None:
        # A cloud that takes the first session's DATA and never answers: only the application
        # ack timeout can notice (the TCP connection and ZMTP heartbeats stay healthy).
        if frames[0] == b"HELLO":
            hellos.append(True)
        return None if frames[0] == b"DATA" and len(hellos) == 1 else frames

    up = _with_proxy(tmp_path, swallow_first_session)
    stats = up.stats()
    assert stats["reconnects"] >= 1 and stats["retransmits"] >= 1  # type: ignore[operator]


def test_failover_to_the_next_endpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "cloud.db"), pub_bind=None) as rx:
            assert rx.endpoint
            # The first endpoint accepts TCP but never answers HELLO.
            dead = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
            dead.setsockopt(zmq.LINGER, 0)
            dead.bind("tcp://127.0.0.1:*")
            try:
                config = _config(
                    tmp_path,
                    "",
                    endpoints=(dead.getsockopt_string(zmq.LAST_ENDPOINT), rx.endpoint),
                    ack_timeout=0.3,
                )
                async with running_uplink(config) as up:
                    up.submit("s", b"x")
                    await wait_until(_acked(up, "s", 1), "ack via the second endpoint")
                    assert up.stats()["endpoint"] == rx.endpoint
            finally:
                dead.close(linger=0)

    run(scenario())


def test_wiped_cloud_store_gets_unacked_records_under_a_new_epoch(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "cloud.db"), pub_bind=None) as rx:
            endpoint = rx.endpoint
            assert endpoint
            up = Uplink(_config(tmp_path, endpoint, ack_timeout=0.5), GW)
            await up.start()
            for i in range(100):
                up.submit("s", b"old%d" % i)
            await wait_until(_acked(up, "s", 100), "first history acked")
        old_epoch = up.stats()["streams"]["s"]["epoch"]  # type: ignore[index]
        try:
            for i in range(50):
                up.submit("s", b"new%d" % i)
            await bounded(up.flush(), "flush while the cloud is down")
            # A different (empty) store behind the same endpoint: the cloud lost seq 1..100.
            wiped = SQLiteCloudStore(tmp_path / "wiped.db")
            async with running_receiver(wiped, bind=endpoint, pub_bind=None):

                def rotated_and_acked() -> bool:
                    st = up.stats()["streams"]["s"]  # type: ignore[index]
                    return st["epoch"] != old_epoch and st["acked_hw"] >= 50 and st["depth"] == 0

                await wait_until(rotated_and_acked, "new epoch acked by the wiped cloud", 10)
        finally:
            await bounded(up.stop(), "uplink stop")
        assert up.stats()["epoch_rotations"] == 1
        with SQLiteCloudStore(tmp_path / "wiped.db") as s:
            recs = s.records(GW, "s")
        assert [(r.seq, r.payload) for r in recs] == [(i + 1, b"new%d" % i) for i in range(50)]
        assert {r.epoch for r in recs} == {up.stats()["streams"]["s"]["epoch"]}  # type: ignore[index]

    run(scenario(), timeout=30)


def test_writer_drops_new_records_beyond_the_memory_cap(tmp_path: Path) -> None:
    from gateway.uplink.queue import DurableQueue
    from gateway.uplink.writer import GroupCommitWriter

    async def scenario() -> None:
        q = DurableQueue(tmp_path / "q.db")
        writer = GroupCommitWriter(q, asyncio.get_running_loop(), lambda r: None, 10, 0.01, 5)
        accepted = [writer.submit("s", b"%d" % i) for i in range(8)]
        assert accepted == [True] * 5 + [False] * 3
        assert writer.submitted == 5 and writer.dropped == 3 and writer.pending == 5
        writer.start()
        assert await asyncio.to_thread(writer.stop, 5.0)
        assert [p for _, p in q.read("s", 0, 10)] == [b"0", b"1", b"2", b"3", b"4"]
        q.close()

    run(scenario())


def test_flush_and_stats_without_a_cloud(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = [1000.0]
        config = _config(tmp_path, "tcp://127.0.0.1:1", batch_max_delay=10.0)
        up = Uplink(config, GW, clock=lambda: clock[0])
        with pytest.raises(UplinkError, match="not started"):
            up.submit("s", b"x")
        await up.start()
        try:
            for i in range(10):
                up.submit("events" if i % 2 else "s", b"%d" % i)
            await bounded(up.flush(), "flush beats the 10 s batch delay")
            clock[0] += 7.5
            st = up.stats()
            assert st["link"] in ("down", "connecting") and st["committed"] == 10
            assert st["commit_batches"] == 1 and st["sent"] == 0
            assert st["streams"] == {  # type: ignore[comparison-overlap]
                s: {
                    "depth": 5,
                    "next_seq": 6,
                    "acked_hw": 0,
                    "bytes": 5,
                    "epoch": st["streams"]["s"]["epoch"],
                }  # type: ignore[index]
                for s in ("events", "s")
            }
            assert st["oldest_age_s"] == 7.5
        finally:
            await bounded(up.stop(), "uplink stop")

    run(scenario())
