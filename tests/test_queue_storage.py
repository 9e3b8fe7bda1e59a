"""The queue on a real small filesystem (issue 14, items 1 and 8): a full tmpfs (ENOSPC) keeps
records and alarm state in memory, says why, and recovers by itself when space returns; a
read-only filesystem (EROFS) is refused at start with a clear message and nothing is moved.
Needs mount(2) (root in a privileged container); skipped where it is not allowed."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_uplink_flow import GW, _config, _free_endpoint, started
from uplink_support import bounded, run, wait_until

from gateway.uplink.client import Uplink, UplinkError
from gateway.uplink.dirlock import DirLock, DirLocked
from gateway.uplink.queue import DurableQueue


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A 2 MiB tmpfs of its own (the size of the trial's full-disk setup)."""
    where = Path(tempfile.mkdtemp(prefix="gw-tmpfs-"))
    if os.geteuid() != 0 or _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)).returncode:
        where.rmdir()
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield where
    finally:
        _mount("-o", "remount,rw", str(where))
        subprocess.run(["umount", "-l", str(where)], timeout=10, check=False)
        where.rmdir()


def _fill(where: Path) -> Path:
    filler = where / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_tmpfs_keeps_state_and_records_in_memory_and_recovers(tmpfs: Path) -> None:
    async def scenario() -> None:
        up = Uplink(_config(tmpfs, _free_endpoint(), batch_max_records=1000), GW)
        async with started(up):
            up.submit("events", b"first")
            await up.flush()
            filler = _fill(tmpfs)
            up.stage_state("alarms", b"state" * 200)
            n = sum(up.submit("events", b"%04d" % i + b"x" * 1000) for i in range(600))
            assert n == 600  # taken into memory: the disk is the writer's problem
            await wait_until(lambda: not up.healthy, "a commit failing on the full disk", 10)
            assert "full" in str(up.io_error), up.io_error
            queue = up._queue
            assert queue is not None
            assert queue.get_state("alarms") is None and queue.depth("events") == 1
            filler.unlink()  # space is back
            await bounded(up.flush(), "the retried commits", timeout=15)
            assert up.healthy and up.stats()["write_errors"] >= 1
            assert queue.get_state("alarms") == b"state" * 200 and queue.depth("events") == 601

    run(scenario(), timeout=40)


def test_read_only_filesystem_is_refused_at_start_not_quarantined(tmpfs: Path) -> None:
    queue = tmpfs / "queue.db"
    with DurableQueue(queue) as q:
        q.append([("s", b"r%d" % i) for i in range(5)])
    DirLock([tmpfs]).acquire().release()  # a gateway ran here before: its lock file stays
    before = sorted(p.name for p in tmpfs.iterdir())
    assert _mount("-o", "remount,ro", str(tmpfs)).returncode == 0
    DirLock([tmpfs]).acquire().release()  # still lockable: one gateway at a time even here
    with pytest.raises(DirLocked, match="Read-only file system"):
        DirLock([tmpfs / "new"]).acquire()  # no lock file can be made: a clear refusal

    async def scenario() -> None:
        up = Uplink(_config(tmpfs, _free_endpoint()), GW)
        with pytest.raises(UplinkError, match=f"uplink queue {queue}: cannot open it") as err:
            await up.start()
        assert "Read-only file system" in str(err.value) and "left untouched" in str(err.value)

    run(scenario())
    assert sorted(p.name for p in tmpfs.iterdir()) == before  # nothing moved or created
