"""Simulated factory: signal models on an injected clock, register maps, pymodbus servers."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from pathlib import Path

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from gateway.drivers.sim import (
    Factory,
    MotorModel,
    PressModel,
    PumpModel,
    bench_factory,
    demo_factory,
    run_factory,
)

DEMO_YAML = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
DT = 0.1  # model step of the simulations below, like a 100 ms poll


def _first_time(model: PressModel, cond: str, limit: float, t0: float = 0.0) -> float:
    t = t0
    while t < t0 + limit:
        t += DT
        model.update(t)
        if (cond == "above80" and model.temp > 80.0) or (cond == "below65" and model.temp < 65.0):
            return t - t0
    raise AssertionError(f"{cond} not reached within {limit}s")


def test_press_heats_to_80_in_15_to_20_s_while_running() -> None:
    press = PressModel(seed=1)
    press.update(0.0)
    assert 67.0 < press.temp < 69.0
    assert 15.0 <= _first_time(press, "above80", 60.0) <= 20.0


def test_press_cools_below_65_within_15_s_when_stopped() -> None:
    press = PressModel(seed=1)
    press.update(0.0)
    t = _first_time(press, "above80", 60.0)
    while press.temp < 82.0:
        t += DT
        press.update(t)
    press.write("run", 0.0)
    assert _first_time(press, "below65", 15.0, t0=t) <= 15.0
    v = press.values()
    assert v["run"] == 0.0 and v["pressure"] < 20.0 and v["vibration"] < 1.0


def test_demo_rules_raise_and_clear_the_overheat_alarm_within_a_minute() -> None:
    """The demo rules, replayed against the press model at 10 Hz with measurement noise."""
    press = PressModel(seed=7)
    t, hot_since, cold_since = 0.0, None, None
    raised = cleared = restarted = None
    parts_at_start = press.values()["parts"]
    while t < 60.0:
        press.update(t)
        v = press.values()
        temp, run = v["temp"], v["run"]
        hot_since = (hot_since if hot_since is not None else t) if temp > 80 else None
        if raised is None and hot_since is not None and t - hot_since >= 2.0:
            raised = t
            press.write("run", 0)  # the rule's write action
        if raised is not None and cleared is None and temp < 70:
            cleared = t
        cold_since = (
            (cold_since if cold_since is not None else t) if (run == 0 and temp < 65) else None
        )
        if cold_since is not None and t - cold_since >= 1.0 and restarted is None:
            restarted = t
            press.write("run", 1)
        t += DT
    assert raised is not None and 17.0 < raised < 25.0
    assert cleared is not None and raised < cleared < 40.0
    assert restarted is not None and cleared < restarted < 45.0
    assert press.values()["parts"] > parts_at_start


def test_pump_flow_follows_setpoint() -> None:
    pump = PumpModel(seed=2)
    pump.update(0.0)
    for k in range(1, 101):
        pump.update(k * DT)
    assert pump.values()["flow"] == pytest.approx(12.5, abs=0.3)
    pump.write("setpoint", 20.0)
    for k in range(101, 201):
        pump.update(k * DT)
    v = pump.values()
    assert v["flow"] == pytest.approx(20.0, abs=0.5) and v["setpoint"] == 20.0
    assert v["pressure"] == pytest.approx(1 + 0.02 * 400, abs=0.5)
    with pytest.raises(KeyError):
        pump.write("flow", 1.0)


def test_motor_vibration_excursion_trips_and_clears_the_iso_rule() -> None:
    motor = MotorModel(seed=3)
    above_since, longest, t = None, 0.0, 0.0
    values = []
    while t < 45.0:
        motor.update(t)
        vib = motor.values()["vibration"]
        values.append(vib)
        above_since = (above_since if above_since is not None else t) if vib > 7.1 else None
        if above_since is not None:
            longest = max(longest, t - above_since)
        t += DT
    assert longest > 3.0
    assert max(values[:250]) < 7.1  # quiet for the first 25 s
    assert values[-1] < 6.0  # back to normal after the excursion
    assert 3.0 < sorted(values[:250])[125] < 5.0


def test_models_are_deterministic_for_a_seed() -> None:
    a, b = MotorModel(seed=5), MotorModel(seed=5)
    for k in range(50):
        a.update(k * DT)
        b.update(k * DT)
        assert a.values() == b.values()


def test_demo_factory_matches_demo_yaml_register_map() -> None:
    cfg = yaml.safe_load(DEMO_YAML.read_text())
    specs = {s.name: s for s in demo_factory(5020)}
    modbus = [d for d in cfg["devices"] if d.get("driver", "modbus_tcp") == "modbus_tcp"]
    assert [d["name"] for d in modbus] == list(specs)  # the OPC UA machine: test_sim_opcua.py
    for dev in modbus:
        spec = specs[dev["name"]]
        assert spec.port == dev["port"] and spec.unit_id == dev["unit_id"]
        sim_points = {p.name: p for p in spec.points}
        assert set(sim_points) == {p["name"] for p in dev["points"]}
        for p in dev["points"]:
            sp = sim_points[p["name"]]
            assert (sp.table, sp.address, sp.type) == (
                p.get("table", "holding"),
                p["address"],
                p.get("type", "uint16"),
            ), p
            assert (sp.word_order, sp.byte_order) == (
                p.get("word_order", "big"),
                p.get("byte_order", "big"),
            ), p
            assert sp.scale == p.get("scale", 1.0) and sp.writable == p.get("writable", False), p


def test_bench_factory_layout() -> None:
    specs = bench_factory(3, 21, base_port=6000)
    assert [s.port for s in specs] == [6000, 6001, 6002]
    regs = sorted((p.address, p.words) for p in specs[0].points)
    assert sum(w for _, w in regs) == 21
    assert all(a + w == b for (a, w), (b, _) in zip(regs, regs[1:], strict=False))
    assert {p.type for p in specs[0].points} == {"uint16", "float32"}
    model = specs[0].model()
    model.update(0.0)
    assert set(model.values()) == {p.name for p in specs[0].points}
    assert [s.port for s in bench_factory(2, 4, base_port=0)] == [0, 0]


def _free(specs: list) -> list:  # type: ignore[type-arg]
    return [dataclasses.replace(s, port=0) for s in specs]


def test_servers_serve_the_register_map_and_accept_writes() -> None:
    """An independent client (pymodbus) reads what the models say and writes the run coil."""

    async def main() -> None:
        now = [0.0]
        async with Factory(_free(demo_factory()), clock=lambda: now[0]) as factory:
            factory.tick()
            client = AsyncModbusTcpClient("127.0.0.1", port=factory.ports["press1"], timeout=2)
            assert await asyncio.wait_for(client.connect(), 5), "connect to press1"
            try:
                rr = await client.read_holding_registers(0, count=6)
                assert not rr.isError()
                temp = struct.unpack(">f", struct.pack(">HH", *rr.registers[:2]))[0]
                v = factory.values("press1")
                assert temp == pytest.approx(v["temp"], rel=1e-6)
                assert rr.registers[2] == round(v["pressure"] / 0.01)
                assert (await client.read_coils(0, count=1)).bits[0] is True
                assert not (await client.write_coil(0, False)).isError()
                assert factory.values("press1")["run"] == 0.0
                assert (await client.read_coils(0, count=1)).bits[0] is False
                assert (await client.read_holding_registers(6, count=1)).isError()
                assert (await client.write_register(2, 5)).isError()  # read-only register
                assert factory.counters("press1")["writes"] == 1
            finally:
                client.close()

    asyncio.run(main())


def test_run_factory_ticks_on_the_injected_clock_and_stops() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        ticks: list[dict[str, dict[str, float]]] = []
        clock = iter(float(k) for k in range(10_000))

        def on_tick(snapshot: dict[str, dict[str, float]]) -> None:
            ticks.append(snapshot)
            if len(ticks) == 25:
                stop.set()

        await asyncio.wait_for(
            run_factory(
                _free(demo_factory()), stop, clock=lambda: next(clock), tick=0.001, on_tick=on_tick
            ),
            10,
        )
        assert len(ticks) == 25
        # 24 s of model time: the press heated from 68 degC and has made parts.
        assert ticks[-1]["press1"]["temp"] > 80.0 and ticks[-1]["press1"]["run"] == 1.0
        assert ticks[-1]["press1"]["parts"] >= 10

    asyncio.run(main())
