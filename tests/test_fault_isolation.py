"""No exception from a callback, a rule or a model ends a poll task or the run loop.

Each driver gets a sample callback that fails like a full disk did in the field (OSError from a
persistence step inside the callback) for its first calls; polling must go on, count the
failures and log them once. Real pymodbus servers on loopback, python-can's virtual bus.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from pathlib import Path

import can
import pytest
from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer
from rtu_support import sim_slave
from uplink_support import wait_until

from gateway.config import CanConfig, DeviceConfig, PointConfig, RtuConfig, load_config_text
from gateway.core.httpd import StatusServer
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.core.runtime import Runtime
from gateway.drivers.can import CanDevice
from gateway.drivers.modbus_rtu import ModbusRtuDevice
from gateway.drivers.modbus_tcp import ModbusTcpDevice
from gateway.drivers.sim import Factory, SimDeviceSpec, SimPoint, device_config

FAILURES = 5


class FailingSink:
    """Raises ENOSPC for the first ``FAILURES`` batches, then records them."""

    def __init__(self) -> None:
        self.calls = 0
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []

    def on_batch(self, batch: SampleBatch) -> None:
        self.calls += 1
        if self.calls <= FAILURES:
            raise OSError(errno.ENOSPC, "No space left on device", "alarms.json.tmp")
        self.batches.append(batch)

    def on_event(self, event: DeviceEvent) -> None:
        self.events.append(event)


class ConstModel:
    def update(self, t: float) -> None:
        pass

    def values(self) -> dict[str, float]:
        return {"a": 1.0, "b": 2.0}

    def write(self, name: str, value: float) -> None:
        pass


SPEC = SimDeviceSpec("dev", 0, (SimPoint("a", 0), SimPoint("b", 1)), ConstModel)


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "on_batch failed" in r.getMessage()]


def test_callback_raising_inside_a_modbus_tcp_poll_keeps_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with Factory([SPEC]) as factory:
            factory.tick(0.0)
            cfg = device_config(SPEC, port=factory.ports["dev"], period=0.02, timeout=0.5)
            sink = FailingSink()
            dev = ModbusTcpDevice(cfg, {"dev.a": 0, "dev.b": 1}, sink.on_batch, sink.on_event)
            await dev.start()
            try:
                await wait_until(lambda: len(sink.batches) >= 10, "polls after the failures")
            finally:
                await dev.stop()
            assert dev.stats()["task_errors"] == FAILURES
            assert dev.stats()["state"] == "online"

    asyncio.run(asyncio.wait_for(main(), 20))
    logs = failure_logs(caplog)
    assert len(logs) == 1 and "No space left on device" in logs[0], logs
    assert any("works again after 5 failures" in r.getMessage() for r in caplog.records)


def test_callback_raising_inside_a_modbus_rtu_poll_keeps_polling() -> None:
    async def main() -> None:
        server = ModbusTcpServer([sim_slave(4, [100] * 20)], address=("127.0.0.1", 0),
                                 framer=FramerType.RTU)  # fmt: skip
        task = asyncio.create_task(server.serve_forever())
        try:
            await wait_until(lambda: server.transport is not None, "RTU server listening")
            port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            cfg = DeviceConfig(
                "t", driver="modbus_rtu", unit_id=4, timeout=0.2, port=port,
                poll_groups={"default": 0.02}, points=(PointConfig("a", 0),),
                rtu=RtuConfig(port="-", transport="tcp", baudrate=115200),
            )  # fmt: skip
            sink = FailingSink()
            dev = ModbusRtuDevice(cfg, {"t.a": 0}, sink.on_batch, sink.on_event)
            await dev.start()
            try:
                await wait_until(lambda: len(sink.batches) >= 10, "RTU polls after the failures")
            finally:
                await dev.stop()
            assert dev.stats()["task_errors"] == FAILURES
        finally:
            await server.shutdown()
            task.cancel()

    asyncio.run(asyncio.wait_for(main(), 20))


DBC = """VERSION ""
BO_ 2364540158 EEC1: 8 Vector__XXX
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
"""


def test_callback_raising_inside_can_decoding_keeps_the_receive_task(tmp_path: Path) -> None:
    async def main() -> None:
        dbc = tmp_path / "bus.dbc"
        dbc.write_text(DBC)
        channel = f"fault-isolation-{id(tmp_path)}"
        cfg = DeviceConfig(
            "truck", driver="can", points=(PointConfig("rpm", signal="EEC1.EngineSpeed"),),
            can=CanConfig(interface="virtual", channel=channel, dbc=str(dbc), batch_delay=0.001),
        )  # fmt: skip
        sink = FailingSink()
        dev = CanDevice(cfg, {"truck.rpm": 0}, sink.on_batch, sink.on_event)
        tx = can.Bus(interface="virtual", channel=channel)
        await dev.start()
        try:
            await asyncio.sleep(0.1)  # the notifier is listening
            msg = can.Message(arbitration_id=0x0CF004FE, data=bytes(8), is_extended_id=True)

            async def send_until(cond: Callable[[], bool], what: str) -> None:
                async def pump() -> None:
                    while not cond():
                        tx.send(msg)
                        await asyncio.sleep(0.01)

                try:
                    await asyncio.wait_for(pump(), 5.0)
                except TimeoutError:
                    raise AssertionError(f"timed out after 5s waiting for {what}") from None

            await send_until(lambda: len(sink.batches) >= 5, "batches after the failures")
        finally:
            await dev.stop()
            tx.shutdown()
        assert dev.stats()["task_errors"] == FAILURES

    asyncio.run(asyncio.wait_for(main(), 20))


RUNTIME_CONFIG = """
gateway: {{id: gw, data_dir: {data}, metrics_listen: null}}
uplink: {{insecure: true, endpoints: ["tcp://127.0.0.1:1"], queue: {data}/q.db}}
devices:
  - name: dev
    port: {port}
    timeout: 500ms
    poll_groups: {{default: 20ms}}
    points: [{{name: a, address: 0}}, {{name: b, address: 1}}]
