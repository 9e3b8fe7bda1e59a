"""Fault tests with real processes: a producer running a real Uplink (tests/uplink_producer.py)
and ``gateway cloud`` (CurveZMQ), SIGKILLed and SIGSTOPped at random while records flow; a long
cloud outage with the backlog on disk. Verdict from the cloud's SQLite file: nothing accepted is
lost, nothing is stored twice, order per stream is kept.

The short chaos run is in the default suite; ``make chaos`` runs the 60 s one (>= 20 faults).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import sqlite3
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from gateway.core.processes import ManagedProcess
from hil_tests.rig import check_sequences, cloud_process, curve_keys

ROOT = Path(__file__).resolve().parents[1]
PRODUCER = str(ROOT / "tests" / "uplink_producer.py")
GW = "chaos-gw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChaosRig:
    """A cloud process and a producer process sharing a work directory; restartable."""

    def __init__(self, work: Path, rate: float, count: int = 0) -> None:
        self.work = work
        self.rate = rate
        self.count = count
        self.endpoint = f"tcp://127.0.0.1:{_free_port()}"
        self.pub = f"tcp://127.0.0.1:{_free_port()}"
        self.db = work / "cloud.db"
        self.accepted_log = work / "accepted.log"
        self.status = work / "producer.json"
        curve_keys(work, GW)
        self.run_no = 0
        self.cloud = self._cloud()
        self.producer = self._producer()
        self.faults: list[str] = []

    def _cloud(self) -> ManagedProcess:
        return cloud_process(self.work, self.endpoint, self.pub, self.db, self.work / "cloud.log")

    def _producer(self) -> ManagedProcess:
        self.run_no += 1
        return ManagedProcess(
            "producer",
            [sys.executable, PRODUCER, "--endpoint", self.endpoint, "--queue",
             str(self.work / "queue.db"), "--id", GW, "--run", str(self.run_no), "--rate",
             str(self.rate), "--count", str(self.count), "--log", str(self.accepted_log),
             "--status", str(self.status), "--key-dir", str(self.work / "keys"),
             "--server-key", str(self.work / "keys" / "cloud.key")],
            self.work / "producer.log", cwd=str(ROOT),
        )  # fmt: skip

    def start(self) -> None:
        self.cloud.start()
        self.producer.start()

    def fault(self, rng: random.Random) -> None:
        """One random fault: SIGKILL + restart, or SIGSTOP ... SIGCONT, of either process."""
        target = rng.choice(["producer", "cloud"])
        kind = rng.choice(["kill", "kill", "stop"])
        proc = self.producer if target == "producer" else self.cloud
        if kind == "kill":
            proc.kill()
            time.sleep(rng.uniform(0.05, 0.4))
            if target == "producer":
                self.producer = self._producer()
                self.producer.start()
            else:
                self.cloud = self._cloud()
                self.cloud.start()
        else:
            proc.signal(signal.SIGSTOP)
            time.sleep(rng.uniform(0.2, 1.5))
            proc.signal(signal.SIGCONT)
        self.faults.append(f"{kind} {target}")

    def drain(self, timeout: float = 90.0) -> None:
        """Stop producing; wait until the producer reports everything acked and exits."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # a producer restarted by the last fault: running?
            try:
                if json.loads(self.status.read_text()).get("run") == self.run_no:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.producer.signal(signal.SIGTERM)
        assert self.producer.proc is not None
        try:
            code = self.producer.proc.wait(timeout)
        except Exception:
            raise AssertionError(
                f"producer did not drain in {timeout}s\n{self.producer.log_tail()}"
            ) from None
        assert code == 0, f"producer exit {code}\n{self.producer.log_tail()}"

    def close(self) -> None:
        for p in (self.producer, self.cloud):
            p.signal(signal.SIGCONT)
            p.stop()

    def verify(self) -> dict[str, int]:
        """0 lost (of what was accepted), 0 stored twice, order per stream; returns counts."""
        accepted: dict[tuple[int, str], int] = {}
        for line in self.accepted_log.read_text().splitlines():
            run, stream, last = line.split()
            key = (int(run), stream)
            accepted[key] = max(accepted.get(key, -1), int(last))
        con = sqlite3.connect(self.db)
        try:
            rows = con.execute(
                "SELECT stream, epoch, seq, payload FROM records WHERE gateway = ? "
                "ORDER BY stream, rowid",
                (GW,),
            ).fetchall()
        finally:
            con.close()
        per: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for stream, _epoch, _seq, payload in rows:
            run, i = (int(x) for x in payload.split(b":"))
            per[stream].append((run, i))
        check_sequences(self.db, GW)  # no producer here drops: any gap is a hole
        assert not _gaps(self.db), "a DROP was announced, but nothing was dropped"
        counts = {}
        for stream, items in per.items():
            assert len(items) == len(set(items)), f"{stream}: a record stored twice"
            assert items == sorted(items), f"{stream}: order broken"
            by_run: dict[int, list[int]] = defaultdict(list)
            for run, i in items:
                by_run[run].append(i)
            for run, idx in by_run.items():
                assert idx == list(range(len(idx))), f"{stream} run {run}: a hole in the middle"
            for (run, s), last in accepted.items():
                if s == stream:
                    got = len(by_run.get(run, []))
                    assert got >= last + 1, f"{stream} run {run}: accepted {last + 1}, stored {got}"
            counts[stream] = len(items)
        return counts


