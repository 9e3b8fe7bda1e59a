"""The `opcua:` section: what `gateway check` accepts and what it refuses, with file:line:column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config_text
from gateway.config.deps import ASYNCUA, device_requirements
from gateway.drivers.opcua.certs import create

HEAD = "gateway: {id: gw1, data_dir: var}\nuplink: {insecure: true}\n"


def device(opcua: str, points: str = '[{name: temp, node: "ns=2;s=T", poll: fast}]') -> str:
    return (HEAD + "devices:\n  - name: press2\n    driver: opcua\n"
            "    poll_groups: {fast: 100ms, slow: 1s}\n"
            f"    opcua: {opcua}\n    points: {points}\n")  # fmt: skip


def issues(text: str, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config_text(text, str(base / "gw.yaml"))
    return [f"{i.line}:{i.column} {i.path}: {i.message}" for i in e.value.issues]


def test_valid_insecure_device_loads(tmp_path: Path) -> None:
    text = device("{endpoint: 'opc.tcp://10.0.0.5:4840', insecure: true, queue_size: 5, "
                  "groups: [{name: fast, queue_size: 50, deadband: percent, deadband_value: 2}]}")  # fmt: skip
    cfg = load_config_text(text, str(tmp_path / "gw.yaml"))
    dev = cfg.devices[0]
    assert dev.driver == "opcua" and dev.points[0].node == "ns=2;s=T"
    opc = dev.opcua
    assert opc is not None and opc.mode == "subscribe" and opc.security_policy == "None"
    assert opc.certificate_dir == str(tmp_path / "var" / "opcua")
    fast, slow = opc.group("fast"), opc.group("slow")
    assert (fast.queue_size, fast.deadband, fast.deadband_value) == (50, "percent", 2)
    assert (slow.queue_size, slow.deadband) == (5, "none")
    assert device_requirements(dev) == [(ASYNCUA, "driver opcua, opc.tcp://10.0.0.5:4840")]


@pytest.mark.parametrize(
    ("opcua", "where", "message"),
    [
        ("{endpoint: 'opc.tcp://h:4840'}", "7:12 devices[0].opcua.insecure",
         "set `insecure: true` to choose that explicitly"),
        ("{endpoint: 'http://h:4840', insecure: true}", "7:23 devices[0].opcua.endpoint",
         "starts with opc.tcp://"),
        ("{endpoint: 'opc.tcp://h', security_policy: Basic256Sha256, server_certificate: x}",
         "7:12 devices[0].opcua.security_mode", "does not go with security_policy"),
        ("{endpoint: 'opc.tcp://h', security_policy: Basic256Sha256, security_mode: Sign}",
         "7:12 devices[0].opcua.server_certificate", "server_certificate (pinned) or trust_dir"),
        ("{endpoint: 'opc.tcp://h', insecure: true, username: op}",
         "7:12 devices[0].opcua.password_file", "username and password_file go together"),
        ("{endpoint: 'opc.tcp://h', insecure: true, groups: [{name: fsat}]}",
         "7:70 devices[0].opcua.groups[0].name", "unknown poll group 'fsat' (did you mean 'fast'?)"),
        ("{endpoint: 'opc.tcp://h', insecure: true, deadband: percent, deadband_value: 150}",
         "7:89 devices[0].opcua.deadband_value", "a percent deadband is 0..100"),
        ("{endpoint: 'opc.tcp://h', insecure: true, security_mode: Sign}",
         "7:69 devices[0].opcua.security_mode", "does not go with security_policy None"),
        ("{endpoint: 'opc.tcp://h', insecure: true, mode: poll, events: ['i=2253']}",
         "7:74 devices[0].opcua.events", "events come by subscription"),
        ("{endpoint: 'opc.tcp://h', insecure: true, mode: pull}",
         "7:60 devices[0].opcua.mode", "expected one of subscribe, poll"),
    ],
)  # fmt: skip
def test_refused_with_position(tmp_path: Path, opcua: str, where: str, message: str) -> None:
    got = issues(device(opcua), tmp_path)
    assert any(i.startswith(where) and message in i for i in got), got


def test_point_needs_a_node(tmp_path: Path) -> None:
    got = issues(device("{endpoint: 'opc.tcp://h', insecure: true}", "[{name: temp, poll: fast}]"),
                 tmp_path)  # fmt: skip
    assert got == ["8:14 devices[0].points[0].node: missing required key 'node' "
                   "(points of driver opcua need it)"]  # fmt: skip


def test_opcua_section_needed_and_only_for_opcua(tmp_path: Path) -> None:
    text = (HEAD + "devices:\n  - {name: p, driver: opcua}\n"
            "  - {name: m, driver: modbus_tcp, opcua: {endpoint: 'opc.tcp://h'}}\n")  # fmt: skip
    got = issues(text, tmp_path)
    assert any("devices[0].opcua: driver opcua needs a `opcua:` section" in i for i in got), got
    assert any("devices[1].opcua: `opcua` settings do not apply to driver modbus_tcp" in i
               for i in got), got  # fmt: skip


def test_secure_device_needs_the_application_certificate(tmp_path: Path) -> None:
    (tmp_path / "server.der").write_bytes(b"x")
    opcua = ("{endpoint: 'opc.tcp://h', security_policy: Basic256Sha256, "
             "security_mode: SignAndEncrypt, server_certificate: server.der}")  # fmt: skip
    got = issues(device(opcua), tmp_path)
    var = tmp_path / "var"
    assert got == [f"5:13 devices[0].driver: security_policy Basic256Sha256 needs the gateway's "
                   f"application certificate, and {var}/opcua/cert.der is missing; create it "
                   f"with `gateway keys opcua --data-dir {var}`"]  # fmt: skip
    create(var / "opcua")
    cfg = load_config_text(device(opcua), str(tmp_path / "gw.yaml"))
    assert cfg.devices[0].opcua is not None
    assert cfg.devices[0].opcua.server_certificate == str(tmp_path / "server.der")


def test_missing_files_named(tmp_path: Path) -> None:
    opcua = ("{endpoint: 'opc.tcp://h', security_policy: Aes128_Sha256_RsaOaep, "
             "security_mode: Sign, trust_dir: nowhere}")  # fmt: skip
    got = issues(device(opcua), tmp_path)
    assert any("trust directory not found" in i and "nowhere" in i for i in got), got
    opcua = "{endpoint: 'opc.tcp://h', insecure: true, username: op, password_file: pw.txt}"
    got = issues(device(opcua), tmp_path)
    assert any("password file not found" in i for i in got), got


def test_gateway_check_cli_prints_file_line_column(tmp_path: Path) -> None:
    f = tmp_path / "gw.yaml"
    f.write_text(device("{endpoint: 'opc.tcp://h'}"))
    out = subprocess.run([sys.executable, "-m", "gateway", "check", str(f)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert f"{f}:7:12: devices[0].opcua.insecure: security_policy None" in text
    assert "Traceback" not in text


def test_node_ids_checked(tmp_path: Path) -> None:
    points = ('[{name: a, node: "ns=2;x=Foo", poll: fast}, {name: b, node: "i=2253", poll: fast}, '
              '{name: c, node: "nsu=urn:x;s=A.B", poll: fast}, {name: d, node: "Press.Temp", poll: fast}]')  # fmt: skip
    got = issues(device("{endpoint: 'opc.tcp://h', insecure: true}", points), tmp_path)
    assert len(got) == 2, got
    assert got[0].startswith("8:30 devices[0].points[0].node: 'ns=2;x=Foo' is not a NodeId")
    assert "devices[0].points[3].node: 'Press.Temp' is not a NodeId" in got[1]
