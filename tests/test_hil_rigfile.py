"""The rig file schema, the skip-with-reason rules and the operator summary (hil_tests/)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil_tests.report import Outcome, first_line, render_summary
from hil_tests.rigfile import RigFileError, load_rig

ROOT = Path(__file__).resolve().parent.parent

REAL_RIG = """\
name: bench-3
gateway: {config: examples/demo.yaml, status: 127.0.0.1:19108}
cloud: {bind: tcp://127.0.0.1:17000, pub: tcp://127.0.0.1:17001}
devices:
  press1: {host: 127.0.0.1, port: 1}
serial:
  rtu1: {path: /dev/nonexistent-ttyUSB9, baudrate: 19200, parity: E}
can:
  - {interface: nocan7, bitrate: 250000}
writable: [press1.run, motor1.*]
"""


def test_shipped_rig_files_are_valid() -> None:
    sim = load_rig(ROOT / "hil_tests/rig.sim.yaml")
    assert sim.simulated and sim.may_write("press1.run")
    example = load_rig(ROOT / "hil_tests/rig.example.yaml")
    assert not example.simulated
    assert example.serial and example.can and example.writable


def test_writable_list_and_missing_interfaces(tmp_path: Path) -> None:
    (tmp_path / "rig.yaml").write_text(REAL_RIG)
    rig = load_rig(tmp_path / "rig.yaml")
    assert rig.may_write("press1.run") and rig.may_write("motor1.speed")
    assert not rig.may_write("pump1.setpoint")
    missing = rig.missing_interfaces()
    assert "serial.rtu1: /dev/nonexistent-ttyUSB9 does not exist" in missing
    assert any("nocan7" in m for m in missing)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("name: bench-3\n", ""), "missing ['name']"),
        (lambda t: t.replace("serial:", "serail:"), "unknown key(s) ['serail']"),
        (lambda t: t.replace("port: 1}", "port: 70000}"), "devices.press1.port"),
        (lambda t: t.replace("path: /dev", "pth: /dev"), "serial.rtu1: unknown key(s) ['pth']"),
        (lambda t: t.replace("[press1.run, motor1.*]", "[press1]"), "writable: expected"),
        (lambda t: t.replace("  - {interface", "  - {iface"), "can[0]: unknown key(s)"),
        (lambda t: t + "a: [\n", "not valid YAML"),
    ],
)
def test_bad_rig_files_name_the_key(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "rig.yaml").write_text(edit(REAL_RIG))
    with pytest.raises(RigFileError) as exc:
        load_rig(tmp_path / "rig.yaml")
    assert message in str(exc.value) and "rig.yaml" in str(exc.value)


def test_summary_lists_every_outcome_with_reason_and_verdict() -> None:
    text = render_summary(
        "bench-3",
        "rig.yaml",
        [
            Outcome("hil_tests/test_a.py::test_ok", "passed", 1.25),
            Outcome("hil_tests/test_a.py::test_skip", "skipped", 0.0, "rig has no CAN"),
            Outcome("hil_tests/test_a.py::test_bad", "failed", 3.0, "AssertionError: boom"),
        ],
        12.0,
    )
    assert "1 passed, 1 failed, 1 skipped" in text
    assert "SKIP  test_a.py::test_skip" in text and "rig has no CAN" in text
    assert "FAIL  test_a.py::test_bad  (3.0s)\n        AssertionError: boom" in text
    assert text.rstrip().splitlines()[-2] == "Result: FAIL"
    assert first_line("\n>   assert x\nE   AssertionError: nope\n") == "AssertionError: nope"


def test_a_real_rig_run_skips_what_it_cannot_serve_and_reports(tmp_path: Path) -> None:
    """pytest on the rig-interface tests with a rig whose serial device and CAN bus are absent."""
    (tmp_path / "rig.yaml").write_text(REAL_RIG)
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.txt"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "hil_tests/test_rig_interfaces.py", "hil_tests/test_data_path.py",
         "-k", "interfaces or overheat or value_change",
         f"--junitxml={junit}", f"--hil-summary={summary}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "GATEWAY_RIG": str(tmp_path / "rig.yaml")},
    )  # fmt: skip
    assert res.returncode == 1, res.stdout[-2000:]
    text = summary.read_text()
    assert "rig 'bench-3'" in text
    assert "FAIL  test_rig_interfaces.py::test_declared_serial_devices_exist" in text
    assert "/dev/nonexistent-ttyUSB9 does not exist" in text
    assert "nocan7 does not exist" in text
    assert "devices.press1 127.0.0.1:1" in text  # nothing listens on port 1
    assert "needs simulated physics" in text  # the overheat episode
    assert "writes pump1.setpoint; rig 'bench-3' does not list it under `writable:`" in text
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["rig"] == "bench-3"
    assert int(suite.get("failures", "0")) == 3 and int(suite.get("skipped", "0")) == 2