def _gaps(db: Path) -> list[tuple[str, int, int]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT stream, first, last FROM gaps").fetchall()
    finally:
        con.close()


def _chaos(tmp_path: Path, seconds: float, min_faults: int, rate: float, flowed: float) -> None:
    rig = ChaosRig(tmp_path, rate)
    rng = random.Random(int(time.time()))
    try:
        rig.start()
        t_end = time.monotonic() + seconds
        interval = seconds / (min_faults + 1)
        while time.monotonic() < t_end or len(rig.faults) < min_faults:
            time.sleep(rng.uniform(0.1, interval))
            rig.fault(rng)
        for p in (rig.producer, rig.cloud):
            assert p.poll() is None, f"{p.name} died on its own:\n{p.log_tail()}"
        rig.drain()
        counts = rig.verify()
    finally:
        rig.close()
    assert len(rig.faults) >= min_faults
    # Restarts cost start-up time; still, records must have flowed most of the time.
    assert counts["telemetry"] >= rate * seconds * flowed, (counts, rig.faults)
    print(f"chaos: {len(rig.faults)} faults {rig.faults}; stored {counts}")


def test_chaos_short(tmp_path: Path) -> None:
    """~8 s, 6+ random SIGKILL/SIGSTOP faults at 1500 records/s."""
    _chaos(tmp_path, seconds=6.0, min_faults=6, rate=1500, flowed=0.25)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_60s(tmp_path: Path) -> None:
    """60 s, >= 20 random faults of producer and cloud at 1500 records/s."""
    _chaos(tmp_path, seconds=60.0, min_faults=24, rate=1500, flowed=0.5)


def _outage(tmp_path: Path, records: int, rate: float) -> None:
    """The cloud is down while ``records`` accumulate on disk; RSS must not follow the backlog."""
    rig = ChaosRig(tmp_path, rate, count=records)
    try:
        rig.producer.start()  # no cloud yet
        proc = psutil.Process(rig.producer.pid)
        rss: list[int] = []
        deadline = time.monotonic() + records / rate * 3 + 30
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                rss.append(proc.memory_info().rss)
                produced = int(json.loads(rig.status.read_text())["produced"])
            except (ValueError, OSError, KeyError):
                continue
            if produced >= records:
                break
        else:
            raise AssertionError(f"producer too slow\n{rig.producer.log_tail()}")
        t0 = time.monotonic()
        rig.cloud.start()
        assert rig.producer.proc is not None
        code = rig.producer.proc.wait(120)
        drain_s = time.monotonic() - t0
        assert code == 0, rig.producer.log_tail()
        counts = rig.verify()
    finally:
        rig.close()
    assert counts["telemetry"] == records
    warm = rss[len(rss) // 4]
    growth = (max(rss) - warm) / 2**20
    print(f"outage: {records} records backlog, drained in {drain_s:.1f}s "
          f"({records * 1.1 / drain_s:,.0f} rec/s incl. startup), RSS growth {growth:.1f} MiB")  # fmt: skip
    assert growth < 40, f"RSS grew {growth:.1f} MiB with the backlog"


def test_outage_backlog_short(tmp_path: Path) -> None:
    """Cloud down while 40k records (a 40 s outage at 1000/s, fast clock) pile up on disk."""
    _outage(tmp_path, records=40_000, rate=20_000)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_outage_10_minutes_fast_clock(tmp_path: Path) -> None:
    """10 min outage at 1000 records/s = 600k records, produced 20x faster than real time."""
    _outage(tmp_path, records=600_000, rate=20_000)
