"""The CAN driver's README states its limits as the driver behaves (python-can's virtual bus).

Each check drives the real driver and then reads the README's table "What is and is not
supported": a limit that is lifted (or a new one) fails here until the README says so.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import can
import pytest
from docs_support import ROOT, section
from rtu_support import wait_for

from gateway.config import CanConfig, DeviceConfig, PointConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.can import CanDevice, DbcError

README = ROOT / "gateway" / "drivers" / "can" / "README.md"
DBC = """VERSION ""

BO_ 100 STD: 8 Vector__XXX
 SG_ A : 0|16@1+ (1,0) [0|65535] "" Vector__XXX

BO_ 2147483748 EXT: 8 Vector__XXX
 SG_ B : 0|16@1+ (1,0) [0|65535] "" Vector__XXX

BO_ 512 FD: 16 Vector__XXX
 SG_ Low : 0|16@1+ (1,0) [0|65535] "" Vector__XXX
 SG_ High : 64|16@1+ (1,0) [0|65535] "" Vector__XXX

BO_ 300 MUX: 8 Vector__XXX
 SG_ Sel M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ M0 m0 : 8|16@1+ (1,0) [0|65535] "" Vector__XXX

BO_ 301 FL: 8 Vector__XXX
 SG_ F : 0|32@1- (1,0) [0|0] "" Vector__XXX

SIG_VALTYPE_ 301 F : 1;
"""
_channels = itertools.count()


def _row(feature: str) -> str:
    """The README's answer for the table row whose feature cell contains ``feature``."""
    rows = {}
    for line in section(README, "What is and is not supported").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and not set(cells[1]) <= set("- "):
            rows[cells[0]] = cells[1]
    found = [answer for name, answer in rows.items() if feature.lower() in name.lower()]
    assert len(found) == 1, f"{README.name}: one row about {feature!r} expected, rows: {list(rows)}"
    return found[0]


def _device(tmp_path: Path, *signals: str, **opts: object) -> tuple[CanDevice, list[SampleBatch]]:
    (tmp_path / "bus.dbc").write_text(DBC)
    points = tuple(PointConfig(s.replace(".", "_").lower(), signal=s) for s in signals)
    cfg = DeviceConfig("bus", driver="can", points=points,
                       can=CanConfig(interface="virtual", dbc=str(tmp_path / "bus.dbc"),
                                     channel=f"docs-can-{next(_channels)}-{id(tmp_path)}",
                                     batch_delay=0.005, **opts))  # type: ignore[arg-type]  # fmt: skip
    batches: list[SampleBatch] = []
    events: list[DeviceEvent] = []
    ids = {f"bus.{p.name}": i for i, p in enumerate(points)}
    return CanDevice(cfg, ids, batches.append, events.append), batches


@pytest.mark.parametrize(("signal", "feature", "error"), [
    ("FL.F", "IEEE float", "IEEE float signals are not supported"),
    ("MUX.M0", "multiplexed", "multiplexed signals are not supported"),
    ("FD.High", "CAN FD", "lies beyond the first 8 bytes"),  # beyond the first 8 bytes of an FD message
])  # fmt: skip
def test_unsupported_signals_are_refused_as_the_readme_says(
    tmp_path: Path, signal: str, feature: str, error: str
) -> None:
    with pytest.raises(DbcError, match=error):
        _device(tmp_path, signal)
    answer = _row(feature)
    assert answer.startswith("**no**") and error in answer, answer


