"""Driver registration through the ``gateway.drivers`` entry-point group.

A third-party driver is a package of its own: here a tiny one written into a temp dir with its
``*.dist-info`` (METADATA, entry_points.txt), on the ``sys.path`` of a real subprocess. It must
load like a built-in, ``gateway check`` must accept its config section and report that
section's errors at file:line:column, and an unknown driver name must list the installed ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from gateway.drivers import registry

ROOT = Path(__file__).resolve().parents[1]

ACME = '''
"""A counter box: the smallest complete driver (transport: a timer; decoder: a counter)."""

import asyncio

import numpy as np

from gateway.config.options import Option, Section
from gateway.drivers.base import DriverBase


class AcmeDevice(DriverBase):
    point_key = "channel"
    config_section = Section("acme", "devices[].acme", "devices[].acme", "An Acme box.", (
        Option("rate", "integer", "Samples per second.", 10, minimum=1, maximum=1000),
        Option("label", "string", "Shown on the box.", "acme"),
    ))

    @classmethod
    def parse_config(cls, parsed, error):
        if parsed.values["rate"] % 2:
            error(parsed.at("rate"), parsed.path + ".rate", "rate must be even (the box halves it)")
            return None
        return super().parse_config(parsed, error)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wrote = []

    def tasks(self):
        return [("count", self._count())]

    async def _count(self):
        n = 0
        while True:
            n += 1
            self.set_online()
            self.emit_values(self.all_ids, self.clock(), np.full(len(self.all_ids), float(n)))
            await asyncio.sleep(1.0 / self.config.settings["rate"])

    async def write_value(self, point, value):
        self.wrote.append([point, value])
'''

RUN = """
import asyncio, json, sys
from gateway.config import load_config
from gateway.drivers.base import WriteError
from gateway.drivers.registry import DeviceFactory

cfg = load_config(sys.argv[1]).devices[0]
ids = {f"{cfg.name}.{p.name}": i for i, p in enumerate(cfg.points)}
batches, events = [], []

async def main():
    dev = DeviceFactory().create(cfg, ids, batches.append, events.append)
    await dev.start()
    loop = asyncio.get_running_loop()
    end = loop.time() + 5.0
    while len(batches) < 3 and loop.time() < end:
        await asyncio.sleep(0.01)
    await dev.write("box.setpoint", 4.5)
    try:
        await dev.write("box.count", 1.0)
        refused = None
    except WriteError as exc:
        refused = [str(exc), exc.refused]
    await dev.stop()
    print(json.dumps({"class": type(dev).__name__, "settings": dict(cfg.settings),
                      "batches": len(batches), "first": batches[0].values.tolist(),
                      "events": [e.kind for e in events], "refused": refused,
                      "wrote": dev.wrote, "stats": dev.stats()}))

asyncio.run(main())
"""

GOOD = """\
gateway: {id: gw1}
uplink: {insecure: true}
devices:
  - name: box
    driver: acme
    acme: {rate: 40}
    points:
      - {name: count, channel: 1}
      - {name: setpoint, channel: 2, writable: true}
