"""The power-cut test's judgement (images/debian-rpi/power_cut.py) and the image host tools
(images/host-deps.sh), without booting anything.

The VM itself runs in `make image-test` (one cut) and `make power-cut` (ten); these tests show that
the checks there can fail: each kind of loss, duplicate or silent repair is put in front of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "images/debian-rpi"))

import power_cut as pc  # noqa: E402


def _status(streams: dict[str, tuple[int, int]], **uplink: object) -> dict[str, object]:
    return {
        "uplink": {
            "streams": {
                s: {"epoch": e, "next_seq": q, "acked_hw": 0} for s, (e, q) in streams.items()
            },
            "quarantined": None,
            "epoch_rotations": 0,
            **uplink,
        }
    }


BASE = pc.Witness("start", 0.0, {"telemetry": (7, 10), "events": (7, 3)})
BEFORE_CUT = pc.Witness("cut 1/1", 1.0, {"telemetry": (7, 500), "events": (7, 9)})


def test_queue_intact_after_a_clean_boot() -> None:
    pc.check_queue_intact(_status({"telemetry": (7, 520), "events": (7, 9)}), BASE, BEFORE_CUT)


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (_status({"telemetry": (7, 480), "events": (7, 9)}), "accepted records were lost"),
        (_status({"telemetry": (8, 1), "events": (7, 9)}), "epoch 7 became 8"),
        (_status({"events": (7, 9)}), "'telemetry' is gone"),
        (
            _status({"telemetry": (7, 520), "events": (7, 9)}, quarantined="q.corrupt-1"),
            "quarantined",
        ),  # fmt: skip
        (_status({"telemetry": (7, 520), "events": (7, 9)}, epoch_rotations=1), "epoch_rotations"),
        (
            _status({"telemetry": (7, 520), "events": (7, 9)}, lost_records=219),
            "lost_records = 219",
        ),
    ],
)
def test_queue_not_intact_is_named(status: dict[str, object], says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        pc.check_queue_intact(status, BASE, BEFORE_CUT)


def test_contiguous_history_with_a_declared_quota_gap_passes() -> None:
    hws = {("telemetry", 7): 10}
    seqs = {("telemetry", 7): [1, 2, 3, 7, 8, 9, 10]}
    assert pc.contiguity_problems(hws, seqs, [("telemetry", 7, 4, 6, "quota")]) == []


@pytest.mark.parametrize(
    ("seqs", "gaps", "says"),
    [
        ([1, 2, 3, 8, 9, 10], [("telemetry", 7, 4, 6, "quota")], "1 seq(s) missing"),
        ([1, 2, 3, 7, 8, 9, 10], [("telemetry", 7, 4, 6, "lost")], "reason 'lost'"),
        ([1, 2, 3, 4, 7, 8, 9, 10], [("telemetry", 7, 4, 6, "quota")], "both stored and in a gap"),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [], "beyond hw"),
    ],
)
def test_holes_and_overlaps_are_named(
    seqs: list[int], gaps: list[tuple[str, int, int, int, str]], says: str
) -> None:
    problems = pc.contiguity_problems({("telemetry", 7): 10}, {("telemetry", 7): seqs}, gaps)
    assert any(says in p for p in problems), problems


def _telemetry(
    model: str, ids: list[int], ts: list[float], x: list[float] | None = None
) -> tuple[str, bytes]:
    xs = [0.0] * len(ids) if x is None else x
    body = {"v": 1, "model": model, "id": ids, "ts": ts, "x": xs, "q": [0] * len(ids)}
    return "telemetry", msgpack.packb(body)


def test_a_sample_stored_twice_is_counted() -> None:
    rows = [_telemetry("m", [1, 2], [10.0, 10.0]), _telemetry("m", [1], [11.0]), _telemetry("m", [1], [10.0])]  # fmt: skip
    times, dup = pc.sample_times(rows)
    assert dup == 1 and times == [10.0, 10.0, 11.0]


def test_two_values_of_a_point_stamped_alike_are_two_samples_not_a_duplicate() -> None:
    rows = [_telemetry("m", [1, 1], [10.0, 10.0], [1500.0, 1525.0])]
    assert pc.sample_times(rows) == ([10.0, 10.0], 0)
    assert pc.sample_times([*rows, _telemetry("m", [1], [10.0], [1525.0])])[1] == 1


def test_timeline_pauses_must_span_a_cut_and_lose_little() -> None:
    times = [float(t) for t in range(100, 200)] + [float(t) for t in range(300, 400)]
    problems, windows = pc.timeline_problems(times, [199.5], since=100.0)
    assert problems == [] and windows == [0.5]
    # the same pause with no cut in it: records vanished while the gateway ran
    problems, _ = pc.timeline_problems(times, [], since=100.0)
    assert any("no power cut" in p for p in problems), problems
    # a cut long after the last stored sample: committed records were lost with the cut
    problems, windows = pc.timeline_problems(times, [199.0 + pc.LOST_WINDOW_S + 5], since=100.0)
    assert any("were lost" in p for p in problems) and windows[0] > pc.LOST_WINDOW_S


def test_timeline_ignores_what_came_before_the_cuts() -> None:
    # the boot test's watchdog freeze pauses the samples before the power cuts begin
    times = [1.0, 2.0, 90.0] + [float(t) for t in range(100, 150)]
    assert pc.timeline_problems(times, [149.5], since=100.0)[0] == []


def test_host_deps_names_the_recommended_packages_the_image_needs(tmp_path: Path) -> None:
    """A fresh machine: nothing installed. Packages only recommended by the tools (and so left out
    by --no-install-recommends) must be named: the cross libc headers, arch-test, qemu's ROMs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink("/bin/sh", bin_dir / "sh")
    env = {"PATH": str(bin_dir), "HOST_DEPS_SYSROOT": str(tmp_path / "empty")}
    out = subprocess.run(
        ["/bin/sh", str(ROOT / "images/host-deps.sh"), "image", "--print"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    for pkg in ("libc6-dev-arm64-cross", "arch-test", "ipxe-qemu", "mmdebstrap", "qemu-system-arm"):
        assert pkg in out, f"host-deps.sh image does not install {pkg}: {out}"
