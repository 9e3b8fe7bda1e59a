"""State committed with records (issue 14, items 1 and 9): the alarm state staged in a loop turn
commits in the same transaction as the records of that turn, never before or after them, and a
full disk keeps both in memory (``healthy`` False, ``io_error`` says why) until space returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_uplink_flow import GW, _config, _free_endpoint, started
from uplink_support import bounded, run, wait_until

from gateway.uplink.client import Uplink


def test_state_commits_in_one_transaction_with_the_records_of_its_turn(tmp_path: Path) -> None:
    calls: list[tuple[list[bytes], dict[str, bytes]]] = []

    async def scenario() -> None:
        up = Uplink(_config(tmp_path, _free_endpoint(), batch_max_records=2), GW)
        async with started(up):
            queue = up._queue
            assert queue is not None
            real = queue.apply

            def apply(records: Any, acks: Any, ts: Any = None, refused: Any = (),
                      states: Any = None) -> Any:  # fmt: skip
                calls.append(([p for _, p in records], dict(states or {})))
                return real(records, acks, ts, refused, states)

            queue.apply = apply  # type: ignore[method-assign]
            up.submit("events", b"before")
            up.stage_state("alarms", b"v1")  # e.g. the rule engine's snapshot...
            for name in (b"raised-a", b"raised-b", b"cleared-c"):  # ...and its three events
                up.submit("events", name)
            await up.flush()
            assert queue.get_state("alarms") == b"v1"
            up.stage_state("alarms", b"v2")  # a turn without records: committed on its own
            await bounded(_until_state(up, b"v2"), "the second state committed")

    run(scenario())
    with_state = [(recs, st) for recs, st in calls if st]
    recs, state = with_state[0]  # the group may start with earlier records, never split
    assert recs[-3:] == [b"raised-a", b"raised-b", b"cleared-c"] and state == {"alarms": b"v1"}
    assert all(len(recs) <= 2 for recs, st in calls if not st)  # others keep max_records
    assert with_state[1] == ([], {"alarms": b"v2"})


async def _until_state(up: Uplink, value: bytes) -> None:
    assert up._queue is not None
    q = up._queue
    await wait_until(lambda: q.get_state("alarms") == value, f"state {value!r}")


def test_full_disk_keeps_state_and_events_in_memory_and_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        up = Uplink(_config(tmp_path, _free_endpoint()), GW)
        async with started(up):
            up.submit("events", b"first")
            await up.flush()
            queue = up._queue
            assert queue is not None and up.healthy
            with queue._wlock:  # the file may not grow any more (SQLITE_FULL, as ENOSPC)
                pages = queue._w.execute("PRAGMA page_count").fetchone()[0]
                queue._w.execute(f"PRAGMA max_page_count = {pages}")
            up.stage_state("alarms", b"raised" * 2000)
            up.submit("events", b"alarm raised" * 500)
            await wait_until(lambda: not up.healthy, "a failed commit")
            assert "full" in str(up.io_error) and up.stats()["healthy"] is False
            assert queue.get_state("alarms") is None and queue.depth("events") == 1
            with queue._wlock:
                queue._w.execute("PRAGMA max_page_count = 1073741823")  # space is back
            await bounded(up.flush(), "the retried commit", timeout=10)
            assert up.healthy and up.io_error is None
            assert queue.get_state("alarms") == b"raised" * 2000 and queue.depth("events") == 2

    run(scenario())
