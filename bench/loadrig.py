"""The load rig the end-to-end benchmark and the soak share: N simulated bench devices x M registers
(``gateway sim --factory bench``, real pymodbus servers on loopback) and a gateway config that polls
every register of every device each ``period`` s, with one rule per device."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

from gateway.core.processes import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent


def free_port_block(n: int) -> int:
    """A base port with n consecutive free ports after it (best effort, loopback only)."""
    for base in range(21000, 60000, 97):
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def gateway_config(
    work: Path,
    base: int,
    devices: int,
    registers: int,
    period: float,
    cloud: str,
    status: str,
    gateway_id: str = "bench-gw",
) -> dict[str, Any]:
    """Polls registers r0..r{M-1} of devices on ports base..base+N-1 every ``period`` s; the uplink
    is insecure here: callers that want CurveZMQ replace ``insecure`` with keys."""
    devs = []
    for i in range(devices):
        points = [
            {"name": f"r{j}", "address": j, "type": "uint16", "poll": "fast"}
            for j in range(registers)
        ]
        devs.append(
            {
                "name": f"dev{i}",
                "host": "127.0.0.1",
                "port": base + i,
                "timeout": "1s",
                "poll_groups": {"fast": period},
                "points": points,
            }
        )
    rules = [
        {
            "name": f"dev{i}_high",
            "when": f"dev{i}.r0 > 65000 and dev{i}.r1 >= 0",
            "for": "1s",
            "actions": [{"alarm": f"dev{i} high {{dev{i}.r0}}"}],
        }
        for i in range(devices)
    ]
    return {
        "gateway": {"id": gateway_id, "data_dir": str(work / "data"), "metrics_listen": status},
        "devices": devs,
        "rules": rules,
        "uplink": {
            "endpoints": [cloud],
            "queue": str(work / "data" / "queue.db"),
            "insecure": True,
        },
    }


def sim_processes(
    work: Path, base: int, devices: int, registers: int, procs: int = 2
) -> list[ManagedProcess]:
    """``procs`` simulator processes (not started), so the devices are not the bottleneck."""
    py = [sys.executable, "-m", "gateway.cli", "--log-level", "warning"]
    per = -(-devices // max(1, procs))
    blocks = [(base + k, min(per, devices - k)) for k in range(0, devices, per)]
    return [
        ManagedProcess(
            f"sim{k}",
            [
                *py,
                "sim",
                "--factory",
                "bench",
                "--devices",
                str(n),
                "--registers",
                str(registers),
                "--base-port",
                str(b),
            ],
            work / f"sim{k}.log",
            cwd=str(ROOT),
        )  # fmt: skip
        for k, (b, n) in enumerate(blocks)
        if n
    ]