rules:
  - name: high
    when: dev.a > 0
    actions: [{{alarm: "a is up"}}]
"""


def test_failing_rules_and_rule_tick_end_neither_polling_nor_the_run_loop(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with Factory([SPEC]) as factory:
            factory.tick(0.0)
            text = RUNTIME_CONFIG.format(data=tmp_path, port=factory.ports["dev"])
            rt = Runtime(load_config_text(text, base_dir=tmp_path))

            def broken(*_: object) -> list[object]:
                raise ValueError("a rule bug")

            rt.rules.process = broken  # type: ignore[method-assign]
            rt.rules.tick = broken  # type: ignore[method-assign]
            # Batches tick the rule clock's grid themselves; the loop's own tick call is this.
            rt.rule_clock.advance = broken  # type: ignore[method-assign]
            stop = asyncio.Event()
            run = asyncio.create_task(rt.run(stop))
            try:
                await wait_until(lambda: rt.metrics.get("samples_total") >= 20, "samples")
                submitted = rt.uplink.stats()["submitted"]
                await wait_until(
                    lambda: rt.uplink.stats()["submitted"] > submitted + 5,  # type: ignore[operator]
                    "telemetry going upstream although every rule fails",
                )
                assert not run.done(), "the run loop ended"
                assert rt.faults.total["rules"] >= 10
                assert rt.faults.total["rules: tick"] >= 2
                assert rt.devices["dev"].stats()["state"] == "online"
            finally:
                stop.set()
                await asyncio.wait_for(run, 10)

    logging.getLogger("gateway").setLevel(logging.INFO)
    asyncio.run(asyncio.wait_for(main(), 20))


def test_status_server_answers_500_for_a_failing_page_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> str:
        raise OSError(errno.EIO, "Input/output error")

    async def get(port: int, path: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        return raw.decode().split("\r\n", 1)[0]

    async def main() -> None:
        server = StatusServer("127.0.0.1:0", broken, lambda: {"ok": True}, lambda: (True, {}))
        await server.start()
        try:
            for _ in range(3):
                assert await get(server.port, "/metrics") == "HTTP/1.1 500 Internal Server Error"
            assert await get(server.port, "/status") == "HTTP/1.1 200 OK"
            assert await get(server.port, "/health") == "HTTP/1.1 200 OK"
        finally:
            await server.stop()
        assert server.faults.total == {"status server /metrics": 3}

    asyncio.run(asyncio.wait_for(main(), 10))
    assert sum("status server /metrics failed" in r.getMessage() for r in caplog.records) == 1
