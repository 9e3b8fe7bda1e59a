"""The rig's declared interfaces exist on this machine: the first thing to check at a real rig.

Cheap and without side effects (nothing is opened or written), so a misconfigured rig fails here
with the path or interface name instead of as a timeout in a data-path test.
"""

from __future__ import annotations

import os
import socket

import pytest

from hil_tests.rigfile import RigSpec


@pytest.mark.rig_needs(serial=True)
def test_declared_serial_devices_exist_and_are_accessible(rig_spec: RigSpec) -> None:
    problems = [p for p in rig_spec.missing_interfaces() if p.startswith("serial")]
    problems += [
        f"serial.{n}: {d['path']} is not readable and writable by uid {os.getuid()} (dialout group?)"
        for n, d in rig_spec.serial.items()
        if os.path.exists(d["path"]) and not os.access(d["path"], os.R_OK | os.W_OK)
    ]
    assert not problems, "; ".join(problems)


@pytest.mark.rig_needs(can=True)
def test_declared_can_interfaces_exist(rig_spec: RigSpec) -> None:
    problems = [p for p in rig_spec.missing_interfaces() if p.startswith("can")]
    assert not problems, "; ".join(problems)


def test_modbus_tcp_devices_accept_connections(rig_spec: RigSpec) -> None:
    if rig_spec.simulated:
        pytest.skip("simulated devices start with the rig fixture; the data-path tests cover them")
    unreachable = []
    for name, where in rig_spec.devices.items():
        try:
            socket.create_connection((where["host"], where["port"]), timeout=3).close()
        except OSError as exc:
            unreachable.append(f"devices.{name} {where['host']}:{where['port']}: {exc}")
    assert not unreachable, "; ".join(unreachable)
