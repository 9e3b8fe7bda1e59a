"""The supervisor restarts a device that says "online" but has stopped delivering, and only that.

A wedged poll task is made by making one poll hang (as a lost await, a deadlocked lock or a
task killed by an exception would leave it). The supervisor runs on an injected monotonic clock
so "no batch for N periods" is decided by the test, while the devices poll real pymodbus servers
on loopback in real time. The end-to-end test runs the runtime in real time with short periods.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import can
from uplink_support import wait_until

from gateway.config import CanConfig, DeviceConfig, PointConfig, load_config_text
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.core.runtime import Runtime
from gateway.core.supervisor import Supervisor
from gateway.drivers.can import CanDevice
from gateway.drivers.modbus_tcp import ModbusTcpDevice
from gateway.drivers.registry import Device
from gateway.drivers.sim import Factory, SimDeviceSpec, SimPoint, device_config


class ConstModel:
    def update(self, t: float) -> None:
        pass

    def values(self) -> dict[str, float]:
        return {"a": 1.0}

    def write(self, name: str, value: float) -> None:
        pass


SPEC = SimDeviceSpec("dev", 0, (SimPoint("a", 0),), ConstModel)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def wedge(dev: ModbusTcpDevice, times: int = 1) -> asyncio.Event:
    """Make the next ``times`` polls of ``dev`` hang forever; the event is set when one does."""
    hung = asyncio.Event()
    real = dev.poll_window
    left = [times]

    async def poll_window(window: Any) -> None:
        if left[0] > 0:
            left[0] -= 1
            hung.set()
            await asyncio.Event().wait()  # cancelled by stop()
        await real(window)

    dev.poll_window = poll_window  # type: ignore[method-assign]
    return hung


class Harness:
    """Devices feeding a supervisor (as the runtime does), and what it reported."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.changes: list[tuple[str, str | None]] = []
        self.batches = 0
        self._sup: Supervisor | None = None

    def watch(self, devices: dict[str, Device], configs: list[DeviceConfig],
              ids: dict[str, int]) -> None:  # fmt: skip
        self._sup = Supervisor(devices, configs, ids, 3,
                               lambda d, why: self.changes.append((d, why)), self.clock)  # fmt: skip

    @property
    def sup(self) -> Supervisor:
        assert self._sup is not None
        return self._sup

    def on_batch(self, batch: SampleBatch) -> None:
        self.batches += 1
        if self._sup is not None:
            self._sup.seen(int(batch.point_ids[0]))

    def on_event(self, event: DeviceEvent) -> None:
        pass

    async def run_for(self, dt: float) -> None:
        """Let the devices poll for ``dt`` seconds, the clock keeping pace, checking as we go."""
        end = self.clock.t + dt
        while self.clock.t < end:
            await asyncio.sleep(0.05)
            self.clock.t = min(end, self.clock.t + 0.05)
            self.sup.check()

    def advance(self, dt: float) -> None:
        """Move the clock in steps (a single jump would look like a stalled loop)."""
        end = self.clock.t + dt
        while self.clock.t < end:
            self.clock.t = min(end, self.clock.t + 0.5)
            self.sup.check()


