"""Interop with a second OPC UA implementation: node-opcua's server (tests/opcua_node/server.js).

Discovery through the real CLI (typed variables, units, ranges, skipped types), and asyncua's
plain client reading, writing and subscribing as a smoke check of the server itself, and our
driver (its own publish loop into the compiled decoder, polled Reads, a typed write) against a
server we did not write. Skipped with the reason where Node.js or the modules are missing
(``make opcua-node`` installs them); under CI=true that is a failure.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opcua_servers import TYPED, RunningServer, pytest_server
from test_opcua_discover import check_typed, points_of

pytest.importorskip("asyncua")

ROOT = Path(__file__).resolve().parent.parent
DOUBLES = 50
PERIOD_MS = 100


@pytest.fixture(scope="module")
def node_server() -> Iterator[RunningServer]:
    srv = pytest_server("node", doubles=DOUBLES, period_ms=PERIOD_MS)
    yield srv
    srv.stop()


def test_discovery_of_node_opcua(node_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "node.yaml"
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "discover", "opcua", node_server.endpoint,
         "--out", str(out), "--name", "nodesrv"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = out.read_text(encoding="utf-8")
    points = points_of(text)
    check_typed(points, text)  # Objects/Plant is the shared prefix: dropped from the names
    assert len([n for n in points if n.startswith("doubles_value")]) == DOUBLES
    assert points["doubles_value7"]["node"] == "ns=1;s=Plant.Doubles.Value7"
    assert points["typed_temperature"]["description"] == "Oven temperature"
    assert yaml.safe_load(text)["devices"][0]["name"] == "nodesrv"


def test_asyncua_client_reads_writes_subscribes(node_server: RunningServer) -> None:
    """The plain stack against node-opcua: typed reads, a write, a subscription that sees every
    Double change within a bounded wait."""
    from asyncua import Client, ua

    async def main() -> dict[str, Any]:
        async with Client(node_server.endpoint, timeout=5) as client:
            typed = {
                name: await client.get_node(f"ns=1;s=Plant.Typed.{name}").read_value()
                for name, (ptype, *_rest) in TYPED.items()
                if ptype is not None
            }
            setpoint = client.get_node("ns=1;s=Plant.Typed.Setpoint")
            await setpoint.write_value(ua.Variant(42.5, ua.VariantType.Double))
            typed["Setpoint"] = await setpoint.read_value()
            seen: dict[str, int] = {}

            class Handler:
                def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                    key = node.nodeid.to_string()
                    seen[key] = seen.get(key, 0) + 1

            sub = await client.create_subscription(PERIOD_MS, Handler())
            nodes = [client.get_node(f"ns=1;s=Plant.Doubles.Value{i}") for i in range(DOUBLES)]
            await sub.subscribe_data_change(nodes, sampling_interval=PERIOD_MS)
            deadline = asyncio.get_running_loop().time() + 10.0
            # Waiting for: every Double reported at least 3 times (initial value + 2 changes).
            while asyncio.get_running_loop().time() < deadline:
                if len(seen) == DOUBLES and min(seen.values()) >= 3:
                    break
                await asyncio.sleep(0.1)
            await sub.delete()
            typed["_seen"] = seen
            return typed

    got = asyncio.run(main())
    seen = got.pop("_seen")
    assert len(seen) == DOUBLES and min(seen.values()) >= 3, seen
    assert got["Setpoint"] == 42.5
    assert isinstance(got["Running"], bool)
    assert isinstance(got["Counter"], int) and isinstance(got["EnergyWh"], int)
    assert got["EnergyWh"] >= 123456
    assert isinstance(got["Label"], str) and got["Label"].startswith("batch-")
    assert hasattr(got["LastChange"], "year")
    assert -15 <= got["Temperature"] - 20 <= 15


def test_continuation_points_are_followed(node_server: RunningServer) -> None:
    """50 Doubles in one folder, 16 references per Browse answer: node-opcua hands out
    continuation points (asyncua's server ignores the limit), discovery follows them."""
    import asyncio

    from asyncua.client.ua_client import UaClient

    from gateway.drivers.opcua import discover as d
    from gateway.drivers.opcua import discover_browse

    nexts: list[int] = []
    original = UaClient.browse_next

    async def browse_next(self: UaClient, params: Any) -> Any:
        nexts.append(len(params.ContinuationPoints))
        return await original(self, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(discover_browse, "REFERENCES_PER_BROWSE", 16)
        mp.setattr(UaClient, "browse_next", browse_next)
        text, _ = asyncio.run(d.run(d.build_args([node_server.endpoint])))
    assert nexts, "no BrowseNext: the server handed out no continuation point"
    points = points_of(text)
    assert len([n for n in points if n.startswith("doubles_value")]) == DOUBLES


def _typed_points() -> list[tuple[str, str]]:
    doubles = [(f"d{i}", f"ns=1;s=Plant.Doubles.Value{i}") for i in range(DOUBLES)]
    typed = [(name.lower(), f"ns=1;s=Plant.Typed.{name}")
             for name in ("Counter", "Temperature", "Running", "Label", "Setpoint")]  # fmt: skip
    return doubles + typed


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_our_driver_against_node_opcua(node_server: RunningServer, mode: str) -> None:
    """Every Double and the typed variables arrive as samples (the counter's changes in order,
    none twice), the String as text events; a rule-style write lands with the node's type."""
    from asyncua import Client
    from opcua_support import device_config, running, wait_for

    cfg = device_config(node_server.endpoint, _typed_points(), poll=PERIOD_MS / 1000,
                        writable=("setpoint",), mode=mode)  # fmt: skip
    counter = DOUBLES  # point ids follow the config order

    async def main() -> tuple[dict[str, Any], Any, float]:
        from opcua_support import Collector  # noqa: F401  (the type of col)

        async with running(cfg) as (col, dev):
            await wait_for(
                lambda: all(len(col.values(i)) >= 3 for i in range(DOUBLES + 2)),
                "three values of every Double, the counter and the temperature",
            )
            await wait_for(lambda: any(e.kind == "text" for e in col.events), "a text event")
            await dev.write("press.setpoint", 17.25)
            async with Client(node_server.endpoint, timeout=5) as client:
                written = await client.get_node("ns=1;s=Plant.Typed.Setpoint").read_value()
            return dev.stats(), col, written

    stats, col, written = asyncio.run(main())
    assert written == 17.25
    ticks = col.values(counter)
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks) or mode == "poll", ticks
    texts = [e.detail for e in col.events if e.kind == "text"]
    assert texts and all(t.startswith("press.label=batch-") for t in texts), texts
    assert stats["online"] and stats["gaps"] == 0 and stats["task_errors"] == 0, stats
    assert stats["writes"] == 1 and stats["write_errors"] == 0
