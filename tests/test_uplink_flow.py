"""Flow control and deliberate gaps end to end: quota policies, DROP, priority lane, disk full,
corrupt queue files, downlink commands. Real ZeroMQ on loopback, real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from uplink_support import RawPeer, bounded, run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import UplinkConfig
from gateway.uplink import wire
from gateway.uplink.client import Uplink
from gateway.uplink.queue import DurableQueue

GW = "gw-flow"


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _config(tmp_path: Path, endpoint: str, **kw: object) -> UplinkConfig:
    base = UplinkConfig(
        endpoints=(endpoint,),
        queue=str(tmp_path / "queue.db"),
        batch_max_records=50,
        batch_max_delay=0.002,
        ack_timeout=1.0,
        insecure=True,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def started(up: Uplink) -> AsyncIterator[Uplink]:
    await up.start()
    try:
        yield up
    finally:
        await bounded(up.stop(), "uplink stop")


def _history(db: Path, stream: str) -> tuple[dict[int, bytes], list[tuple[int, int, str]], int]:
    """The cloud's view of (GW, stream): seq -> payload, gaps (first, last, reason), hw."""
    with SQLiteCloudStore(db) as s:
        streams = [st for st in s.gateways() if st.gateway == GW and st.stream == stream]
        assert len(streams) == 1, streams
        epoch, hw = streams[0].epoch, streams[0].hw
        recs = {r.seq: r.payload for r in s.records(GW, stream, epoch, limit=10**6)}
        gaps = [(g.first, g.last, g.reason) for g in s.gaps(GW, stream, epoch)]
    return recs, gaps, hw


def _check_partition(recs: dict[int, bytes], gaps: list[tuple[int, int, str]], hw: int) -> None:
    """Every seq 1..hw is exactly one of: a stored record, inside one announced gap."""
    covered = set(recs)
    for first, last, _ in gaps:
        span = set(range(first, last + 1))
        assert not span & covered, f"gap {first}..{last} overlaps stored records"
        covered |= span
    assert covered == set(range(1, hw + 1))


def test_drop_oldest_keeps_the_newest_and_announces_the_rest(tmp_path: Path) -> None:
    endpoint = _free_endpoint()
    quota = 30 * 100

    async def scenario() -> None:
        up = Uplink(_config(tmp_path, endpoint, stream_max_bytes=quota), GW)
        async with started(up):
            for i in range(200):  # cloud down: the backlog hits the quota
                up.submit("s", b"%0100d" % i)
                if i % 40 == 39:
                    await up.flush()
            await up.flush()
            st = up.stats()
            assert st["streams"]["s"]["bytes"] <= quota  # type: ignore[index]
            dropped = st["dropped_by"]["quota"]  # type: ignore[index]
            assert dropped > 0 and st["dropped"] == dropped
            async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), bind=endpoint):
                await wait_until(
                    lambda: up.stats()["streams"]["s"]["acked_hw"] == 200,  # type: ignore[index]
                    "everything acked (records or gaps)",
                )
            assert up.stats()["drops_sent"] >= 1
        recs, gaps, hw = _history(tmp_path / "c.db", "s")
        assert hw == 200
        _check_partition(recs, gaps, hw)
        assert {r for _, _, r in gaps} == {"quota"}
        assert sum(b - a + 1 for a, b, _ in gaps) == dropped
        assert recs[200] == b"%0100d" % 199  # the newest survive, in order
        assert sorted(recs) == list(range(min(recs), 201))

    run(scenario())


def test_block_refuses_at_the_source_counts_and_announces(tmp_path: Path) -> None:
    endpoint = _free_endpoint()

    async def scenario() -> None:
        up = Uplink(_config(tmp_path, endpoint, stream_max_bytes=1000, quota_policy="block"), GW)
        async with started(up):
            accepted = [up.submit("s", b"%0100d" % i) for i in range(25)]
            assert accepted[:10] == [True] * 10 and not any(accepted[10:])
            assert not up.accepting("s") and up.accepting("other")
            await up.flush()
            assert up.stats()["dropped_by"] == {"blocked": 15}
            async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), bind=endpoint):
                await wait_until(lambda: up.accepting("s"), "space after the acks")
                assert up.submit("s", b"after")
                await wait_until(
                    lambda: up.stats()["streams"]["s"]["acked_hw"] == 26,  # type: ignore[index]
                    "the record after the gap acked",
                )
        recs, gaps, hw = _history(tmp_path / "c.db", "s")
        assert gaps == [(11, 25, "blocked")] and hw == 26
        _check_partition(recs, gaps, hw)
        assert recs[26] == b"after"

    run(scenario())