def test_wedged_poll_task_is_restarted_and_the_stall_cleared() -> None:
    async def main() -> None:
        async with Factory([SPEC]) as factory:
            factory.tick(0.0)
            cfg = device_config(SPEC, port=factory.ports["dev"], period=0.05, timeout=0.2)
            h = Harness()
            dev = ModbusTcpDevice(cfg, {"dev.a": 0}, h.on_batch, h.on_event)
            h.watch({"dev": dev}, [cfg], {"dev.a": 0})
            await dev.start()
            try:
                await wait_until(lambda: dev.stats()["state"] == "online", "device online")
                await h.run_for(1.0)  # polling fine: limit is 3 x 50 ms + 1 x 1 x 200 ms
                assert h.changes == [] and h.sup.stats()["dev"]["restarts"] == 0
                h.clock.t += 5.0  # the loop itself was late (a long pause): not a stall
                h.sup.check()
                await h.run_for(0.2)
                assert h.changes == [] and h.sup.stats()["dev"]["restarts"] == 0
                hung = wedge(dev)
                await asyncio.wait_for(hung.wait(), 5.0)
                await asyncio.sleep(0.1)  # a batch from before the wedge may still be in flight
                h.advance(1.0)
                assert h.changes and h.changes[0][0] == "dev"
                assert "poll group default: no batch" in str(h.changes[0][1])
                await wait_until(lambda: h.sup.stats()["dev"]["restarts"] == 1, "a restart")
                n = h.batches
                await wait_until(lambda: h.batches >= n + 5, "polls after the restart")
                await h.run_for(0.3)
                assert h.changes == [("dev", h.changes[0][1]), ("dev", None)]
                assert h.sup.stats()["dev"] == {"polled": True, "stalled": None, "restarts": 1}
            finally:
                await dev.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_offline_and_quiet_devices_are_not_stalled_but_a_dead_can_task_is(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        dbc = tmp_path / "bus.dbc"
        dbc.write_text('VERSION ""\nBO_ 256 M: 8 Vector__XXX\n SG_ S : 0|8@1+ (1,0) [0|255] "" X\n')
        can_cfg = DeviceConfig("bus", driver="can", points=(PointConfig("s", signal="M.S"),),
                               can=CanConfig(interface="virtual", channel=f"sup-{id(tmp_path)}",
                                             dbc=str(dbc), batch_delay=0.001))  # fmt: skip
        # Nothing listens on port 1: the TCP device is offline, which is the link state's job.
        tcp_cfg = device_config(SPEC, port=1, period=0.05, timeout=0.2,
                                reconnect_min=0.05, reconnect_max=0.1)  # fmt: skip
        h = Harness()
        bus = CanDevice(can_cfg, {"bus.s": 0}, h.on_batch, h.on_event)
        tcp = ModbusTcpDevice(tcp_cfg, {"dev.a": 1}, h.on_batch, h.on_event)
        h.watch({"bus": bus, "dev": tcp}, [can_cfg, tcp_cfg], {"bus.s": 0, "dev.a": 1})
        tx = can.Bus(interface="virtual", channel=can_cfg.can.channel)  # type: ignore[union-attr]
        await bus.start()
        await tcp.start()
        try:
            await wait_until(lambda: tcp.stats()["state"] == "offline", "tcp device offline")
            await asyncio.sleep(0.1)
            # Online CAN traffic that maps to no point: online, no batches, and not stalled.
            tx.send(can.Message(arbitration_id=0x200, data=bytes(8), is_extended_id=False))
            await wait_until(lambda: bus.stats()["state"] == "online", "bus online")
            h.advance(30.0)
            assert h.changes == []
            assert h.batches == 1  # the TCP device's one offline batch
            assert {d: s["restarts"] for d, s in h.sup.stats().items()} == {"bus": 0, "dev": 0}

            # A CAN receive task that ended is stalled whatever the traffic: restarted.
            assert bus._tasks
            bus._tasks[0].cancel()
            await asyncio.sleep(0.05)
            h.advance(0.5)
            assert h.changes == [("bus", "task was cancelled")]
            await wait_until(lambda: h.sup.stats()["bus"]["restarts"] == 1, "bus restarted")

            async def send_until_decoded() -> None:  # the new bus may not listen yet
                while h.batches < 2:
                    tx.send(can.Message(arbitration_id=0x100, data=bytes(8), is_extended_id=False))
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(send_until_decoded(), 5.0)
            h.advance(0.5)
            assert h.changes[-1] == ("bus", None)
        finally:
            await bus.stop()
            await tcp.stop()
            tx.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))


CONFIG = """
gateway: {{id: gw, data_dir: {data}, metrics_listen: "127.0.0.1:0", stall_periods: 2}}
uplink: {{insecure: true, endpoints: ["tcp://127.0.0.1:1"], queue: {data}/q.db}}
devices:
  - name: dev
    port: {port}
    timeout: 100ms
    poll_groups: {{default: 50ms}}
    points: [{{name: a, address: 0}}]
"""


async def get(rt: Runtime, path: str) -> tuple[int, str]:
    assert rt._status_server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", rt._status_server.port)
    writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


def test_runtime_restarts_a_wedged_device_and_reports_it_on_health_and_status(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with Factory([SPEC]) as factory:
            factory.tick(0.0)
            rt = Runtime(load_config_text(CONFIG.format(data=tmp_path, port=factory.ports["dev"])))
            stop = asyncio.Event()
            run = asyncio.create_task(rt.run(stop))
            try:
                await wait_until(lambda: rt._running, "the runtime to start")
                await wait_until(lambda: rt.metrics.get("samples_total") >= 5, "samples")
                dev = rt.devices["dev"]
                assert isinstance(dev, ModbusTcpDevice)
                wedge(dev, times=1000)  # every poll hangs, across restarts, until released
                code = 200
                info: dict[str, Any] = {}
                for _ in range(100):
                    code, body = await get(rt, "/health")
                    info = json.loads(body)
                    if code == 503:
                        break
                    await asyncio.sleep(0.05)
                assert code == 503, info
                assert "no batch" in info["problems"]["driver_stalled:dev"]
                await wait_until(lambda: rt.supervisor.stats()["dev"]["restarts"] >= 1, "restart")
                status = json.loads((await get(rt, "/status"))[1])
                assert status["supervisor"]["dev"]["stalled"]
                assert "driver_stalled:dev" in status["problems"]

                dev.poll_window = type(dev).poll_window.__get__(dev)  # type: ignore[method-assign]
                await wait_until(lambda: rt.supervisor.stats()["dev"]["stalled"] is None,
                                 "polling again after a restart", 10.0)  # fmt: skip
                assert (await get(rt, "/health"))[0] == 200
                _, metrics = await get(rt, "/metrics")
                assert 'gateway_driver_stalled{device="dev"} 0.0' in metrics
                assert 'gateway_driver_restarts_total{device="dev"}' in metrics
                states = [e["state"] for e in rt.recent if e.get("rule") == "driver_stalled:dev"]
                assert states == ["raised", "cleared"]
            finally:
                stop.set()
                await asyncio.wait_for(run, 10)

    asyncio.run(asyncio.wait_for(main(), 30))
