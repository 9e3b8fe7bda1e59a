"""``gateway check`` and ``gateway run`` as a user runs them: real subprocesses, real pipes.

One pass reports schema, rule-expression, dependency and model errors together and never says
"OK" before failing; warnings (overlapping registers, durations without a unit) keep exit 0; a
configured driver or model whose library is missing is named with the package to install, by
``check`` and by ``run``, which refuses to start. Libraries are made missing for real: a
``sitecustomize`` on ``PYTHONPATH`` puts a meta-path finder in front that refuses them, exactly as
Python reports a module that is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import check_config, load_config_text

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.yaml"
HEAD = "gateway: {id: gw1, data_dir: var}\nuplink: {insecure: true}\n"

BLOCKER = """\
import os
import sys

_BLOCK = set(filter(None, os.environ.get("GATEWAY_TEST_BLOCK", "").split(",")))


class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Refuse())
"""

RTU_AND_CAN = (
    HEAD
    + """\
devices:
  - name: meter
    driver: modbus_rtu
    rtu: {port: /dev/ttyUSB7, baudrate: 19200}
    points:
      - {name: volts, address: 0, type: float32}
  - name: truck
    driver: can
    can: {interface: virtual, channel: vbus0, dbc: bus.dbc}
    points:
      - {name: rpm, signal: EEC1.EngineSpeed}
"""
)


def gateway(
    *args: str, cwd: Path, block: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m gateway.cli ARGS`` with the modules in ``block`` (comma-separated) refused."""
    env = dict(os.environ)
    env.pop("GATEWAY_TEST_BLOCK", None)
    if block:
        shim = cwd / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(BLOCKER)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), str(ROOT)])
        env["GATEWAY_TEST_BLOCK"] = block
    else:
        env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "gw.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- one pass ------------------------------------------------------------------------------------