def test_priority_stream_overtakes_the_telemetry_backlog(tmp_path: Path) -> None:
    endpoint = _free_endpoint()

    async def scenario() -> None:
        up = Uplink(_config(tmp_path, endpoint, batch_max_records=1000), GW)
        async with started(up):
            for i in range(5000):
                up.submit("telemetry", b"t%d" % i)
            await up.flush()
            up.submit("events", b"alarm!")
            await up.flush()
            async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), bind=endpoint):
                await wait_until(
                    lambda: up.stats()["streams"]["telemetry"]["acked_hw"] == 5000,  # type: ignore[index]
                    "the backlog acked",
                )
        con = sqlite3.connect(tmp_path / "c.db")
        order = [s for (s,) in con.execute("SELECT stream FROM records ORDER BY rowid")]
        con.close()
        assert order[0] == "events" and len(order) == 5001

    run(scenario())


def test_disk_full_keeps_running_counts_overflow_and_resumes(tmp_path: Path) -> None:
    """SQLITE_FULL injected with max_page_count: the same error path as ENOSPC on the file."""

    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
            assert rx.endpoint
            up = Uplink(_config(tmp_path, rx.endpoint, batch_max_records=1000), GW)
            async with started(up):
                up.submit("s", b"first")
                await up.flush()
                queue = up._queue  # fault injection: the file may not grow any more
                assert queue is not None
                with queue._wlock:  # the writer thread's connection: take its lock
                    pages = queue._w.execute("PRAGMA page_count").fetchone()[0]
                    queue._w.execute(f"PRAGMA max_page_count = {pages + 2}")
                payload = b"x" * 200
                for _ in range(400_000):  # until the pending cap (100k) refuses
                    if not up.submit("s", payload):
                        break
                await wait_until(lambda: up.stats()["write_errors"] >= 1, "a failed commit")
                st = up.stats()
                assert st["dropped_by"].get("overflow", 0) > 0  # type: ignore[union-attr]
                with queue._wlock:
                    queue._w.execute("PRAGMA max_page_count = 1073741823")  # space is back
                await bounded(up.flush(), "commits resume", timeout=30)
                total = up.stats()["streams"]["s"]["next_seq"] - 1  # type: ignore[index]
                await wait_until(
                    lambda: up.stats()["streams"]["s"]["acked_hw"] == total,  # type: ignore[index]
                    "everything acked",
                    timeout=30,
                )
                ok = queue._r.execute("PRAGMA integrity_check").fetchone()[0]
                assert ok == "ok"
        recs, gaps, hw = _history(tmp_path / "c.db", "s")
        _check_partition(recs, gaps, hw)
        assert [r for _, _, r in gaps] == ["overflow"]
        assert sum(b - a + 1 for a, b, _ in gaps) == st["dropped_by"]["overflow"]  # type: ignore[index]

    run(scenario(), timeout=90)


def test_corrupt_queue_is_quarantined_and_a_new_epoch_starts(tmp_path: Path) -> None:
    qpath = tmp_path / "queue.db"
    with DurableQueue(qpath) as q:
        q.append([("s", b"old")])
        old_epoch = q.epoch
    with open(qpath, "r+b") as f:  # wreck the header and a page
        f.write(b"garbage!" * 64)

    async def scenario() -> None:
        endpoint = _free_endpoint()
        up = Uplink(_config(tmp_path, endpoint), GW)
        async with started(up):
            assert up.quarantined and Path(up.quarantined).exists()
            assert up.stats()["quarantined"] == up.quarantined
            up.submit("s", b"new")
            await up.flush()
            assert up.stats()["streams"]["s"]["epoch"] != old_epoch  # type: ignore[index]
        assert Path(up.quarantined).read_bytes().startswith(b"garbage!")

    run(scenario())


