"""The driver contract (gateway.drivers.base.DriverBase) on its own, with a minimal driver.

What every driver gets without writing it: link state announced once per change with BAD/NaN
samples on going offline, guarded callbacks, start/stop of its tasks, task_failure() for the
supervisor, the write refusal, and the common stats.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from gateway.config import DeviceConfig, PointConfig
from gateway.core.model import DeviceEvent, Quality, SampleBatch
from gateway.drivers.base import DriverBase, WriteError
from gateway.drivers.modbus_tcp import ModbusTcpDevice
from gateway.drivers.modbus_tcp import WriteError as ModbusWriteError

CONFIG = DeviceConfig(
    name="d",
    driver="toy",
    points=(PointConfig("a", address=0), PointConfig("b", address=1, writable=True)),
    reconnect_min=1.0,
    reconnect_max=4.0,
)
IDS = {"d.a": 7, "d.b": 9}


class Toy(DriverBase):
    """Reads a queue: each item is a value for every point, or an exception to die of."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.opened = self.closed = 0

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    def tasks(self) -> list[tuple[str, Any]]:
        return [("read", self._read())]

    async def _read(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            self.set_online()
            self.emit_values(self.all_ids, 1.0, np.full(len(self.all_ids), float(item)))

    def counters(self) -> dict[str, float | int | bool | str]:
        return {"queued": self.queue.qsize()}


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[DeviceEvent] = []
        self.fail = fail

    def batch(self, b: SampleBatch) -> None:
        if self.fail:
            raise RuntimeError("consumer bug")
        self.batches.append(b)

    def event(self, e: DeviceEvent) -> None:
        self.events.append(e)


async def _settle(cond: Any, what: str) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_link_state_emission_tasks_and_stats() -> None:
    asyncio.run(_test_link_state_emission_tasks_and_stats())


async def _test_link_state_emission_tasks_and_stats() -> None:
    sink = Sink()
    dev = Toy(CONFIG, IDS, sink.batch, sink.event, lambda: 5.0)
    assert dev.stats()["state"] == "unknown" and not dev.online
    await dev.start()
    await dev.start()  # idempotent while running
    assert dev.opened == 1
    dev.queue.put_nowait(2.0)
    dev.queue.put_nowait(3.0)
    await _settle(lambda: len(sink.batches) == 2, "two batches")
    assert [e.kind for e in sink.events] == ["online"]  # once, not per batch
    assert sink.batches[1].values.tolist() == [3.0, 3.0]
    dev.set_offline("cable")
    dev.set_offline("cable")
    assert [e.kind for e in sink.events] == ["online", "offline"]
    bad = sink.batches[-1]
    assert bad.point_ids.tolist() == [7, 9] and (bad.quality == Quality.BAD).all()
    assert math.isnan(bad.values[0]) and bad.ts[0] == 5.0
    assert sink.events[-1].detail == "cable"
    assert dev.task_failure() is None
    dev.queue.put_nowait(ValueError("decoder bug"))
    await _settle(lambda: dev.task_failure() is not None, "the task to end")
    assert "decoder bug" in (dev.task_failure() or "")
    await dev.start()  # a dead task is started again
    assert dev.opened == 2 and dev.task_failure() is None
    stats = dev.stats()
    assert {"connected", "online", "state", "writes", "write_errors", "task_errors"} <= set(stats)
    assert stats["queued"] == 0 and stats["state"] == "offline"
    await dev.stop()
    await dev.stop()
    assert dev.closed == 1 and dev.task_failure() is None


def test_a_raising_consumer_is_counted_and_the_task_lives() -> None:
    asyncio.run(_test_a_raising_consumer_is_counted_and_the_task_lives())


async def _test_a_raising_consumer_is_counted_and_the_task_lives() -> None:
    sink = Sink(fail=True)
    dev = Toy(CONFIG, IDS, sink.batch, sink.event)
    await dev.start()
    for v in range(3):
        dev.queue.put_nowait(v)
    await _settle(lambda: dev.queue.empty() and dev.stats()["task_errors"] == 3, "3 faults")
    assert dev.task_failure() is None
    await dev.stop()


def test_writes_are_refused_before_the_driver_sees_them() -> None:
    asyncio.run(_test_writes_are_refused_before_the_driver_sees_them())


async def _test_writes_are_refused_before_the_driver_sees_them() -> None:
    dev = Toy(CONFIG, IDS, Sink().batch, Sink().event)
    for point, value, reason in [("d.x", 1.0, "not a point of device d"),
                                 ("d.a", 1.0, "not writable"),
                                 ("d.b", math.inf, "not finite"),
                                 ("d.b", 1.0, "the toy driver does not write")]:  # fmt: skip
        with pytest.raises(WriteError, match=reason) as err:
            await dev.write(point, value)
        assert err.value.refused
    assert dev.stats()["write_errors"] == 4 and dev.stats()["writes"] == 0


def test_backoff_doubles_with_jitter_and_resets_on_online() -> None:
    dev = Toy(CONFIG, IDS, Sink().batch, Sink().event)
    steps = [dev.backoff() for _ in range(5)]
    for got, full in zip(steps, [1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert 0.5 * full <= got <= full
    dev.set_online()
    assert dev.backoff() <= 1.0


def test_builtins_share_the_contract() -> None:
    assert issubclass(ModbusTcpDevice, DriverBase)
    assert ModbusWriteError is WriteError  # old import path still works
