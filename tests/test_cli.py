"""The `gateway` command as a user runs it: a real subprocess per call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ["run", "check", "cloud", "subscribe", "sim", "demo"]


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_has_help(sub: str) -> None:
    out = gateway(sub, "--help")
    assert out.returncode == 0, out.stderr
    assert f"usage: gateway {sub}" in out.stdout


def test_check_accepts_the_demo_config() -> None:
    out = gateway("check", "examples/demo.yaml")
    assert out.returncode == 0, out.stderr
    assert "OK: 4 devices, 20 points, 8 rules" in out.stdout


def test_check_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "gateway: {id: gw}\n"
        "devices:\n"
        "  - name: d\n"
        "    points:\n"
        "      - {name: x, address: 0, type: flaot32}\n"
        "uplink: {insecure: true}\n"
    )
    out = gateway("check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:5:" in out.stderr and "devices[0].points[0].type" in out.stderr


def test_check_reports_rule_expression_errors_with_column(tmp_path: Path) -> None:
    bad = tmp_path / "rule.yaml"
    bad.write_text(
        "gateway: {id: gw}\n"
        "devices:\n"
        "  - name: d\n"
        "    points: [{name: x, address: 0}]\n"
        "rules:\n"
        "  - name: r\n"
        "    when: d.x > (3\n"
        "    actions: [{log: hi}]\n"
        "uplink: {insecure: true}\n"
    )
    out = gateway("check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:7:19:" in out.stderr and "expected" in out.stderr


def test_missing_config_exits_2() -> None:
    assert gateway("check", "no/such/file.yaml").returncode == 2
    assert gateway("run", "no/such/file.yaml").returncode == 2


def test_cloud_refuses_to_run_without_security_or_insecure_flag() -> None:
    out = gateway("cloud")
    assert out.returncode == 2 and "--insecure" in out.stderr
