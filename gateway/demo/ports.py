"""The demo's ports: one block of seven on loopback, checked before anything starts.

A busy port found only after the children are up shows as a crashed child with a log to read;
checked first, it is one clear line naming the port, its role and ``--base-port``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

DEFAULT_BASE_PORT = 5020
PORT_COUNT = 7
HOST = "127.0.0.1"
SIM_DEVICES = ("press1", "pump1", "motor1")  # gateway sim --factory demo, in port order
OPCUA_DEVICE = "mould1"  # gateway sim --factory opcua: the OPC UA moulding machine, base+6


@dataclass(frozen=True)
class DemoPorts:
    """``base``..``base+2`` simulated devices, ``base+3`` cloud ROUTER, ``base+4`` cloud PUB,
    ``base+5`` the gateway's status endpoint, ``base+6`` the simulated OPC UA machine (after
    the others, so every port the demo had before keeps its number)."""

    base: int = DEFAULT_BASE_PORT

    def device(self, name: str) -> int:
        return self.base + SIM_DEVICES.index(name)

    @property
    def cloud(self) -> int:
        return self.base + 3

    @property
    def pub(self) -> int:
        return self.base + 4

    @property
    def metrics(self) -> int:
        return self.base + 5

    @property
    def opcua(self) -> int:
        return self.base + 6

    @property
    def opcua_endpoint(self) -> str:
        return f"opc.tcp://{HOST}:{self.opcua}"

    @property
    def cloud_endpoint(self) -> str:
        return f"tcp://{HOST}:{self.cloud}"

    @property
    def pub_endpoint(self) -> str:
        return f"tcp://{HOST}:{self.pub}"

    def roles(self) -> list[tuple[int, str]]:
        """Every port with what uses it, in order."""
        devs = [(self.device(n), f"simulated device {n}") for n in SIM_DEVICES]
        return [
            *devs,
            (self.cloud, "cloud receiver (ZeroMQ ROUTER)"),
            (self.pub, "cloud fan-out (ZeroMQ PUB)"),
            (self.metrics, "gateway status/metrics (HTTP)"),
            (self.opcua, f"simulated OPC UA machine {OPCUA_DEVICE}"),
        ]

    def describe(self) -> str:
        return f"{self.base}-{self.base + PORT_COUNT - 1} on {HOST}"


def parse_base_port(text: str) -> int:
    """argparse type of ``--base-port``: the whole block must fit in the unprivileged range."""
    import argparse

    try:
        base = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    top = 65535 - (PORT_COUNT - 1)
    if not 1024 <= base <= top:
        raise argparse.ArgumentTypeError(
            f"{base} is out of range: the demo uses {PORT_COUNT} ports from the base, "
            f"so give 1024..{top}"
        )
    return base


def busy_ports(ports: DemoPorts) -> list[tuple[int, str, str]]:
    """The ports another program holds: ``(port, role, reason)``.

    A bind with SO_REUSEADDR, as the servers do: a port left in TIME_WAIT by a previous demo run
    is free, a port someone listens on (on 127.0.0.1 or on every address) is not.
    """
    busy = []
    for port, role in ports.roles():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError as exc:
                busy.append((port, role, exc.strerror or str(exc)))
    return busy


def busy_message(ports: DemoPorts, busy: list[tuple[int, str, str]]) -> str:
    lines = [f"gateway demo: port {p} ({role}) is not free: {why}" for p, role, why in busy]
    lines.append(
        f"The demo uses ports {ports.describe()}. Stop what holds them, or move the whole block "
        f"with --base-port N (ports N..N+{PORT_COUNT - 1}), e.g. --base-port {_suggest(ports)}."
    )
    return "\n".join(lines)


def _suggest(ports: DemoPorts) -> int:
    """The next block above this one whose ports are all free right now."""
    base = ports.base + PORT_COUNT
    for _ in range(50):
        if base + PORT_COUNT - 1 > 65535:
            base = 20000
        if not busy_ports(DemoPorts(base)):
            return base
        base += PORT_COUNT
    return base