def test_schema_error_and_bad_rule_expression_are_reported_together(tmp_path: Path) -> None:
    cfg = write(tmp_path, HEAD + """\
devices:
  - name: press
    port: 0
    points:
      - {name: temp, address: 0, type: float32}
rules:
  - name: hot
    when: press.temp > > 80
    actions: [log: hot]
  - name: typo
    when: press.tmp > 80
    actions: [log: typo]
  - name: fine
    when: press.temp > 90
    actions: [log: fine]
""")  # fmt: skip
    proc = gateway("check", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "OK" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "gw.yaml:5:11: devices[0].port: expected an integer 1..65535; got 0"
    assert lines[1].startswith("gw.yaml:10:24: rule 'hot', when: expected a number")
    assert lines[2:4] == ["    press.temp > > 80", "                 ^"]
    assert lines[4].startswith("gw.yaml:13:11: rule 'typo', when: unknown point 'press.tmp'")
    assert "did you mean 'press.temp'" in lines[4]
    assert lines[-1] == "gw.yaml: 3 errors"
    assert cfg.exists()


def test_bad_expression_in_a_valid_file_never_prints_ok_first(tmp_path: Path) -> None:
    write(tmp_path, HEAD + """\
devices:
  - name: press
    points:
      - {name: temp, address: 0, type: float32}
rules:
  - name: hot
    when: press.temp > 80 and
    actions: [log: "{press.temp:.1f}"]
""")  # fmt: skip
    proc = gateway("check", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""  # the verdict is the last line of stderr, nothing on stdout
    assert "OK" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith("gw.yaml:9:30: rule 'hot', when: ")
    assert proc.stderr.splitlines()[-1] == "gw.yaml: 1 error"


def test_every_part_of_a_rule_is_compiled_and_located(tmp_path: Path) -> None:
    write(tmp_path, HEAD + """\
devices:
  - name: d
    points:
      - {name: t, address: 0, type: float32}
      - {name: w, address: 2, writable: true}
rules:
  - name: r1
    when: d.t > > 3
    clear: d.q < 1
    actions:
      - log: "{d.zz}"
      - write: {point: d.w, value: "d.t +"}
""")  # fmt: skip
    proc = gateway("check", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    located = [line.split(": rule 'r1', ")[0] for line in proc.stderr.splitlines() if "r1" in line]
    assert located == ["gw.yaml:10:17", "gw.yaml:11:12", "gw.yaml:13:16", "gw.yaml:14:42"]
    assert "log message: unknown point 'd.zz' at column 2" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "gw.yaml: 4 errors"


def test_rule_file_errors_come_with_main_file_errors(tmp_path: Path) -> None:
    write(tmp_path, "- name: bad\n  when: nosuch.point > 1\n  actions: [log: x]\n", "r.yaml")
    write(tmp_path, HEAD + "gateway_typo: 1\nrule_files: [r.yaml]\n")
    result = check_config(str(tmp_path / "gw.yaml"), self_test=False)
    shown = [str(f.issue).replace(f"{tmp_path}/", "") for f in result.errors]
    assert shown[0].startswith("gw.yaml:3:1: gateway_typo: unknown key 'gateway_typo'")
    assert shown[1].startswith("r.yaml:2:9: rule 'bad', when: unknown point 'nosuch.point'")
    assert result.code == 1 and not result.summary


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    write(tmp_path, "gateway: {id: [\n")
    proc = gateway("check", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr and "OK" not in proc.stdout
    proc = gateway("check", "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "missing.yaml: file not found" in proc.stderr


# --- warnings ------------------------------------------------------------------------------------


def test_overlapping_registers_and_unitless_durations_warn(tmp_path: Path) -> None:
    write(tmp_path, HEAD + """\
devices:
  - name: press
    timeout: 2
    poll_groups: {fast: 0.25, slow: 5s}
    points:
      - {name: temp, address: 10, type: float32, poll: fast}
      - {name: raw, address: 11, type: uint16, poll: slow}
      - {name: wide, address: 20, type: float64, poll: slow}
      - {name: next, address: 24, type: uint16, poll: slow}
      - {name: run, table: coil, address: 10, poll: slow}
      - {name: flag, table: coil, address: 10, poll: slow}
      - {name: level, table: input, address: 11, type: int16, poll: slow}
rules:
  - name: hot
    when: press.temp > 80
    for: 3
    cooldown: 0
    actions: [log: hot]
""")  # fmt: skip
    proc = gateway("check", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "gw.yaml: OK: 1 devices, 7 points, 1 rules (5 warnings)"
    assert proc.stderr.splitlines() == [
        "gw.yaml:5:14: warning: devices[0].timeout: duration 2 has no unit and is taken as 2 "
        "seconds; write 2s to say so",
        "gw.yaml:6:25: warning: devices[0].poll_groups.fast: duration 0.25 has no unit and is "
        "taken as 0.25 seconds; write 250ms to say so",
        "gw.yaml:9:30: warning: devices[0].points[1].address: 'raw' (uint16, register 11) "
        "overlaps 'temp' (float32, registers 10..11, line 8) in the holding table; check the "
        "address (32-bit types take 2 registers, float64 takes 4)",
        "gw.yaml:13:44: warning: devices[0].points[5].address: 'flag' (bool, register 10) "
        "overlaps 'run' (bool, register 10, line 12) in the coil table; check the address "
        "(32-bit types take 2 registers, float64 takes 4)",
        "gw.yaml:18:10: warning: rules[0].for: duration 3 has no unit and is taken as 3 "
        "seconds; write 3s to say so",
    ]


def test_no_overlap_warning_for_other_drivers_or_adjacent_points() -> None:
    # a float64 at 20 ends at 23: 24 is free; CAN points have no registers
    report = check_config(str(DEMO), self_test=False)
    assert report.code == 0 and report.warnings == [], report.warnings


# --- missing libraries ---------------------------------------------------------------------------


EEC1_DBC = """VERSION ""

BO_ 2364540158 EEC1: 8 Vector__XXX
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
"""


def test_check_names_the_packages_of_missing_driver_libraries(tmp_path: Path) -> None:
    write(tmp_path, RTU_AND_CAN)
    (tmp_path / "bus.dbc").write_text(EEC1_DBC)
    proc = gateway("check", "gw.yaml", cwd=tmp_path, block="serial,can,cantools")
    assert proc.returncode == 1
    assert "OK" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "gw.yaml:5:13: devices[0].driver: device 'meter' (driver modbus_rtu on serial port "
        "/dev/ttyUSB7) needs pyserial, which is not installed; install it: pip install pyserial "
        "(Debian, Raspberry Pi OS: sudo apt install python3-serial)"
    )
    assert "device 'truck' (driver can, interface virtual) needs python-can" in lines[1]
    assert "sudo apt install python3-can" in lines[1]
    assert "device 'truck' (driver can, DBC " in lines[2] and "pip install cantools" in lines[2]
    assert lines[-1] == "gw.yaml: 3 errors"
    # the same config passes with the libraries there: the failure was theirs alone
    proc = gateway("check", "gw.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_run_refuses_to_start_without_a_driver_library(tmp_path: Path) -> None:
    write(tmp_path, RTU_AND_CAN)
    (tmp_path / "bus.dbc").write_text(EEC1_DBC)
    proc = gateway("run", "gw.yaml", cwd=tmp_path, block="serial", timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "gw.yaml: device 'meter' (driver modbus_rtu on serial port /dev/ttyUSB7) needs pyserial, "
        "which is not installed; install it: pip install pyserial (Debian, Raspberry Pi OS: sudo "
        "apt install python3-serial)",
        "gw.yaml: not started; `gateway check` lists every problem",
    ]
    assert not (tmp_path / "var").exists()  # refused before touching the data directory


def test_run_refuses_can_without_python_can(tmp_path: Path) -> None:
    write(tmp_path, RTU_AND_CAN)
    (tmp_path / "bus.dbc").write_text(EEC1_DBC)
    proc = gateway("run", "gw.yaml", cwd=tmp_path, block="can", timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "device 'truck' (driver can, interface virtual) needs python-can" in proc.stderr


def test_run_prints_the_warnings_check_gives(tmp_path: Path) -> None:
    # The same warnings as `gateway check`, before anything else: here the run is then refused
    # for a missing library, which keeps the test short; a run that starts prints them alike.
    write(tmp_path, RTU_AND_CAN.replace("baudrate: 19200}", "baudrate: 19200}\n    timeout: 2"))
    (tmp_path / "bus.dbc").write_text(EEC1_DBC)
    proc = gateway("run", "gw.yaml", cwd=tmp_path, block="serial", timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        "gw.yaml:7:14: warning: devices[0].timeout: duration 2 has no unit and is taken as 2 "
        "seconds; write 2s to say so"
    ), proc.stderr


def test_models_need_a_tflite_interpreter(tmp_path: Path) -> None:
    block = "ai_edge_litert,tflite_runtime"
    proc = gateway("check", str(DEMO), cwd=tmp_path, block=block)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "model '" in line]
    assert len(errors) == 2, proc.stderr
    for line in errors:
        assert line.startswith(f"{DEMO}:")
        assert "needs ai-edge-litert, which is not installed; install it: pip install " in line
    assert "OK" not in proc.stdout
    run = gateway("run", str(DEMO), cwd=tmp_path, block=block, timeout=30)
    assert run.returncode == 1 and "needs ai-edge-litert" in run.stderr


def test_a_modbus_tcp_config_needs_and_imports_none_of_them(tmp_path: Path) -> None:
    cfg = write(tmp_path, HEAD + "devices: [{name: d, points: [{name: p, address: 0}]}]\n")
    proc = gateway("check", "gw.yaml", cwd=tmp_path, block="serial,can,cantools,ai_edge_litert")
    assert proc.returncode == 0 and proc.stdout.startswith("gw.yaml: OK"), proc.stderr
    # checking an RTU config looks the library up without importing it
    rtu = write(tmp_path, RTU_AND_CAN, "rtu.yaml")
    (tmp_path / "bus.dbc").write_text(EEC1_DBC)
    # (the CAN device's DBC is parsed to check its signals: cantools is imported for that alone)
    code = (
        "import sys; from gateway.config import check_config; "
        "c = check_config(sys.argv[1], self_test=False); assert not c.errors, c.errors; "
        "print(sorted(m for m in ('serial', 'can', 'cantools') if m in sys.modules))"
    )
    for path, imported in ((cfg, "[]"), (rtu, "['can', 'cantools']")):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, timeout=60, cwd=ROOT, check=True).stdout  # fmt: skip
        assert out.strip() == imported, path


def test_can_points_need_a_readable_dbc() -> None:
    text = HEAD + (
        "devices:\n  - name: bus\n    driver: can\n    can: {interface: virtual}\n"
        "    points: [{name: rpm, signal: EEC1.EngineSpeed}]\n"
    )
    with pytest.raises(Exception, match=r"can.dbc: the points of a CAN device name DBC signals"):
        load_config_text(text, "gw.yaml")
    missing = text.replace("{interface: virtual}", "{interface: virtual, dbc: /nonexistent.dbc}")
    with pytest.raises(Exception, match=r"can.dbc: DBC not found: /nonexistent.dbc"):
        load_config_text(missing, "gw.yaml")
