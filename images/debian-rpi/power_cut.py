"""Cut the power of the Raspberry Pi image under qemu during ingest, N times, booting it again from
the same disk each time; then check that nothing the gateway had accepted was lost or stored twice,
and that every boot came back without repair.

A cut is a SIGKILL of qemu: the guest's RAM (page cache, the gateway, records waiting for their
group commit) is gone at once, while what the guest had written to its virtual disk stays. Records
that were not yet committed were never accepted and may be lost; everything else must arrive.

How "accepted" is known from outside the guest:

- **Witnesses.** Just before each cut the host reads the gateway's ``/status``: a stream's
  ``next_seq`` there is only advanced after the queue's transaction committed (fsync'd, WAL,
  ``synchronous=FULL``), so every seq below it was accepted. After the reboot the queue must still
  know those seqs (``next_seq`` not lower, the same epoch, nothing quarantined, no epoch rotation),
  and at the end the cloud's hw of that (stream, epoch) must reach them.
- **The cloud's history.** Per (gateway, stream) exactly one epoch (a new one means the queue file
  was lost, replaced or rolled back behind the cloud), and per epoch the stored seqs and declared
  gaps cover 1..hw exactly, with gaps only for a declared reason (quota, blocked, overflow).
- **An independent count** that does not trust sequence numbers: the samples' own timestamps.
  Every telemetry sample is stored once (no (model, point, ts, value) twice), and every pause in the
  sample timeline longer than ``GAP_S`` spans a cut; the data sampled before a cut but never
  stored (``lost window``) stays below ``LOST_WINDOW_S`` (the group commit is 50 ms; a longer
  window means committed records vanished, even if the queue reused their seqs).
- **Alarms.** No ``uplink_queue_*`` alarm (quarantined, lost records) reached the cloud.
- **The drain.** After the last boot, every seq the final ``/status`` showed reaches the cloud and
  the queue's ``acked_hw`` catches up with it: the backlog drains without help.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from guest import Lab, partition

from hil_tests.rig import wait_for

LEGIT_DROP_REASONS = frozenset({"quota", "blocked", "overflow"})
GAP_S = 20.0  # a pause in the sample timeline longer than this must span a cut
LOST_WINDOW_S = 10.0  # sampled before a cut but never stored: at most this long
CLOCK_TOLERANCE_S = 2.0  # the guest's clock comes from qemu's RTC (1 s resolution) at power on

Step = Callable[[str, Callable[[], Any], float], None]


@dataclass
class Witness:
    """What ``/status`` showed at ``host_ts``: per stream (epoch, next_seq)."""

    label: str
    host_ts: float
    streams: dict[str, tuple[int, int]]
    cut_ts: float | None = None


@dataclass
class Report:
    cuts: list[float] = field(default_factory=list)
    boot_s: list[float] = field(default_factory=list)  # power on -> READY=1
    recover_s: list[float] = field(default_factory=list)  # power on -> /status with intact queue
    lost_window_s: list[float] = field(default_factory=list)
    gaps: list[tuple[str, int, int, int, str]] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)


def uplink_streams(status: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {
        s: (int(v["epoch"]), int(v["next_seq"])) for s, v in status["uplink"]["streams"].items()
    }


def telemetry_next(lab: Lab) -> int:
    return int(lab.status()["uplink"]["streams"]["telemetry"]["next_seq"])


def check_queue_intact(status: dict[str, Any], baseline: Witness, last: Witness | None) -> None:
    """The queue after a boot: nothing quarantined, no epoch changed, every witnessed seq known."""
    up = status["uplink"]
    problems = []
    if up.get("quarantined"):
        problems.append(f"queue quarantined as {up['quarantined']}")
    # The queue's own loss detection (the cloud's hw ahead of the queue, records missing from or
    # failing their checksum in the file) and the epoch rotation it leads to: any is a loss.
    for key in ("lost_records", "loss_events", "corrupt_records", "epoch_rotations"):
        if up.get(key):
            problems.append(f"uplink {key} = {up[key]}: the queue lost or damaged accepted records")
    now = uplink_streams(status)
    for stream, (epoch, _) in baseline.streams.items():
        if stream not in now:
            problems.append(f"stream {stream!r} is gone from the queue")
        elif now[stream][0] != epoch:
            problems.append(f"stream {stream!r}: epoch {epoch} became {now[stream][0]}")
    for stream, (epoch, nxt) in (last.streams if last else {}).items():
        if stream in now and now[stream][0] == epoch and now[stream][1] < nxt:
            problems.append(
                f"stream {stream!r}: next_seq {now[stream][1]} after the boot, but {nxt} was "
                f"committed before {last.label if last else ''}: accepted records were lost"
            )
    if problems:
        raise AssertionError("queue not intact: " + "; ".join(problems))


def lose_queue_wal(disk: Path, work: Path) -> None:
    """Self-check of this harness (``--self-check-lose-wal``): delete the queue's WAL from the
    powered-off disk, losing committed records as a card that dropped them would. A run with it
    must fail; one that passes means these checks cannot see a loss."""
    off, size = partition(disk, 2)
    part = work / "data-partition.img"
    dd = ["dd", "bs=1M", "status=none", "conv=notrunc"]
    subprocess.run([*dd, f"if={disk}", f"of={part}", f"skip={off >> 20}", f"count={size >> 20}"], check=True)  # fmt: skip
    # replay the ext4 journal first (as the guest's mount would), then remove the file
    subprocess.run(["e2fsck", "-fy", str(part)], capture_output=True, check=False)
    out = subprocess.run(["debugfs", "-w", "-R", "rm queue/queue.db-wal", str(part)], capture_output=True, text=True, check=True)  # fmt: skip
    print(f"power-cut: self-check: removed queue/queue.db-wal from the data partition {out.stderr.strip()!r}", flush=True)  # fmt: skip
    subprocess.run([*dd, f"if={part}", f"of={disk}", f"seek={off >> 20}"], check=True)
    part.unlink()


def run_power_cuts(
    lab: Lab,
    n: int,
    step: Step,
    boot_timeout: float = 420.0,
    seed: int | None = None,
    lose_wal: bool = False,
) -> Report:
    """Cut the running guest's power ``n`` times during ingest, then drain and verify."""
    seed = random.randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    print(f"power-cut: {n} cut(s), seed {seed}", flush=True)
    report = Report()
    t_begin = time.time()
    baseline = Witness(
        "the first cut", time.time(), uplink_streams(wait_for(lab.status, 60, "/status"))
    )
    check_queue_intact(lab.status(), baseline, None)
    last: Witness | None = None
    witnesses: list[Witness] = []
    for i in range(1, n + 1):
        tag = f"cut {i}/{n}"
        first = telemetry_next(lab)
        step(
            f"{tag}: ingest running (telemetry being committed)",
            lambda: telemetry_next(lab) > first,  # noqa: B023 - called before the loop moves on
            120,
        )
        # right after the start (queue recovery, backlog replay) or in steady ingest
        time.sleep(rng.uniform(0.0, 12.0))
        st = lab.status()
        last = Witness(tag, time.time(), uplink_streams(st))
        last.cut_ts = lab.power_cut()
        witnesses.append(last)
        report.cuts.append(last.cut_ts)
        print(
            f"power-cut: {tag} {1000 * (last.cut_ts - last.host_ts):.0f} ms after /status showed "
            + ", ".join(f"{s} next_seq {q}" for s, (_, q) in sorted(last.streams.items())),
            flush=True,
        )
        if lose_wal:
            lose_queue_wal(lab.disk, lab.work)
        on = time.monotonic()
        lab.power_on()
        lab.wait_started(boot_timeout, step, f"{tag}: ")
        report.boot_s.append(time.monotonic() - on)
        status = wait_for(lab.status, 120, f"{tag}: /status after the boot", interval=0.5)
        check_queue_intact(status, baseline, last)
        report.recover_s.append(time.monotonic() - on)
        step(f"{tag}: queue intact (same epochs, witnessed seqs kept, nothing quarantined)", lambda: True, 1)  # fmt: skip

    after = telemetry_next(lab)
    step(
        "ingest again after the last boot (telemetry being committed)",
        lambda: telemetry_next(lab) > after,
        120,
    )
    final = Witness("the end", time.time(), uplink_streams(lab.status()))
    step(
        "drain: every seq accepted by the end is in the cloud",
        lambda: all(cloud_hw(lab.cloud_db, lab.gateway_id, s, e) >= q - 1 for s, (e, q) in final.streams.items()),
        300,
    )  # fmt: skip

    def acked() -> bool:
        streams = lab.status()["uplink"]["streams"]
        return all(streams[s]["acked_hw"] >= q - 1 for s, (_, q) in final.streams.items())

    step("drain: the queue's backlog acknowledged and deleted (acked_hw caught up)", acked, 120)
    verify_cloud(lab, baseline, [*witnesses, final], report, t_begin)
    step("cloud: each stream one epoch, seqs contiguous, no duplicates, no queue alarm", lambda: True, 1)  # fmt: skip
    print(summary(report), flush=True)
    return report


