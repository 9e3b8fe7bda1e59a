"""Who may use a queue file (issue 14, items 7 and 8): one gateway process per data directory
(an flock, checked with real processes), and a file the process cannot read or a read-only
directory is refused with a clear message, never quarantined as corrupt (checked as an
unprivileged user: the test process is root, its children drop to ``nobody``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.uplink.dirlock import LOCK_NAME, DirLock, DirLocked
from gateway.uplink.queue import DurableQueue

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534

# Imports first (the interpreter lives under /root), then drop to nobody, then open the queue.
CHILD = """
import asyncio, concurrent.futures.thread, os, sys
from gateway.config import UplinkConfig
from gateway.uplink.client import Uplink, UplinkError
os.setgroups([]); os.setgid(65534); os.setuid(65534)

async def main() -> int:
    up = Uplink(UplinkConfig(endpoints=("tcp://127.0.0.1:9",), queue=sys.argv[1], insecure=True), "gw")
    try:
        await up.start()
    except UplinkError as exc:
        print("REFUSED:", exc)
        return 3
    await up.stop()
    print("STARTED", up.quarantined)
    return 0

sys.exit(asyncio.run(main()))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges with setuid")


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path lives under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="gw-access-"))
    d.chmod(0o755)
    yield d
    for p in d.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(d)


def _as_nobody(queue: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(queue)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )  # fmt: skip


def _healthy_queue(path: Path) -> None:
    with DurableQueue(path) as q:
        q.append([("s", b"r%d" % i) for i in range(5)])


@needs_root
def test_unreadable_queue_file_is_refused_not_quarantined(reachable: Path) -> None:
    qdir = reachable / "q"
    qdir.mkdir()
    qdir.chmod(0o777)  # nobody could move the file aside: quarantine is possible, and wrong
    queue = qdir / "queue.db"
    _healthy_queue(queue)
    queue.chmod(0o000)
    out = _as_nobody(queue)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"uplink queue {queue}" in out.stdout and "Permission denied" in out.stdout
    assert "left untouched" in out.stdout and "Traceback" not in out.stderr
    assert sorted(p.name for p in qdir.iterdir()) == ["queue.db", "queue.db.hw"]  # none moved
    queue.chmod(0o644)
    with DurableQueue(queue) as q:
        assert q.depth("s") == 5  # the records are still there


@needs_root
def test_read_only_directory_is_refused_with_a_clear_message(reachable: Path) -> None:
    qdir = reachable / "ro"
    qdir.mkdir()
    queue = qdir / "queue.db"
    _healthy_queue(queue)
    queue.chmod(0o666)
    qdir.chmod(0o555)  # nobody can read and write the file but not create -wal/-shm beside it
    try:
        out = _as_nobody(queue)
    finally:
        qdir.chmod(0o755)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"uplink queue directory {qdir} is not writable" in out.stdout
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in qdir.iterdir()) == ["queue.db", "queue.db.hw"]


def test_dir_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first = DirLock([tmp_path, tmp_path / "."]).acquire()  # one directory, locked once
    assert len(first.dirs) == 1
    with pytest.raises(DirLocked, match=f"pid {os.getpid()}"):
        DirLock([tmp_path / "other", tmp_path]).acquire()
    DirLock([tmp_path / "other"]).acquire().release()  # the failed acquire let go of "other"
    first.release()
    DirLock([tmp_path]).acquire().release()


CONFIG = """
gateway: {id: lock-gw, data_dir: data, metrics_listen: null}
uplink: {insecure: true, endpoints: ["tcp://127.0.0.1:9"], queue: spool/queue.db}
"""


def _run(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
    )  # fmt: skip


def _wait_for_holder(lock: Path, pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if lock.read_text().strip() == str(pid):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for pid {pid} to hold {lock}")


def test_second_gateway_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG)
    first = _run(cfg)
    try:
        _wait_for_holder(tmp_path / "spool" / LOCK_NAME, first.pid)
        _wait_for_holder(tmp_path / "data" / LOCK_NAME, first.pid)
        second = _run(cfg)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert f"in use by another gateway process (pid {first.pid}" in err
        assert "Traceback" not in err
        assert first.poll() is None  # the first one was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)  # the kernel drops its flock: no stale lock
        first.wait(10)
    third = _run(cfg)
    try:
        _wait_for_holder(tmp_path / "data" / LOCK_NAME, third.pid)
    finally:
        third.send_signal(signal.SIGTERM)
        third.wait(30)
