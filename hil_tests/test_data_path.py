"""Black-box tests of the whole data path against the rig (see rig.sim.yaml)."""

from __future__ import annotations

import signal
import time

import pytest

from hil_tests.rig import Rig, telemetry_samples, wait_for


def _values(rig: Rig, point: str) -> list[tuple[float, float | None]]:
    return telemetry_samples(rig.cloud_records("meta") + rig.cloud_records("telemetry"), point)


def _assert_gap_free(rig: Rig, stream: str) -> None:
    recs = rig.cloud_records(stream)
    by_epoch: dict[int, list[int]] = {}
    for r in recs:
        by_epoch.setdefault(r.epoch, []).append(r.seq)
    for epoch, seqs in by_epoch.items():
        assert seqs == list(range(1, len(seqs) + 1)), (
            f"{stream} epoch {epoch}: sequence not gap-free/duplicate-free "
            f"(first {seqs[:3]}, last {seqs[-3:]}, count {len(seqs)})"
        )


def _drained(rig: Rig) -> bool:
    streams = rig.status()["uplink"]["streams"]
    return all(st["depth"] == 0 for st in streams.values())


@pytest.mark.rig_needs(writes=["pump1.setpoint"])
def test_device_value_change_reaches_the_cloud(rig: Rig) -> None:
    client = rig.device_client("pump1")
    try:
        client.write_register(10, 437, device_id=1)  # setpoint 43.7 m3/h
    finally:
        client.close()
    wait_for(
        lambda: any(
            v is not None and abs(v - 43.7) < 1e-6 for _, v in _values(rig, "pump1.setpoint")
        ),
        15,
        "pump1.setpoint = 43.7 written on the device to arrive in the cloud",
    )


@pytest.mark.rig_needs(sim=True)  # drives press1 into an overheat episode
def test_overheat_alarm_raises_and_clears_once_and_write_reaches_device(rig: Rig) -> None:
    def overheat() -> list[dict]:
        return [
            e for e in rig.cloud_events() if e["kind"] == "alarm" and e["rule"] == "press1_overheat"
        ]

    # The write must land on the device: poll the run coil there while the episode runs.
    client = rig.device_client("press1")
    seen_stopped = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rr = client.read_coils(0, count=1, device_id=1)
            if (
                not rr.isError()
                and not rr.bits[0]
                and any(e["state"] == "raised" for e in overheat())
            ):
                seen_stopped = True
            if [e["state"] for e in overheat()][:2] == ["raised", "cleared"]:
                break
            time.sleep(0.05)
    finally:
        client.close()
    states = [e["state"] for e in overheat()]
    assert states[:2] == ["raised", "cleared"], f"overheat alarm transitions: {states}"
    assert all(a != b for a, b in zip(states, states[1:], strict=False)), (
        f"an alarm was raised or cleared twice in a row: {states}"
    )
    writes = [e for e in rig.cloud_events() if e["kind"] == "write" and e["point"] == "press1.run"]
    assert writes and writes[0]["value"] == 0 and writes[0]["outcome"] == "done", writes
    assert seen_stopped, "the run coil never read 0 on the device after the alarm was raised"


def test_cloud_outage_loses_nothing_and_stores_nothing_twice(rig: Rig) -> None:
    cloud = rig.procs["cloud"]
    cloud.kill()
    t_down = time.time()
    time.sleep(10)  # the outage itself, not a timing assumption
    wait_for(
        lambda: rig.status()["uplink"]["streams"]["telemetry"]["depth"] > 0,
        5,
        "telemetry to queue up in the gateway while the cloud is down",
    )
    cloud.start()
    wait_for(lambda: _drained(rig), 60, "the gateway's queue to drain after the cloud returned")
    _assert_gap_free(rig, "telemetry")
    _assert_gap_free(rig, "events")
    ts = [t for t, _ in _values(rig, "press1.temp")]
    during = [t for t in ts if t_down < t < t_down + 10]
    assert len(during) > 50, f"only {len(during)} press1.temp samples from the outage arrived"
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert max(gaps) < 1.5, f"press1.temp has a hole of {max(gaps):.2f}s"


def test_gateway_sigkill_delivers_every_committed_record_exactly_once(rig: Rig) -> None:
    gw, cloud = rig.procs["gateway"], rig.procs["cloud"]
    wait_for(lambda: len(rig.cloud_records("telemetry")) > 50, 20, "50 telemetry records")
    # Freeze the cloud so the gateway's queue holds a backlog (committed, not yet acked) when it dies.
    cloud.signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: rig.status()["uplink"]["streams"]["telemetry"]["depth"] > 20,
            10,
            "a backlog of 20 telemetry records in the gateway's queue",
        )
        gw.kill()
        t_dead = time.time()
    finally:
        cloud.signal(signal.SIGCONT)
    committed = rig.queue_snapshot()  # what the queue had fsync'd and the cloud had not yet acked
    assert len(committed.get("telemetry", {})) > 20, "the queue file held no backlog at the kill"
    time.sleep(3)
    gw.start()
    t_back = time.time()
    wait_for(lambda: rig.status()["uplink"]["link"] == "connected", 30, "the gateway to reconnect")
    wait_for(lambda: _drained(rig), 60, "the restarted gateway's queue to drain")
    for stream, recs in committed.items():
        cloud = {r.seq: r.payload for r in rig.cloud_records(stream)}
        missing = [s for s in recs if s not in cloud]
        assert not missing, f"{stream}: committed records {missing[:5]} never reached the cloud"
        changed = [s for s, p in recs.items() if cloud[s] != p]
        assert not changed, f"{stream}: records {changed[:5]} arrived with a different payload"
    _assert_gap_free(rig, "telemetry")
    _assert_gap_free(rig, "events")
    assert len({r.epoch for r in rig.cloud_records("telemetry")}) == 1, (
        "the restart began a new epoch"
    )
    ts = [t for t, _ in _values(rig, "press1.temp")]
    holes = [(a, b) for a, b in zip(ts, ts[1:], strict=False) if b - a > 1.0]
    assert len(holes) == 1, f"expected one hole (the dead time), got {holes}"
    a, b = holes[0]
    assert t_dead - 1.0 <= a <= t_dead + 0.5 and b >= t_dead, (
        f"the hole {a}..{b} is not where the kill ({t_dead}) was"
    )
    assert b <= t_back + 10, "samples did not resume after the restart"
