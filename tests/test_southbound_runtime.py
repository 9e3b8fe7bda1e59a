"""Every southbound driver through the real Runtime, configured from YAML like `gateway run`.

A Modbus RTU slave (pymodbus serial server behind a pty at line rate), a MicroPython node
(the SDK file under CPython, over UDP) and a J1939 engine on python-can's virtual bus feed one
gateway; a rule closes the loop across drivers by writing the RTU slave's value to the node.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import can
from rtu_support import PtyLine, SerialSlaves, sim_slave, wait_for
from test_can_driver import DBC
from test_node_driver import gwnode
from uplink_support import running_receiver

from gateway.cloud.store import SQLiteCloudStore
from gateway.config import load_config
from gateway.core.runtime import Runtime
from gateway.drivers.node import NodeDevice
from gateway.drivers.node.keys import new_node_key

CONFIG = """
gateway: {{id: south-gw, data_dir: {tmp}, metrics_listen: null}}
uplink: {{endpoints: ["{endpoint}"], insecure: true, queue: {tmp}/q.db}}
devices:
  - name: meter
    driver: modbus_rtu
    unit_id: 5
    timeout: 100ms
    poll_groups: {{default: 50ms}}
    rtu: {{port: {tty}, baudrate: 38400, parity: none, address_base: 1}}
    points:
      - {{name: volts, address: 1, scale: 0.1, unit: V}}
      - {{name: energy, address: 3, type: uint32, word_order: little}}
  - name: tank
    driver: node
    timeout: 200ms
    node: {{node_id: 12, listen: "127.0.0.1:0", key_file: tank.key}}
    points:
      - {{name: level, channel: 0, type: float32}}
      - {{name: valve, channel: 4, type: float32, writable: true}}
  - name: truck
    driver: can
    can: {{interface: virtual, channel: {channel}, dbc: bus.dbc, j1939: true, batch_delay: 5ms}}
    points:
      - {{name: rpm, signal: EEC1.EngineSpeed, unit: rpm}}
rules:
  - name: follow_volts
    when: "meter.volts > 20 and tank.level > 1"
    actions:
      - write: {{point: tank.valve, value: "meter.volts"}}
"""


def test_rtu_and_node_devices_through_the_runtime(tmp_path: Path) -> None:
    async def main() -> None:
        line = PtyLine(baudrate=38400)
        line.start()
        slaves = SerialSlaves(line.b, [sim_slave(5, [231, 0, 0x5678, 0x1234])], baudrate=38400)
        await slaves.start()
        store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
        async with running_receiver(store) as receiver:
            cfg_file = tmp_path / "gw.yaml"
            (tmp_path / "bus.dbc").write_text(DBC)
            key = new_node_key(tmp_path / "tank.key")
            channel = f"south-{id(tmp_path)}"
            cfg_file.write_text(CONFIG.format(tmp=tmp_path, endpoint=receiver.endpoint,
                                              tty=line.a, channel=channel))  # fmt: skip
            runtime = Runtime(load_config(cfg_file))
            stop = asyncio.Event()
            run = asyncio.create_task(runtime.run(stop))
            tank = runtime.devices["tank"]
            assert isinstance(tank, NodeDevice)
            await wait_for(tank.link.opened.is_set, 5.0, "node socket open")
            valve: list[float] = []
            node = gwnode.Node(gwnode.UdpTransport(*tank.link.address), 12, key=key,  # type: ignore[attr-defined]
                               on_write=lambda ch, v: valve.append(v) or True)  # fmt: skip
            done = threading.Event()

            def node_main() -> None:
                while not done.is_set():
                    node.send([(0, gwnode.FLOAT32, 2.5)])
                    node.poll(20)

            serving = asyncio.get_running_loop().run_in_executor(None, node_main)
            pts = runtime.points
            tx = can.Bus(interface="virtual", channel=channel)
            try:
                await wait_for(lambda: runtime.devices["truck"].stats()["connected"], 5.0, "bus")
                tx.send(can.Message(arbitration_id=0x0CF00417, data=bytes(3) + (1500 * 8)
                                    .to_bytes(2, "little") + bytes(3)))  # fmt: skip
                await wait_for(lambda: bool(valve), 10.0, "the rule's write at the node")
                await wait_for(lambda: pts.last_value[pts.id_of("truck.rpm")] == 1500.0, 5.0,
                               "the CAN signal")  # fmt: skip
            finally:
                tx.shutdown()
                done.set()
                await serving
                stop.set()
                await asyncio.wait_for(run, 15)
                node.transport.close()
                await slaves.stop()
                line.close()
        store.close()
        assert abs(pts.last_value[pts.id_of("meter.volts")] - 23.1) < 1e-9
        assert pts.last_value[pts.id_of("meter.energy")] == 0x12345678
        assert pts.last_value[pts.id_of("tank.level")] == 2.5
        assert valve[0] == 23.100000381469727  # float32 on the wire
        assert runtime.metrics.get("samples_total") > 0

    asyncio.run(asyncio.wait_for(main(), 60))
