"""Cloud side: exactly-once commits (SQLite and PostgreSQL) and the receiver's protocol answers."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.asyncio
from pg_support import StoreMaker
from uplink_support import RawPeer, bounded, run, running_receiver, wait_until

from gateway.cloud.main import run_cloud
from gateway.cloud.store import CloudStore, SequenceGap, SQLiteCloudStore
from gateway.cloud.subscriber import run_subscribe
from gateway.uplink import wire


@pytest.fixture
def store(make_store: StoreMaker):  # type: ignore[no-untyped-def]
    """SQLite and PostgreSQL alike (the store-sensitive tests run against both)."""
    s = make_store(clock=lambda: 42.0)
    s.open()
    yield s
    s.close()


def test_commit_stores_once_and_returns_hw(store: CloudStore) -> None:
    assert store.hw("g", "s", 7) == 0
    assert store.commit("g", "s", 7, 1, [b"a", b"b"]) == 2
    assert store.commit("g", "s", 7, 1, [b"a", b"b", b"c"]) == 3  # overlap: only c is new
    assert store.commit("g", "s", 7, 2, [b"b"]) == 3  # pure duplicate
    assert store.hw("g", "s", 7) == 3
    recs = store.records("g", "s", 7)
    assert [(r.seq, r.payload, r.received_ts) for r in recs] == [
        (1, b"a", 42.0),
        (2, b"b", 42.0),
        (3, b"c", 42.0),
    ]
    assert [r.seq for r in store.records("g", "s", 7, after_seq=2)] == [3]


def test_commit_refuses_gaps(store: CloudStore) -> None:
    store.commit("g", "s", 7, 1, [b"a"])
    with pytest.raises(SequenceGap) as err:
        store.commit("g", "s", 7, 3, [b"c"])
    assert err.value.hw == 1
    assert store.hw("g", "s", 7) == 1 and len(store.records("g", "s", 7)) == 1


def test_epochs_and_gateways_are_separate_histories(store: CloudStore) -> None:
    store.commit("g", "s", 7, 1, [b"old"])
    store.commit("g", "s", 8, 1, [b"new1", b"new2"])
    store.commit("h", "s", 7, 1, [b"other"])
    assert store.hw("g", "s", 8) == 2 and store.hw("h", "s", 7) == 1
    assert [r.payload for r in store.records("g", "s")] == [b"old", b"new1", b"new2"]
    status = {(x.gateway, x.stream, x.epoch): x.hw for x in store.gateways()}
    assert status == {("g", "s", 7): 1, ("g", "s", 8): 2, ("h", "s", 7): 1}


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "cloud.db"
    with SQLiteCloudStore(path) as s:
        s.commit("g", "s", 1, 1, [b"a", b"b"])
    with SQLiteCloudStore(path) as s:
        assert s.hw("g", "s", 1) == 2
        assert s.commit("g", "s", 1, 1, [b"a", b"b"]) == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 2
    conn.close()


def test_store_not_open_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        SQLiteCloudStore(tmp_path / "c.db").hw("g", "s", 1)


def test_receiver_protocol_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteCloudStore(tmp_path / "cloud.db")
        async with running_receiver(store, credit=77) as rx:
            assert rx.endpoint is not None
            peer = RawPeer(rx.endpoint)
            try:
                early = await peer.call(wire.Data.build("s", 5, 1, [b"x"]))
                assert early == wire.Error("hello_required", "DATA before HELLO on this connection")

                assert await peer.call(wire.Hello("gw", {"s": 5})) == wire.Welcome(
                    {"s": (5, 0)}, 77
                )
                assert await peer.call(wire.Data.build("s", 5, 1, [b"a", b"b"])) == wire.Ack(
                    "s", 5, 2, 77
                )
                # Bad CRC -> NACK from hw + 1, nothing stored.
                bad = wire.Data("s", 5, 3, (b"c",), (12345,))
                assert await peer.call(bad) == wire.Nack("s", 5, 3)
                # Gap -> NACK.
                assert await peer.call(wire.Data.build("s", 5, 4, [b"d"])) == wire.Nack("s", 5, 3)
                # Duplicate -> re-ACK of the current hw.
                assert await peer.call(wire.Data.build("s", 5, 1, [b"a"])) == wire.Ack(
                    "s", 5, 2, 77
                )
                assert await peer.call(wire.Data.build("s", 5, 2, [b"b", b"c"])) == wire.Ack(
                    "s", 5, 3, 77
                )
                # Reconnect: WELCOME reports the committed hw.
                assert await peer.call(wire.Hello("gw", {"s": 5, "t": 9})) == wire.Welcome(
                    {"s": (5, 3), "t": (9, 0)}, 77
                )
                # Version mismatch and garbage get ERRORs, the receiver keeps serving.
                v1 = [b"ACK", msgpack.packb({"v": 1})]  # protocol 1: no per-record CRCs
                reply = await peer.call(v1)
                assert isinstance(reply, wire.Error) and reply.code == "version"
                reply = await peer.call([b"DATA", b"\xc1"])
                assert isinstance(reply, wire.Error) and reply.code == "bad"
                reply = await peer.call(wire.Ack("s", 5, 1, 1))
                assert isinstance(reply, wire.Error) and reply.code == "bad"
                status = rx.status()["gw"]
                assert status["streams"] == {"s": {"epoch": 5, "hw": 3}, "t": {"epoch": 9, "hw": 0}}
                assert status["duplicates"] == 2 and status["nacks"] == 2
                assert status["records"] == 3 and status["connected"] is True
                assert rx.bad_messages == 3
            finally:
                peer.close()
        with SQLiteCloudStore(tmp_path / "cloud.db") as s:
            assert [r.payload for r in s.records("gw", "s", 5)] == [b"a", b"b", b"c"]

    run(scenario())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_cloud_serves_and_prints_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        bind = f"tcp://127.0.0.1:{_free_port()}"
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_cloud(bind, "tcp://127.0.0.1:0", str(tmp_path / "c.db"), 0.01, stop)
        )
        peer = RawPeer(bind)
        try:
            assert await peer.call(wire.Hello("gw", {"s": 1})) == wire.Welcome({"s": (1, 0)}, 10000)
            assert await peer.call(wire.Data.build("s", 1, 1, [b"a"])) == wire.Ack("s", 1, 1, 10000)
            await wait_until(lambda: "gw up" in capsys.readouterr().out, "a status line")
        finally:
            peer.close()
            stop.set()
            await bounded(task, "run_cloud to stop")

    run(scenario())
    with SQLiteCloudStore(tmp_path / "c.db") as s:
        assert s.hw("gw", "s", 1) == 1


def test_run_subscribe_prints_records_and_gaps(capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind("tcp://127.0.0.1:*")
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_subscribe(pub.getsockopt_string(zmq.LAST_ENDPOINT), "gw/", stop)
        )

        async def publish(seq: int, payload: bytes) -> None:
            header = msgpack.packb(
                {"v": wire.PROTOCOL_VERSION, "gateway": "gw", "stream": "s", "epoch": 3, "seq": seq}
            )
            await pub.send_multipart([b"gw/s", header, payload])

        out: list[str] = []
        err: list[str] = []

        def saw(text: str, where: list[str]) -> bool:
            captured = capsys.readouterr()
            out.append(captured.out)
            err.append(captured.err)
            return text in "".join(where)

        try:

            async def joined() -> None:  # PUB/SUB joins asynchronously: repeat seq 1
                while not saw('"seq": 1, "record": {"undecodable"', out):
                    await publish(1, b"hello")
                    await asyncio.sleep(0.01)

            await bounded(joined(), "the subscriber to print a record")
            await publish(4, b"four")
            await wait_until(lambda: saw("GAP gw/s epoch 3: 2..3 missing", err), "a gap report")
            lines = [json.loads(x) for x in "".join(out).splitlines()]
            four = {"gateway": "gw", "stream": "s", "epoch": 3, "seq": 4}
            assert {**four, "record": {**lines[-1]["record"], "base64": "Zm91cg=="}} == lines[-1]
        finally:
            stop.set()
            await bounded(task, "run_subscribe to stop")
            pub.close(linger=0)

    run(scenario())


def test_version_2_store_is_upgraded_with_an_alarms_table(tmp_path: Path) -> None:
    path = tmp_path / "cloud.db"
    with SQLiteCloudStore(path) as s:
        s.commit("g", "s", 1, 1, [b"a"])
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE alarms")
    conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SQLiteCloudStore(path) as s:
        assert s.hw("g", "s", 1) == 1
        s.alarm("g", "duplicate_identity", "two of them")
        assert [(a.gateway, a.kind) for a in s.alarms()] == [("g", "duplicate_identity")]
        assert s.alarms("other") == [] and s.has_records("g", "s") and not s.has_records("g", "t")
        assert s.hw_many("g", {"s": 1, "t": 1}) == {"s": 1, "t": 0}
