"""The OPC UA driver against asyncua's own server in a child process (a stack we did not write):
subscriptions of thousands of changing variables, every type, polled reads, writes."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from gateway.core.model import Quality
from gateway.drivers.modbus_tcp.device import WriteError
from gateway.drivers.opcua.device import OpcuaDevice
from gateway.drivers.registry import DeviceFactory
from tests.opcua_server import TYPED
from tests.opcua_support import (
    Collector,
    ServerProcess,
    consecutive,
    device_config,
    point_ids,
    running,
    wait_for,
)

N = 2000


@pytest.fixture(scope="module")
def server():
    with ServerProcess(n=N, period=0.2, events=True) as srv:
        yield srv


def counters(n: int) -> list[tuple[str, str]]:
    return [(f"c{i}", f"ns=2;s=C{i}") for i in range(n)]


async def run(cfg, until, what: str, timeout: float = 20.0):
    """Through the registry, as the runtime creates devices."""
    col = Collector()
    dev = DeviceFactory().create(cfg, point_ids(cfg), col.on_batch, col.on_event)
    assert isinstance(dev, OpcuaDevice)
    await dev.start()
    try:
        await wait_for(lambda: until(col, dev), what, timeout)
    finally:
        await dev.stop()
    return col, dev


def test_subscription_delivers_every_change_of_thousands_of_variables(server) -> None:
    cfg = device_config(server.url, counters(N), poll=0.1, queue_size=20)

    def enough(col, dev):
        return min(len(col.values(0)), len(col.values(N - 1))) >= 8

    col, dev = asyncio.run(run(cfg, enough, f"8 changes of each of {N} counters"))
    for pid in (0, N // 2, N - 1):
        vals = col.values(pid)
        assert consecutive(vals) == [], f"point {pid}: every change once, in order"
    st = dev.stats()
    assert st["gaps"] == 0 and st["duplicates"] == 0 and st["bad_nodes"] == 0
    assert st["publish_responses"] >= 3
    # source timestamps are the server's, not our receive time
    b = next(b for b in col.batches if len(b) > 100)
    assert not math.isnan(b.ts[0]) and b.ts.min() > 1.7e9
    assert {e.kind for e in col.events} == {"online"}


def test_types_statuses_strings_and_arrays(server) -> None:
    nodes = [(f"t_{name}", f"ns=2;s=T.{name}") for name, _, _ in TYPED]
    nodes += [("arr", "ns=2;s=T.Array"), ("missing", "ns=2;s=NoSuchNode")]
    cfg = device_config(server.url, nodes)
    ids = point_ids(cfg)

    def done(col, dev):
        return any(e.kind == "text" for e in col.events) and len(col.values(ids["press.t_Double"]))

    col, dev = asyncio.run(run(cfg, done, "first values of every type"))
    got = {name: col.values(ids[f"press.t_{name}"]) for name, _, _ in TYPED}
    assert got["Boolean"][0] == 1.0
    assert got["Int16"][0] == -1234 and got["UInt16"][0] == 65000
    assert got["Int32"][0] == -123456 and got["UInt32"][0] == 4000000000
    assert got["Int64"][0] == -(2**40) and got["UInt64"][0] == 2**50
    assert got["Float"][0] == 1.5 and got["Double"][0] == 2.25
    assert got["DateTime"][0] == 1767323045.0  # 2026-01-02T03:04:05Z, seconds since the epoch
    assert got["StatusCode"][0] == 0x80340000
    # String: not a number; it goes upstream as a text event, no NaN sample
    assert got["String"] == []
    assert [e.detail for e in col.events if e.kind == "text"] == ["press.t_String=lot-42"]
    # An array: the point holds one number, so the sample is BAD and counted
    arr = col.values(ids["press.arr"], good_only=False)
    assert arr and math.isnan(arr[0])
    st = dev.stats()
    assert st["unsupported_values"] >= 1 and st["bad_nodes"] == 1  # NoSuchNode refused


def test_polled_reads(server) -> None:
    nodes = counters(50) + [("t_Int32", "ns=2;s=T.Int32"), ("missing", "ns=2;s=NoSuchNode"),
                            ("lot", "ns=2;s=T.String")]  # fmt: skip
    cfg = device_config(server.url, nodes, poll=0.1, mode="poll")
    ids = point_ids(cfg)

    col, dev = asyncio.run(run(cfg, lambda col, dev: dev.reads >= 5, "5 polled reads"))
    assert dev.polled is True
    assert col.values(ids["press.t_Int32"])[0] == -123456
    vals = col.values(0)
    assert len(vals) >= 5 and vals == sorted(vals)
    bad = [b.quality[b.point_ids == ids["press.missing"]] for b in col.batches]
    assert all((q == Quality.BAD).all() for q in bad if len(q))  # BadNodeIdUnknown -> BAD
    # a String read every period is one text event while it stays the same, and no sample
    assert [e.detail for e in col.events if e.kind == "text"] == ["press.lot=lot-42"]
    assert col.values(ids["press.lot"], good_only=False) == []


def test_writes_respect_data_type_and_access_level(server) -> None:
    nodes = [("w16", "ns=2;s=W.Int16"), ("wb", "ns=2;s=W.Boolean"), ("ro", "ns=2;s=RO"),
             ("c0", "ns=2;s=C0")]  # fmt: skip
    cfg = device_config(server.url, nodes, writable=("w16", "wb", "ro"))

    async def body() -> None:
        async with running(cfg) as (col, dev):
            await wait_for(lambda: dev.stats()["online"], "online")
            await dev.write("press.w16", -300)
            await dev.write("press.wb", 1)
            await wait_for(lambda: -300.0 in col.values(0) and 1.0 in col.values(1), "echo")
            with pytest.raises(WriteError, match="fraction") as e:
                await dev.write("press.w16", 1.5)
            assert e.value.refused
            with pytest.raises(WriteError, match=r"out of the node's range -32768\.\.32767"):
                await dev.write("press.w16", 40000)
            with pytest.raises(WriteError, match="not writable .*AccessLevel"):
                await dev.write("press.ro", 2)
            with pytest.raises(WriteError, match="set writable: true"):
                await dev.write("press.c0", 2)
            with pytest.raises(WriteError, match="write 0 or 1"):
                await dev.write("press.wb", 2)
            assert dev.stats()["writes"] == 2 and dev.stats()["write_errors"] == 5

    asyncio.run(body())


def test_unreachable_server_is_offline_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    from tests.opcua_support import free_port

    caplog.set_level("WARNING", "gateway.drivers.opcua")
    cfg = device_config(f"opc.tcp://127.0.0.1:{free_port()}/", counters(3))
    col, dev = asyncio.run(
        run(cfg, lambda col, dev: dev.stats()["connect_failures"] >= 2, "two failed connects")
    )
    off = [e for e in col.events if e.kind == "offline"]
    assert len(off) == 1 and "cannot connect" in off[0].detail
    assert col.bad_batches() == 1  # one BAD batch when going offline, not one per attempt
    insecure = [r for r in caplog.records if "security policy None" in r.getMessage()]
    assert len(insecure) == 1 and "clear text" in insecure[0].getMessage()


def test_events_of_a_node_onto_the_events_stream(server) -> None:
    cfg = device_config(server.url, counters(2), events=("i=2253",))

    def two(col, dev):
        return len([e for e in col.events if e.kind == "opcua_event"]) >= 2

    col, dev = asyncio.run(run(cfg, two, "two events from the Server object"))
    evs = [e for e in col.events if e.kind == "opcua_event"]
    assert "severity=500" in evs[0].detail and "message=tick " in evs[0].detail
    assert "source=" in evs[0].detail and "type=i=2041" in evs[0].detail
    ticks = [int(e.detail.rsplit("tick ", 1)[1]) for e in evs]
    assert ticks[1] - ticks[0] == 5 and abs(evs[0].ts - time.time()) < 60
    assert dev.stats()["events"] >= 2 and dev.stats()["bad_nodes"] == 0
    assert len(col.values(0)) >= 1  # the points still flow beside the events