def cloud_hw(db: Path, gateway: str, stream: str, epoch: int) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute(
            "SELECT hw FROM streams WHERE gateway = ? AND stream = ? AND epoch = ?",
            (gateway, stream, epoch),
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def cloud_history(
    db: Path, gateway: str
) -> tuple[
    dict[tuple[str, int], int],
    dict[tuple[str, int], list[int]],
    list[tuple[str, int, int, int, str]],
]:
    """(hw per (stream, epoch), stored seqs per (stream, epoch), gap rows) of one gateway."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        hws = {
            (s, e): int(hw)
            for s, e, hw in con.execute(
                "SELECT stream, epoch, hw FROM streams WHERE gateway = ?", (gateway,)
            )
        }
        seqs: dict[tuple[str, int], list[int]] = {}
        for s, e, q in con.execute(
            "SELECT stream, epoch, seq FROM records WHERE gateway = ? ORDER BY stream, epoch, seq",
            (gateway,),
        ):
            seqs.setdefault((s, e), []).append(int(q))
        gaps = [
            (s, int(e), int(a), int(b), str(r))
            for s, e, a, b, r in con.execute(
                'SELECT stream, epoch, "first", "last", reason FROM gaps WHERE gateway = ?',
                (gateway,),
            )
        ]
    finally:
        con.close()
    return hws, seqs, gaps


def contiguity_problems(
    hws: dict[tuple[str, int], int],
    seqs: dict[tuple[str, int], list[int]],
    gaps: list[tuple[str, int, int, int, str]],
) -> list[str]:
    """Per (stream, epoch): stored seqs and declared gaps cover 1..hw, each seq once."""
    problems = []
    for (stream, epoch), hw in sorted(hws.items()):
        covered = [0] * (hw + 2)
        for q in seqs.get((stream, epoch), []):
            if 1 <= q <= hw:
                covered[q] += 1
            else:
                problems.append(f"{stream}/{epoch}: seq {q} stored beyond hw {hw}")
        for s, e, a, b, reason in gaps:
            if (s, e) != (stream, epoch):
                continue
            if reason not in LEGIT_DROP_REASONS:
                problems.append(f"{stream}/{epoch}: gap {a}..{b} with reason {reason!r}")
            for q in range(max(a, 1), min(b, hw) + 1):
                covered[q] += 1
        missing = [q for q in range(1, hw + 1) if covered[q] == 0]
        twice = [q for q in range(1, hw + 1) if covered[q] > 1]
        if missing:
            problems.append(f"{stream}/{epoch}: {len(missing)} seq(s) missing below hw {hw}, first {missing[:5]}")  # fmt: skip
        if twice:
            problems.append(f"{stream}/{epoch}: {len(twice)} seq(s) both stored and in a gap, first {twice[:5]}")  # fmt: skip
    return problems


def sample_times(records: list[tuple[str, bytes]]) -> tuple[list[float], int]:
    """Sorted timestamps of every telemetry sample, and how many (model, point, ts, value) came
    twice. A record stored twice repeats its values; two different values of one point stamped
    alike are two samples (a CAN drain stamps its frames with one clock reading)."""
    seen: set[tuple[str, int, float, float]] = set()
    dup = 0
    for stream, payload in records:
        if stream != "telemetry":
            continue
        body = msgpack.unpackb(payload, raw=False)
        if "id" not in body:
            continue
        for pid, ts, x in zip(body["id"], body["ts"], body["x"], strict=True):
            key = (str(body.get("model")), int(pid), float(ts), float("nan" if x is None else x))
            if key in seen:
                dup += 1
            seen.add(key)
    return sorted(k[2] for k in seen), dup


def timeline_problems(
    times: list[float], cuts: list[float], since: float
) -> tuple[list[str], list[float]]:
    """Every pause in the sample timeline longer than GAP_S spans a cut; per cut, how long before
    it the last stored sample was taken (``lost window``)."""
    problems: list[str] = []
    windows: list[float] = []
    times = [t for t in times if t >= since - CLOCK_TOLERANCE_S]
    pauses = [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > GAP_S]
    for a, b in pauses:
        inside = [c for c in cuts if a - CLOCK_TOLERANCE_S <= c <= b + CLOCK_TOLERANCE_S]
        if not inside:
            problems.append(f"samples stop for {b - a:.1f} s at {a:.1f} with no power cut in between")  # fmt: skip
    for c in cuts:
        before = [t for t in times if t <= c + CLOCK_TOLERANCE_S]
        if not before:
            problems.append(f"no sample stored before the cut at {c:.1f}")
            continue
        w = max(0.0, c - before[-1])
        windows.append(w)
        if w > LOST_WINDOW_S:
            problems.append(
                f"the last sample stored before the cut at {c:.1f} was taken {w:.1f} s earlier: "
                "records committed before the cut were lost"
            )
    return problems, windows


def verify_cloud(lab: Lab, baseline: Witness, witnesses: list[Witness], report: Report, since: float) -> None:  # fmt: skip
    hws, seqs, gaps = cloud_history(lab.cloud_db, lab.gateway_id)
    problems = contiguity_problems(hws, seqs, gaps)
    epochs: dict[str, set[int]] = {}
    for stream, epoch in hws:
        epochs.setdefault(stream, set()).add(epoch)
    for stream, es in sorted(epochs.items()):
        want = baseline.streams.get(stream, (None, 0))[0]
        if len(es) > 1 or (want is not None and es != {want}):
            problems.append(f"{stream}: epochs {sorted(es)} in the cloud (want only {want}): a queue lost or replaced")  # fmt: skip
    for w in witnesses:
        for stream, (epoch, nxt) in w.streams.items():
            hw = hws.get((stream, epoch), 0)
            if hw < nxt - 1:
                problems.append(f"{stream}/{epoch}: cloud hw {hw}, but seqs up to {nxt - 1} were accepted before {w.label}")  # fmt: skip
    rows = [
        (r.stream, r.payload) for s in ("telemetry", "events") for r in lab.rig.cloud_records(s)
    ]
    times, dup = sample_times(rows)
    if dup:
        problems.append(f"{dup} telemetry sample(s) stored twice")
    events = [p for s, p in rows if s == "events"]
    if len(set(events)) != len(events):
        problems.append(f"{len(events) - len(set(events))} event record(s) stored twice")
    for ev in (msgpack.unpackb(p, raw=False) for p in events):
        if ev.get("kind") == "alarm" and str(ev.get("rule", "")).startswith("uplink_queue"):
            problems.append(f"alarm {ev['rule']} {ev.get('state')}: {ev.get('message', '')}")
    tl, report.lost_window_s = timeline_problems(times, report.cuts, since)
    problems += tl
    report.gaps = gaps
    report.records = {f"{s}/{e}": len(v) for (s, e), v in seqs.items()}
    if problems:
        raise AssertionError("power cut: " + "\n  ".join(["", *problems]))


def summary(r: Report) -> str:
    def span(xs: list[float]) -> str:
        return f"{min(xs):.0f}-{max(xs):.0f} s" if xs else "-"

    lines = [
        f"power-cut: {len(r.cuts)} cut(s); boot to READY=1 {span(r.boot_s)}; "
        f"to an intact queue {span(r.recover_s)}",
        "power-cut: lost window before each cut (sampled, never committed): "
        + ", ".join(f"{w:.1f}" for w in r.lost_window_s)
        + " s",
        "power-cut: cloud records "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.records.items()))
        + f"; declared gaps {len(r.gaps)}",
    ]
    return "\n".join(lines)