"""

BAD = """\
gateway: {id: gw1}
uplink: {insecure: true}
devices:
  - name: box
    driver: acme
    acme:
      rate: 3
    points:
      - {name: count, channel: 1}
  - name: box2
    driver: acme
    acme: {rate: 5000, colour: red}
    points:
      - {name: count}
  - name: box3
    driver: acmee
  - name: box4
    driver: broken
  - name: box5
    driver: notaclass
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A package dir holding the acme driver, a broken one, and their dist-info."""
    site = tmp_path / "site"
    (site / "acme_driver").mkdir(parents=True)
    (site / "acme_driver" / "__init__.py").write_text(textwrap.dedent(ACME))
    info = site / "acme_driver-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-driver\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[gateway.drivers]\n"
        "acme = acme_driver:AcmeDevice\n"
        "broken = acme_driver.missing:Nope\n"
        "notaclass = acme_driver:np\n"
        "can = acme_driver:AcmeDevice\n"  # a built-in name: ignored, the built-in stays
    )
    return site


def _run(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = [str(site)] if site is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_a_third_party_driver_loads_runs_and_writes(plugin: Path, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "run.py").write_text(RUN)
    check = _run(["-m", "gateway", "check", "good.yaml"], plugin, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    got = _run(["run.py", "good.yaml"], plugin, tmp_path)
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    assert out["class"] == "AcmeDevice"
    assert out["settings"] == {"rate": 40, "label": "acme"}
    assert out["batches"] >= 3 and out["first"] == [1.0, 1.0]
    assert out["events"] == ["online"]
    assert out["wrote"] == [["box.setpoint", 4.5]]
    assert out["refused"] == ["box.count: not writable (set writable: true)", True]
    stats = out["stats"]
    assert stats["online"] and stats["writes"] == 1 and stats["write_errors"] == 1


def test_gateway_run_serves_a_third_party_device(plugin: Path, tmp_path: Path) -> None:
    """`gateway run` builds the device like a built-in: its values and stats reach /status."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head = f'gateway: {{id: gw1, data_dir: data, metrics_listen: "127.0.0.1:{port}"}}\n'
    body = GOOD.replace(
        "uplink: {insecure: true}", 'uplink: {insecure: true, endpoints: ["tcp://127.0.0.1:1"]}'
    )
    (tmp_path / "run.yaml").write_text(head + body.split("\n", 1)[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "run.yaml"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    status: dict = {}
    try:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                    status = json.load(r)
            except OSError:
                status = {}
            values = [p["value"] for p in status.get("points", []) if p["name"] == "box.count"]
            if values and values[0] and values[0] > 2:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert status.get("devices", {}).get("box", {}).get("state") == "online", err
    count = next(p for p in status["points"] if p["name"] == "box.count")
    assert count["quality"] == "good" and count["value"] > 2, "no values from the acme device"
    assert "device box online" in err


def test_check_reports_the_plugin_section_at_file_line_column(plugin: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    got = _run(["-m", "gateway", "check", "bad.yaml"], plugin, tmp_path)
    assert got.returncode == 1
    lines = got.stderr.splitlines()
    assert "Traceback" not in got.stderr
    assert "driver 'can' of package acme-driver ignored: 'can' is a built-in driver" in got.stderr
    assert "bad.yaml:7:13: devices[0].acme.rate: rate must be even (the box halves it)" in lines
    assert "bad.yaml:12:18: devices[1].acme.rate: expected an integer 1..1000; got 5000" in lines
    assert any(line.startswith("bad.yaml:12:24: devices[1].acme.colour: unknown key 'colour'")
               for line in lines), lines  # fmt: skip
    assert "bad.yaml:14:9: devices[1].points[0].channel: missing required key 'channel' " \
           "(points of driver acme need it)" in lines  # fmt: skip
    unknown = next(line for line in lines if line.startswith("bad.yaml:16:13: devices[2].driver:"))
    assert "unknown driver 'acmee' (did you mean 'acme'?)" in unknown
    assert (
        "installed drivers: acme, broken, can, modbus_rtu, modbus_tcp, node, notaclass" in unknown
    )
    broken = next(line for line in lines if line.startswith("bad.yaml:18:13: devices[3].driver:"))
    assert "driver 'broken' (acme_driver.missing:Nope) cannot be loaded: No module named" in broken
    assert "bad.yaml:20:13: devices[4].driver: driver 'notaclass' (acme_driver:np) is not a " \
           "class but module" in lines  # fmt: skip


def test_without_the_package_the_driver_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    got = _run(["-m", "gateway", "check", "good.yaml"], None, tmp_path)
    assert got.returncode == 1
    assert "good.yaml:5:13: devices[0].driver: unknown driver 'acme'; installed drivers: can, " \
           "modbus_rtu, modbus_tcp, node" in got.stderr  # fmt: skip
    assert "devices[0].acme" not in got.stderr  # the section is not a second issue


def test_builtins_work_without_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source checkout (no entry points installed): the built-in table still has all four."""
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    registry.available.cache_clear()
    try:
        assert set(registry.available()) == {"modbus_tcp", "modbus_rtu", "node", "can", "opcua"}
        from gateway.drivers.modbus_tcp import ModbusTcpDevice

        assert registry.load("modbus_tcp") is ModbusTcpDevice
    finally:
        registry.available.cache_clear()


def test_builtins_through_their_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed metadata declares the built-ins too: the same targets, no conflict."""
    eps = [EntryPoint(n, v, registry.GROUP) for n, v in _pyproject_drivers().items()]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    registry.available.cache_clear()
    try:
        assert registry.available() == registry.BUILTIN
    finally:
        registry.available.cache_clear()


def _pyproject_drivers() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data["project"]["entry-points"][registry.GROUP])


def test_pyproject_declares_every_builtin() -> None:
    assert _pyproject_drivers() == registry.BUILTIN
    for name in registry.BUILTIN:
        assert callable(registry.load(name).create)