def test_commands_are_answered_and_duplicates_run_once(tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    async def handler(kind: str, args: dict[str, object]) -> tuple[str, str]:
        calls.append((kind, args))
        return "ok", f"wrote {args.get('value')}"

    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
            assert rx.endpoint
            up = Uplink(_config(tmp_path, rx.endpoint), GW, command_handler=handler)
            async with started(up):
                # Sent before the gateway connected: delivered after its HELLO.
                ping = await bounded(rx.command(GW, "ping", timeout=5), "ping")
                assert ping.outcome == "ok" and GW in ping.detail
                args = {"point": "p.x", "value": 3}
                first = await bounded(rx.command(GW, "write", args, command_id="c1"), "write")
                again = await bounded(rx.command(GW, "write", args, command_id="c1"), "retry")
                assert first == again == wire.Result("c1", "ok", "wrote 3")
                assert calls == [("write", args)]
                assert up.stats()["commands"] == 2 and up.stats()["commands_duplicate"] == 1
            # A restarted gateway still knows c1 (the command log is in the queue file).
            up2 = Uplink(_config(tmp_path, rx.endpoint), GW, command_handler=handler)
            async with started(up2):
                again = await bounded(
                    rx.command(GW, "write", args, command_id="c1"), "after restart"
                )
                assert again.outcome == "ok" and calls == [("write", args)]
            up3 = Uplink(_config(tmp_path, rx.endpoint), GW)
            async with started(up3):
                res = await bounded(rx.command(GW, "reload_rules"), "no handler")
                assert res.outcome == "unsupported"

    run(scenario())


def test_command_cut_off_by_a_crash_is_never_rerun(tmp_path: Path) -> None:
    with DurableQueue(tmp_path / "q.db") as q:
        assert q.command_begin("c9", "write") is None  # then the process "dies"
    with DurableQueue(tmp_path / "q.db") as q:
        assert q.command_begin("c9", "write") == ("interrupted", "")


def test_drop_protocol_at_the_receiver(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
            assert rx.endpoint
            peer = RawPeer(rx.endpoint)
            try:
                c = rx.credit
                assert isinstance(await peer.call(wire.Hello(GW, {"s": 7})), wire.Welcome)
                assert await peer.call(wire.Drop("s", 7, 2, 5, "quota")) == wire.Nack("s", 7, 1)
                assert await peer.call(wire.Data.build("s", 7, 1, [b"a"])) == wire.Ack("s", 7, 1, c)
                assert await peer.call(wire.Drop("s", 7, 2, 5, "quota")) == wire.Ack("s", 7, 5, c)
                assert await peer.call(wire.Drop("s", 7, 1, 3, "quota")) == wire.Ack("s", 7, 5, c)
                assert await peer.call(wire.Data.build("s", 7, 6, [b"f"])) == wire.Ack("s", 7, 6, c)
                assert rx.status()[GW]["dropped"] == 4
            finally:
                peer.close()
        recs, gaps, hw = _history(tmp_path / "c.db", "s")
        assert recs == {1: b"a", 6: b"f"} and gaps == [(2, 5, "quota")] and hw == 6

    run(scenario())


def test_receiver_command_waits_for_a_reconnect(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
            assert rx.endpoint
            pending = asyncio.ensure_future(rx.command(GW, "ping"))
            await asyncio.sleep(0.05)
            assert not pending.done()
            up = Uplink(_config(tmp_path, rx.endpoint), GW)
            async with started(up):
                assert (await bounded(pending, "ping after connect")).outcome == "ok"

    run(scenario())


def test_a_stream_name_the_cloud_would_refuse_is_refused_at_submit(tmp_path: Path) -> None:
    """The receiver refuses a whole HELLO over one bad stream name (issue 14 item 4), so a record
    queued under such a name would strand every stream's backlog: refuse it before queueing."""
    endpoint = _free_endpoint()

    async def scenario() -> None:
        up = Uplink(_config(tmp_path, endpoint), GW)
        async with started(up):
            for bad in ["", "a b", "x" * 65, "\x1b[2J", "-lead"]:
                with pytest.raises(ValueError, match="stream name"):
                    up.submit(bad, b"r")
                with pytest.raises(ValueError, match="stream name"):
                    up.submit_many(bad, [b"r"])
            assert up.submit("ok.stream-1", b"r")
            await up.flush()
            assert set(up.stats()["streams"]) == {"ok.stream-1"}  # type: ignore[call-overload]

    run(scenario())
