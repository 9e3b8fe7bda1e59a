"""The cloud side's systemd unit and container recipe: checked offline (systemd-analyze verify,
hadolint, their command lines against the real CLI parser) and, where docker runs, built."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "systemd" / "gateway-cloud@.service"
DOCKERFILE = ROOT / "images" / "cloud" / "Dockerfile"


def _unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = UNIT.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_command_line_is_one_the_cli_accepts() -> None:
    settings = _unit_settings()
    env: dict[str, str] = {}
    for assignment in settings["Environment"]:
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    (exec_start,) = settings["ExecStart"]
    words = [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w).replace("%i", "rx1")
        for w in shlex.split(exec_start)
    ]
    assert words[0] == "/opt/gateway/bin/gateway"
    args = build_parser().parse_args(words[1:])
    assert args.command == "cloud" and args.name == "rx1"
    assert args.control_dir == "/run/gateway-cloud" and args.status_listen == "127.0.0.1:9109"
    assert not args.insecure, "the unit must run CurveZMQ"
    assert settings["RuntimeDirectoryMode"] == ["0700"]  # the control sockets' directory
    assert settings["DynamicUser"] == ["yes"] and settings["ProtectSystem"] == ["strict"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_verifies_against_this_systemd(tmp_path: Path) -> None:
    units = tmp_path / "lib/systemd/system"
    units.mkdir(parents=True)
    if Path("/lib/systemd/system").is_dir():
        shutil.copytree("/lib/systemd/system", units, dirs_exist_ok=True, symlinks=True)
    shutil.copy(UNIT, units)
    (tmp_path / "opt/gateway/bin").mkdir(parents=True)
    exe = tmp_path / "opt/gateway/bin/gateway"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "etc/gateway-cloud").mkdir(parents=True)
    (tmp_path / "etc/gateway-cloud/rx1.env").write_text("BIND=tcp://0.0.0.0:7100\n")
    res = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", "gateway-cloud@rx1.service"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res


def test_dockerfile_lints_and_its_command_is_one_the_cli_accepts() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint (requirements-dev.txt) not installed")
    res = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["/opt/gateway/bin/gateway"]
    args = build_parser().parse_args(cmd)
    assert args.command == "cloud" and args.status_listen == "0.0.0.0:9109"
    assert args.control_dir.startswith("/var/lib/gateway-cloud/")  # on the volume, user-owned
    assert "EXPOSE 7000 7001 9109" in text and "HEALTHCHECK" in text


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(
    os.environ.get("GATEWAY_DOCKER_TESTS") != "1" or not _docker_works(),
    reason="building the image needs a docker daemon and GATEWAY_DOCKER_TESTS=1 (minutes)",
)
def test_image_builds_and_the_receiver_starts(tmp_path: Path) -> None:
    tag = "edge-gateway-cloud:test"
    subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], check=True, timeout=3600
    )
    res = subprocess.run(
        ["docker", "run", "--rm", tag, "cloud", "--insecure", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and "--status-listen" in res.stdout
