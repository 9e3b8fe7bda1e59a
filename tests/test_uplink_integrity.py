"""End-to-end integrity of queued records (issue 14, item 6): bytes flipped in the queue file
never reach the cloud as values (a ``corrupt`` gap and an alarm instead), and accepted records a
queue file lost (deleted WAL, old copy) are detected, announced and never have their seqs reused.
Real SQLite files, real ZeroMQ, a real receiver, a real producer process killed with SIGKILL."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from test_uplink_flow import GW, _config, _free_endpoint, _history, started
from uplink_support import bounded, run, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import load_config
from gateway.core.records import decode
from gateway.core.runtime import Runtime
from gateway.uplink.client import Uplink
from gateway.uplink.queue import DurableQueue

ROOT = Path(__file__).resolve().parents[1]
PRODUCER = str(ROOT / "tests" / "uplink_producer.py")


def _flip(path: Path, needle: bytes, replacement: bytes) -> None:
    """Overwrite ``needle`` in the raw file (one occurrence) the way a bad sector or a stray
    write would: below SQLite, so its page structure stays valid."""
    data = path.read_bytes()
    assert data.count(needle) == 1, f"{needle!r} occurs {data.count(needle)} times"
    i = data.index(needle)
    with open(path, "r+b") as f:
        f.seek(i)
        f.write(replacement)


def test_flipped_payload_bytes_become_a_corrupt_gap_and_an_alarm(tmp_path: Path) -> None:
    qpath = tmp_path / "queue.db"
    with DurableQueue(qpath) as q:
        q.append([("s", b"temp=%06d" % i) for i in range(1, 21)])
    _flip(qpath, b"temp=000007", b"temp=900007")
    con = sqlite3.connect(qpath)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # SQLite sees nothing
    con.close()
    problems: list[tuple[str, str, str]] = []
    stats: list[dict[str, object]] = []

    async def scenario() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
            assert rx.endpoint
            up = Uplink(
                _config(tmp_path, rx.endpoint), GW, on_problem=lambda *p: problems.append(p)
            )
            async with started(up):
                await wait_until(
                    lambda: up.stats()["streams"]["s"]["acked_hw"] == 20,  # type: ignore[index]
                    "all 20 seqs acked (records or gaps)",
                )
                stats.append(up.stats())

    run(scenario())
    recs, gaps, hw = _history(tmp_path / "c.db", "s")
    assert all(recs[i] == b"temp=%06d" % i for i in recs)  # no wrong value stored
    assert hw == 20 and gaps == [(7, 7, "corrupt")]
    assert sorted(recs) == [i for i in range(1, 21) if i != 7]
    assert stats[0]["corrupt_records"] == 1 and stats[0]["dropped_by"] == {"corrupt": 1}
    assert [p[0] for p in problems] == ["uplink_queue_corrupt_record"]
    assert "seqs 7..7" in problems[0][2] and "temp" not in problems[0][2]  # no payload in it


def test_queue_file_behind_its_marker_announces_the_lost_seqs(tmp_path: Path) -> None:
    """An old copy of the file (what a deleted WAL leaves behind): the high-water marker says
    which seqs it had assigned; they become a ``lost`` gap and are never reused."""
    qpath = tmp_path / "queue.db"
    with DurableQueue(qpath) as q:
        q.append([("s", b"a%d" % i) for i in range(50)])
        epoch = q.epoch
    shutil.copy(qpath, tmp_path / "old.db")
    with DurableQueue(qpath) as q:
        q.append([("s", b"b%d" % i) for i in range(30)])  # seqs 51..80, marked on close
    shutil.copy(tmp_path / "old.db", qpath)
    with DurableQueue(qpath) as q:
        assert q.append([("s", b"c")]) == {"s": (81, 81)}  # never reused
        assert [(x.stream, x.epoch, x.first, x.last) for x in q.losses] == [("s", epoch, 51, 80)]
        assert q.gap_at("s", 60) is not None and q.gap_at("s", 60).reason == "lost"  # type: ignore[union-attr]
    with DurableQueue(qpath) as q:
        assert q.losses == []  # announced once: the gap row carries it from here


def test_cloud_ahead_of_a_restored_file_gets_a_new_epoch_not_duplicates(tmp_path: Path) -> None:
    """No marker (deleted with the WAL): the cloud's hw for the file's own epoch is beyond what
    the file assigned. Records accepted after the restart must neither reuse those seqs (the
    cloud would drop them as duplicates) nor go unannounced."""
    qpath = tmp_path / "queue.db"
    problems: list[tuple[str, str, str]] = []

    async def first_life() -> None:
        async with running_receiver(SQLiteCloudStore(tmp_path / "c.db"), pub_bind=None) as rx:
            assert rx.endpoint
            up = Uplink(_config(tmp_path, rx.endpoint), GW)
            async with started(up):
                up.submit_many("s", [b"old%d" % i for i in range(1, 11)])
                await up.flush()
                _copy_db(qpath, tmp_path / "old.db")  # the file as it was at seq 10
                up.submit_many("s", [b"old%d" % i for i in range(11, 31)])
                await wait_until(
                    lambda: up.stats()["streams"]["s"]["acked_hw"] == 30,  # type: ignore[index]
                    "30 records acked",
                )

    run(first_life())
    for suffix in ("", "-wal", "-shm", ".hw"):
        Path(f"{qpath}{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "old.db", qpath)
    assert DurableQueue(qpath).info("s").next_seq == 11
    endpoint = _free_endpoint()

    async def second_life() -> None:
        up = Uplink(
            _config(tmp_path, endpoint, ack_timeout=0.3), GW,
            on_problem=lambda *p: problems.append(p),
        )  # fmt: skip
        async with started(up):
            up.submit_many("s", [b"new%d" % i for i in range(1, 31)])  # seqs 11..40 locally
            await up.flush()  # committed before the cloud is reachable
            r0 = up.stats()["reconnects"]
            await wait_until(
                lambda: up.stats()["reconnects"] > r0,  # type: ignore[operator]
                "a session whose HELLO sees the new records",
            )
            async with running_receiver(
                SQLiteCloudStore(tmp_path / "c.db"), bind=endpoint, pub_bind=None
            ):
                await wait_until(
                    lambda: (
                        up.stats()["in_flight"] == 0
                        and up.stats()["streams"]["s"]["depth"] == 0  # type: ignore[index]
                        and up.stats()["epoch_rotations"] == 1
                    ),
                    f"the new records acked under a new epoch {up.stats()}",
                    timeout=10,
                )

    run(second_life())
    with SQLiteCloudStore(tmp_path / "c.db") as s:
        stored = {
            r.payload for st in s.gateways() for r in s.records(GW, "s", st.epoch, limit=10**6)
        }
    assert {b"new%d" % i for i in range(1, 31)} <= stored  # none dropped as a duplicate
    assert {b"old%d" % i for i in range(1, 31)} <= stored
    assert [p[0] for p in problems] == ["uplink_queue_lost"]


def test_wal_deleted_after_sigkill_is_detected_and_announced(tmp_path: Path) -> None:
    """A real producer process, SIGKILLed while its WAL holds commits; the WAL is deleted. The
    restarted producer announces the loss, and its own records all reach the cloud."""
    endpoint = _free_endpoint()
    qpath = tmp_path / "queue.db"
    log = tmp_path / "accepted.log"

    def producer(run_no: int, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, PRODUCER, "--endpoint", endpoint, "--queue", str(qpath),
             "--id", GW, "--run", str(run_no), "--log", str(log), "--ack-timeout", "0.5",
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )  # fmt: skip

    async def scenario() -> None:
        async with running_receiver(
            SQLiteCloudStore(tmp_path / "c.db"), bind=endpoint, pub_bind=None
        ):
            p1 = producer(1, "--rate", "4000")
            try:
                await wait_until(lambda: log.exists() and log.stat().st_size > 2000,
                                 "the producer accepting records", timeout=15)  # fmt: skip
                await bounded(_sleep(0.3), "more commits into the WAL")
            finally:
                p1.send_signal(signal.SIGKILL)
                p1.wait(10)
            wal = Path(f"{qpath}-wal")
            assert wal.exists() and wal.stat().st_size > 0, "nothing in the WAL to lose"
            wal.unlink()
            p2 = producer(2, "--rate", "0", "--count", "500", "--drain-timeout", "20")
            out = await bounded(_communicate(p2), "the second producer draining", timeout=40)
            assert p2.returncode == 0, out.decode(errors="replace")[-3000:]
            assert b"uplink_queue_lost" in out, out.decode(errors="replace")[-3000:]

    run(scenario(), timeout=80)
    with SQLiteCloudStore(tmp_path / "c.db") as s:
        stored = {
            r.payload
            for st in s.gateways()
            for r in s.records(GW, "telemetry", st.epoch, limit=10**6)
        }
    assert {b"2:%d" % i for i in range(500)} <= stored  # run 2 lost nothing to dedup


def _copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a live WAL database (what a backup or an image of it holds)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)


async def _communicate(p: subprocess.Popen[bytes]) -> bytes:
    out, _ = await asyncio.to_thread(p.communicate)
    return out


def test_runtime_raises_the_corrupt_record_alarm_upstream(tmp_path: Path) -> None:
    """The whole path: the runtime turns the uplink's finding into an alarm on ``events``."""
    qpath = tmp_path / "data" / "queue.db"
    qpath.parent.mkdir()
    with DurableQueue(qpath) as q:
        q.append([("telemetry", b"reading-%03d" % i) for i in range(3)])
    _flip(qpath, b"reading-001", b"reading-901")
    store = SQLiteCloudStore(tmp_path / "c.db")

    async def scenario() -> None:
        async with running_receiver(store, pub_bind=None) as rx:
            (tmp_path / "gw.yaml").write_text(
                "gateway: {id: rt-gw, data_dir: data, metrics_listen: null}\n"
                f"uplink: {{insecure: true, endpoints: ['{rx.endpoint}'], queue: data/queue.db}}\n"
            )
            rt = Runtime(load_config(tmp_path / "gw.yaml"))
            stop = asyncio.Event()
            task = asyncio.create_task(rt.run(stop))
            try:

                def alarms() -> list[dict[str, object]]:
                    evs = [decode(r.payload) for r in store.records("rt-gw", "events")]
                    return [e for e in evs if e.get("rule") == "uplink_queue_corrupt_record"]

                await wait_until(lambda: bool(alarms()), "the corrupt-record alarm upstream", 10)
                assert alarms()[0]["state"] == "raised" and alarms()[0]["severity"] == "critical"
                tel = [r.payload for r in store.records("rt-gw", "telemetry")]
                assert b"reading-901" not in tel and b"reading-000" in tel
            finally:
                stop.set()
                await bounded(task, "runtime stop", timeout=15)

    run(scenario(), timeout=30)