def test_ids_fd_frames_and_unknown_ids_behave_as_the_readme_says(tmp_path: Path) -> None:
    async def main() -> dict[str, object]:
        dev, batches = _device(tmp_path, "STD.A", "EXT.B", "FD.Low")
        await dev.start()
        tx = can.Bus(interface="virtual", channel=dev.can.channel)
        try:
            await wait_for(lambda: bool(dev.stats()["connected"]), 5.0, "the virtual bus open")
            tx.send(can.Message(arbitration_id=100, is_extended_id=False, data=b"\x01\x00"))
            tx.send(can.Message(arbitration_id=100, is_extended_id=True, data=b"\x02\x00"))
            tx.send(can.Message(arbitration_id=512, is_extended_id=False, is_fd=True,
                                data=bytes((3, 0)) + bytes(6) + bytes((4, 0)) + bytes(6)))  # fmt: skip
            tx.send(can.Message(arbitration_id=0x7FF, is_extended_id=False, data=b"\x05"))
            tx.send(can.Message(arbitration_id=100, is_extended_id=False, data=b"\x06"))
            await wait_for(lambda: dev.stats()["frames"] == 5, 5.0, "five frames received")
        finally:
            tx.shutdown()
            await dev.stop()
        values = {int(p): float(v) for b in batches for p, v in zip(b.point_ids, b.values,
                                                                    strict=True)}  # fmt: skip
        return {"values": values, **dev.stats()}

    st = asyncio.run(asyncio.wait_for(main(), 30.0))
    # 11-bit 100 -> STD.A, 29-bit 100 -> EXT.B; of the FD frame the first 8 bytes; 0x7FF is
    # unknown; a 1-byte frame 100 is too short for the 16-bit STD.A.
    assert st["values"] == {0: 1.0, 1: 2.0, 2: 3.0}, st
    assert st["unmatched_frames"] == 1 and st["short_frames"] == 1, st
    assert _row("extended").startswith("yes") and "different messages" in _row("extended")
    fd = _row("CAN FD")
    assert fd.startswith("**no**") and "first 8 bytes" in fd, fd
    unknown = _row("id no point")
    assert unknown.startswith("ignored") and "`unmatched_frames`" in unknown, unknown
    short = _row("shorter than a signal")
    assert "skipped" in short and "`short_frames`" in short, short


def test_no_j1939_address_claim_as_the_readme_says(tmp_path: Path) -> None:
    """Asked for its address claim (Request PGN 59904 for PGN 60928), the driver stays silent."""

    async def main() -> object:
        dev, _ = _device(tmp_path, "STD.A", j1939=True, address=0xF9)
        await dev.start()
        tx = can.Bus(interface="virtual", channel=dev.can.channel)
        try:
            await wait_for(lambda: bool(dev.stats()["connected"]), 5.0, "the virtual bus open")
            request = (6 << 26) | (0xEA << 16) | (0xFF << 8) | 0x00
            tx.send(can.Message(arbitration_id=request, is_extended_id=True, data=b"\x00\xee\x00"))
            await wait_for(lambda: dev.stats()["frames"] == 1, 5.0, "the request received")
            return await asyncio.to_thread(tx.recv, 0.5)  # an answer would come within ms
        finally:
            tx.shutdown()
            await dev.stop()

    answer = asyncio.run(asyncio.wait_for(main(), 30.0))
    assert answer is None, f"the driver answered the address-claim request: {answer}"
    claim = _row("address claim")
    assert claim.startswith("**no**") and re.search(r"never claims", claim), claim


def test_check_reports_every_unsupported_signal_and_run_refuses(tmp_path: Path) -> None:
    """What the README promises for float, multiplexed and FD signals holds for the commands
    users run: ``gateway check`` names all three in one pass, ``gateway run`` refuses cleanly."""
    (tmp_path / "bus.dbc").write_text(DBC)
    config = tmp_path / "gw.yaml"
    config.write_text(
        "gateway: {id: gw1, data_dir: data, metrics_listen: null}\n"
        "uplink: {endpoints: ['tcp://127.0.0.1:9'], insecure: true, queue: data/q.db}\n"
        "devices:\n"
        "  - name: bus\n"
        "    driver: can\n"
        "    can: {interface: virtual, channel: docs-can-cli, dbc: bus.dbc}\n"
        "    points:\n"
        "      - {name: ok, signal: STD.A}\n"
        "      - {name: fl, signal: FL.F}\n"
        "      - {name: mux, signal: MUX.M0}\n"
        "      - {name: high, signal: FD.High}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 1, check.stdout + check.stderr
    for error in ("bus.fl: IEEE float", "bus.mux: multiplexed", "bus.high: signal 'High' lies"):
        assert error in check.stderr, check.stderr
    assert "OK" not in check.stdout and "Traceback" not in check.stderr
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "run", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "IEEE float signals are not supported" in run.stderr
    assert "Traceback" not in run.stderr
