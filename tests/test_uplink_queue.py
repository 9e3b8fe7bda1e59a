"""DurableQueue: sequencing, acks, epochs, reopen, and survival of a SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.uplink.queue import DurableQueue, QueueError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def queue(tmp_path: Path):  # type: ignore[no-untyped-def]
    q = DurableQueue(tmp_path / "q.db", clock=lambda: 1000.0)
    yield q
    q.close()


def test_append_assigns_gap_free_sequences_per_stream(queue: DurableQueue) -> None:
    assert queue.append([("a", b"1"), ("b", b"x"), ("a", b"2")]) == {"a": (1, 2), "b": (1, 1)}
    assert queue.append([("a", b"3")]) == {"a": (3, 3)}
    assert queue.append([]) == {}
    assert queue.read("a", 0, 10) == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert queue.read("a", 1, 1) == [(2, b"2")]
    assert queue.read("b", 0, 10) == [(1, b"x")]
    assert queue.read("nope", 0, 10) == []
    assert queue.streams() == ["a", "b"]
    assert queue.depth("a") == 3 and queue.info("a").next_seq == 4
    assert queue.oldest_ts("a") == 1000.0


def test_ack_deletes_up_to_hw_only(queue: DurableQueue) -> None:
    queue.append([("a", bytes([i])) for i in range(5)])
    queue.ack("a", 3)
    assert queue.read("a", 0, 10) == [(4, b"\x03"), (5, b"\x04")]
    assert queue.depth("a") == 2 and queue.info("a").acked_hw == 3
    queue.ack("a", 2)  # stale ack: no-op
    assert queue.info("a").acked_hw == 3
    with pytest.raises(QueueError, match="only 5 records"):
        queue.ack("a", 6)
    queue.ack("a", 5)
    assert queue.depth("a") == 0 and queue.read("a", 0, 10) == []
    assert queue.append([("a", b"n")]) == {"a": (6, 6)}  # numbering continues after a full drain


def test_apply_appends_and_acks_in_one_transaction(queue: DurableQueue) -> None:
    queue.append([("a", b"1"), ("a", b"2")])
    assert queue.apply([("a", b"3")], {"a": 2}, ts=[5.0]) == {"a": (3, 3)}
    assert queue.read("a", 0, 10) == [(3, b"3")]
    assert queue.oldest_ts("a") == 5.0
    with pytest.raises(ValueError, match="timestamps"):
        queue.apply([("a", b"4")], {}, ts=[1.0, 2.0])


def test_reopen_keeps_sequences_acks_and_epoch(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with DurableQueue(path) as q:
        q.append([("a", b"1"), ("a", b"2"), ("a", b"3")])
        q.ack("a", 1)
        epoch = q.epoch
    with DurableQueue(path) as q:
        assert q.epoch == epoch and q.epoch_of("a") == epoch
        assert q.info("a").acked_hw == 1
        assert q.read("a", 0, 10) == [(2, b"2"), (3, b"3")]
        assert q.append([("a", b"4")]) == {"a": (4, 4)}


def test_new_file_is_a_new_epoch(tmp_path: Path) -> None:
    with DurableQueue(tmp_path / "one.db") as a, DurableQueue(tmp_path / "two.db") as b:
        assert a.epoch != b.epoch and 0 < a.epoch < 1 << 63
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"one.db{suffix}").unlink(missing_ok=True)
    with DurableQueue(tmp_path / "one.db") as again:
        assert again.epoch not in (a.epoch, b.epoch)


def test_rotate_epoch_renumbers_unacked_records(queue: DurableQueue) -> None:
    queue.append([("a", bytes([i])) for i in range(5)] + [("b", b"b")])
    queue.ack("a", 2)
    old = queue.epoch_of("a")
    new = queue.rotate_epoch("a")
    assert new != old and queue.epoch_of("a") == new and queue.epoch_of("b") == old
    assert queue.read("a", 0, 10) == [(1, b"\x02"), (2, b"\x03"), (3, b"\x04")]
    assert queue.info("a").acked_hw == 0 and queue.info("a").next_seq == 4
    assert queue.append([("a", b"z")]) == {"a": (4, 4)}
    with pytest.raises(QueueError):
        queue.rotate_epoch("missing")


def test_on_disk_pragmas_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    DurableQueue(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="schema version 99"):
        DurableQueue(path)


def test_closed_queue_refuses_work(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.db")
    q.close()
    q.close()
    with pytest.raises(QueueError, match="closed"):
        q.append([("a", b"1")])
    with pytest.raises(QueueError, match="closed"):
        q.read("a", 0, 1)


_CHILD = textwrap.dedent(
    """
    import sys
    from gateway.uplink.queue import DurableQueue
    q = DurableQueue(sys.argv[1])
    n = 0
    while True:
        batch = [("s", f"{n + i}".encode()) for i in range(50)]
        first, last = q.append(batch)["s"]
        n += 50
        print(last, flush=True)
    """
)


def test_records_survive_sigkill_right_after_append(tmp_path: Path) -> None:
    """Everything append() returned for is in the file after the writer is SIGKILLed."""
    path = tmp_path / "q.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None
        acknowledged = 0
        for _ in range(20):  # bounded: 20 committed batches, then kill mid-stream
            line = child.stdout.readline()
            assert line, f"child exited early with {child.poll()}"
            acknowledged = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    with DurableQueue(path) as q:
        rows = q.read("s", 0, 1_000_000)
        assert len(rows) >= acknowledged
        assert [s for s, _ in rows] == list(range(1, len(rows) + 1))
        assert all(p == f"{s - 1}".encode() for s, p in rows)
        assert q.info("s").next_seq == len(rows) + 1
