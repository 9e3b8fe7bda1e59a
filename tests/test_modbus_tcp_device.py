"""ModbusTcpDevice against real pymodbus servers (the sim) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from modbus_support import Recorder

from gateway.config import DeviceConfig, PointConfig
from gateway.core.model import Quality
from gateway.drivers.modbus_tcp import ModbusTcpDevice, WriteError
from gateway.drivers.sim import Factory, SimDeviceSpec, SimPoint, device_config

VALUES = {
    "i16": -1234.5,
    "u16": 654.32,
    "i32": -7654321.0,
    "u32": 3000000000.0,
    "f32": 21.5,
    "f32wl": -3.25,
    "f32bl": 1.0e-3,
    "f32both": 12345.678,
    "f64": 2.718281828459045,
    "f64wl": -1.0e10,
    "u32wl": 65537.0,
    "setpoint": 10.0,
    "run": 1.0,
    "din": 1.0,
    "dout": 0.0,
}

POINTS = (
    SimPoint("i16", 0, type="int16", scale=0.1),
    SimPoint("u16", 1, type="uint16", scale=0.01),
    SimPoint("i32", 2, type="int32"),
    SimPoint("u32", 4, type="uint32"),
    SimPoint("f32", 6, type="float32"),
    SimPoint("f32wl", 8, type="float32", word_order="little"),
    SimPoint("f32bl", 10, type="float32", byte_order="little"),
    SimPoint("f32both", 12, type="float32", word_order="little", byte_order="little"),
    SimPoint("f64", 14, type="float64"),
    SimPoint("f64wl", 18, type="float64", word_order="little"),
    SimPoint("u32wl", 0, table="input", type="uint32", word_order="little", offset=-1.0),
    SimPoint("setpoint", 30, type="float32", word_order="little", writable=True),
    SimPoint("run", 3, table="coil", type="bool", writable=True),
    SimPoint("din", 1, table="discrete", type="bool"),
    SimPoint("dout", 2, table="discrete", type="bool"),
)


class ConstModel:
    """A machine whose values only change when written."""

    def __init__(self) -> None:
        self._v = dict(VALUES)

    def update(self, t: float) -> None:
        pass

    def values(self) -> dict[str, float]:
        return self._v

    def write(self, name: str, value: float) -> None:
        self._v[name] = value


SPEC = SimDeviceSpec("dev", 0, POINTS, ConstModel)


@contextlib.asynccontextmanager
async def running_factory() -> AsyncIterator[Factory]:
    f = Factory([SPEC])
    await f.start()
    f.tick(0.0)
    try:
        yield f
    finally:
        await f.close()


def _config(port: int, **kw: object) -> DeviceConfig:
    kw.setdefault("reconnect_min", 0.02)
    kw.setdefault("reconnect_max", 0.1)
    return device_config(SPEC, port=port, period=0.05, timeout=0.2, **kw)


def _polled(rec: Recorder, n: int) -> bool:
    return len(rec.batches) >= n


def _n(dev: ModbusTcpDevice, key: str) -> float:
    return float(dev.stats()[key])


def _ids(cfg: DeviceConfig) -> dict[str, int]:
    return {f"{cfg.name}.{p.name}": i for i, p in enumerate(cfg.points)}


Rig = tuple[Factory, ModbusTcpDevice, Recorder]


def with_rig(scenario: Callable[[Rig], Awaitable[None]]) -> Callable[[], None]:
    """Run ``scenario`` against a started sim device and a started driver, both closed after."""

    def test() -> None:
        async def main() -> None:
            async with running_factory() as factory:
                cfg = _config(factory.ports["dev"])
                rec = Recorder()
                dev = ModbusTcpDevice(cfg, _ids(cfg), rec.on_batch, rec.on_event)
                await dev.start()
                try:
                    await scenario((factory, dev, rec))
                finally:
                    await dev.stop()

        asyncio.run(main())

    test.__name__ = scenario.__name__  # pytest must not see the scenario's signature
    return test


def with_factory(scenario: Callable[[Factory], Awaitable[None]]) -> Callable[[], None]:
    def test() -> None:
        async def main() -> None:
            async with running_factory() as factory:
                await scenario(factory)

        asyncio.run(main())

    test.__name__ = scenario.__name__  # pytest must not see the scenario's signature
    return test


def _all_good(rec: Recorder, ids: dict[str, int]) -> bool:
    latest = rec.latest(ids)
    return len(latest) == len(ids) and all(q == Quality.GOOD for _, q in latest.values())


@with_rig
async def test_reads_decode_every_type_and_order(rig: Rig) -> None:
    _, dev, rec = rig
    ids = _ids(dev.config)
    await rec.wait(lambda: _all_good(rec, ids), "a good sample of every point")
    latest = rec.latest(ids)
    for p in POINTS:
        got, _ = latest[f"dev.{p.name}"]
        want = VALUES[p.name]
        if p.type == "float32":
            assert got == pytest.approx(want, rel=1e-6), p.name
        elif p.type in ("float64", "bool"):
            assert got == want, p.name
        else:  # integer registers hold round((v - offset) / scale)
            assert got == pytest.approx(round((want - p.offset) / p.scale) * p.scale + p.offset), (
                p.name
            )
    assert rec.kinds() == ["online"]
    # One batch per response, one timestamp per batch, and coalescing: 4 tables -> 4 requests.
    assert dev.plan.request_count == 4
    assert all(len(set(b.ts.tolist())) == 1 for b in rec.batches)
    stats = dev.stats()
    assert stats["connected"] is True and stats["exceptions"] == 0 and stats["timeouts"] == 0
    assert _n(dev, "responses") >= 4 and _n(dev, "last_rtt_ms") > 0


@with_rig
async def test_writes_reach_the_device_and_bad_writes_are_refused(rig: Rig) -> None:
    factory, dev, rec = rig
    await rec.wait(lambda: rec.kinds() == ["online"], "the device to come online")
    await dev.write("dev.setpoint", 42.25)  # float32 word-little: fc 16
    await dev.write("dev.run", 0)  # coil: fc 5
    assert factory.values("dev")["setpoint"] == 42.25
    assert factory.values("dev")["run"] == 0.0
    await dev.write("dev.run", 1)
    assert factory.values("dev")["run"] == 1.0
    for point, value, reason in [
        ("dev.nope", 1.0, "not a point"),
        ("dev.f32", 1.0, "not writable"),
        ("dev.din", 1.0, "not writable"),
        ("dev.setpoint", math.nan, "not finite"),
    ]:
        with pytest.raises(WriteError, match=reason) as err:
            await dev.write(point, value)
        assert err.value.refused
    assert dev.stats()["writes"] == 3 and dev.stats()["write_errors"] == 4
    # The written value comes back through the poll.
    ids = _ids(dev.config)
    await rec.wait(
        lambda: rec.latest(ids).get("dev.setpoint", (0.0, 0))[0] == 42.25, "setpoint read back"
    )


@with_factory
async def test_write_out_of_range_is_refused(factory: Factory) -> None:
    pts = (SimPoint("sp", 0, type="uint16", scale=0.1, writable=True),)
    spec = dataclasses.replace(SPEC, points=pts)
    cfg = device_config(spec, port=factory.ports["dev"], timeout=0.2)
    rec = Recorder()
    dev = ModbusTcpDevice(cfg, _ids(cfg), rec.on_batch, rec.on_event)
    with pytest.raises(WriteError, match="out of range") as err:
        await dev.write("dev.sp", 7000.0)  # 70000 raw > 65535
    assert err.value.refused
    with pytest.raises(WriteError, match="offline") as err:
        await dev.write("dev.sp", 1.0)  # not started: no connection
    assert not err.value.refused


@with_rig
async def test_timeouts_give_bad_samples_and_one_offline_then_one_online(rig: Rig) -> None:
    factory, dev, rec = rig
    await rec.wait(lambda: rec.kinds() == ["online"], "the device to come online")
    factory.stall("dev")
    await rec.wait(lambda: "offline" in rec.kinds(), "the offline event")
    n_batches = len(rec.batches)
    # Keep the device hung through more timeouts and reconnects: still one offline event.
    await rec.wait(lambda: _n(dev, "timeouts") >= 6, "more timeouts while hung")
    assert rec.kinds() == ["online", "offline"]
    bad = [b for b in rec.batches if (b.quality == Quality.BAD).all()]
    assert bad and all(np.isnan(b.values).all() for b in bad)
    assert len(rec.batches) > n_batches - 1
    assert _n(dev, "timeouts") >= 6 and dev.stats()["state"] == "offline"
    with pytest.raises(WriteError) as err:
        await dev.write("dev.run", 1)
    assert not err.value.refused
    factory.stall("dev", False)
    await rec.wait(lambda: rec.kinds()[-1] == "online", "the online event after recovery")
    assert rec.kinds() == ["online", "offline", "online"]
    ids = _ids(dev.config)
    mark = len(rec.batches)
    await rec.wait(
        lambda: len(rec.batches) > mark + 8 and _all_good(rec, ids), "good samples again"
    )


@with_rig
async def test_server_restart_reconnects_with_one_online_event(rig: Rig) -> None:
    factory, dev, rec = rig
    await rec.wait(lambda: rec.kinds() == ["online"], "the device to come online")
    await factory.stop_device("dev")
    await rec.wait(lambda: rec.kinds() == ["online", "offline"], "the offline event")
    await rec.wait(lambda: _n(dev, "connect_failures") >= 2, "failed reconnect attempts")
    assert rec.kinds() == ["online", "offline"]
    last = rec.batches[-1]
    assert (last.quality == Quality.BAD).all() and len(last) == len(POINTS)
    await factory.start_device("dev")
    await rec.wait(lambda: rec.kinds()[-1] == "online", "the online event after restart")
    assert rec.kinds() == ["online", "offline", "online"]
    assert dev.stats()["reconnects"] == 1 and dev.stats()["connected"] is True


@with_factory
async def test_exception_response_gives_bad_samples_and_is_counted(factory: Factory) -> None:
    # holding 200 does not exist on the device: it answers ILLEGAL DATA ADDRESS.
    points = (
        PointConfig("ok", 1, type="uint16", scale=0.01),
        PointConfig("missing", 200, type="uint16", poll="slow"),
    )
    cfg = DeviceConfig(
        name="dev",
        port=factory.ports["dev"],
        timeout=0.2,
        points=points,
        poll_groups={"default": 0.05, "slow": 0.05},
    )
    rec = Recorder()
    ids = _ids(cfg)
    dev = ModbusTcpDevice(cfg, ids, rec.on_batch, rec.on_event)
    await dev.start()
    try:
        await rec.wait(lambda: _n(dev, "exceptions") >= 3, "three exception responses")
        latest = rec.latest(ids)
        assert latest["dev.ok"] == (pytest.approx(654.32), Quality.GOOD)
        assert math.isnan(latest["dev.missing"][0]) and latest["dev.missing"][1] == Quality.BAD
        assert rec.kinds() == ["online"]  # a device that answers exceptions is not offline
    finally:
        await dev.stop()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_device_starts_offline_and_backs_off() -> None:
    asyncio.run(_unreachable())


async def _unreachable() -> None:
    cfg = _config(_unused_port(), reconnect_min=0.01, reconnect_max=0.04)
    rec = Recorder()
    dev = ModbusTcpDevice(cfg, _ids(cfg), rec.on_batch, rec.on_event)
    await dev.start()  # must not raise
    try:
        await rec.wait(lambda: _n(dev, "connect_failures") >= 4, "four connect attempts")
        assert rec.kinds() == ["offline"]
        assert len(rec.batches) == 1 and (rec.batches[0].quality == Quality.BAD).all()
    finally:
        await dev.stop()
    assert dev.stats()["connected"] is False


@with_factory
async def test_many_devices_share_one_loop(factory: Factory) -> None:
    recs: list[Recorder] = []
    devs: list[ModbusTcpDevice] = []
    for i in range(20):
        cfg = dataclasses.replace(_config(factory.ports["dev"]), name=f"dev{i}")
        cfg = dataclasses.replace(cfg, points=tuple(p for p in cfg.points if p.table == "holding"))
        rec = Recorder()
        recs.append(rec)
        devs.append(ModbusTcpDevice(cfg, _ids(cfg), rec.on_batch, rec.on_event))
    await asyncio.gather(*(d.start() for d in devs))
    try:
        for r in recs:
            await r.wait(functools.partial(_polled, r, 3), "three polls of every device")
        assert all(r.kinds() == ["online"] for r in recs)
    finally:
        await asyncio.gather(*(d.stop() for d in devs))
