"""A full or broken disk degrades the gateway, never stops it, and recovery needs no one.

The field failure: the data directory on a small filesystem filled up, saving alarm state
raised ENOSPC inside the sample callback and every poll task ended, silently, for good. Here the
data directory (the queue, which also holds the alarm state) sits on a real 2 MB tmpfs that the
test fills and frees; where mounting is not allowed the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uplink_support import wait_until

from gateway.config import load_config_text
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, SimDeviceSpec, SimPoint
from gateway.rules.alarms import QueueAlarmStore, decode_states
from gateway.uplink.queue import peek_state


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


async def health(rt: Runtime) -> tuple[int, dict[str, Any]]:
    assert rt._status_server is not None
    code, body = await http_get(rt._status_server.port, "/health")
    return code, json.loads(body)


async def wait_health(rt: Runtime, code: int, what: str, timeout: float = 8.0) -> dict[str, Any]:
    last: list[Any] = []

    async def poll() -> dict[str, Any]:
        while True:
            got, info = await health(rt)
            last[:] = [got, info]
            if got == code:
                return info
            await asyncio.sleep(0.05)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; last {last}"
        ) from None


def alarm_events(rt: Runtime, rule: str) -> list[str]:
    return [e["state"] for e in rt.recent if e["kind"] == "alarm" and e.get("rule") == rule]


def transitions(rt: Runtime, rule: str) -> tuple[float, float]:
    """(raised, cleared) counts of a local alarm (the recent list is too short to tell)."""
    return tuple(  # type: ignore[return-value]
        rt.metrics.get("alarms_total", (("rule", rule), ("state", s)))
        for s in ("raised", "cleared")
    )


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs (needs CAP_SYS_ADMIN; skipped with the reason otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                           capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run mount for a 2 MB tmpfs: {exc}")
    if r.returncode:
        pytest.skip(f"cannot mount a 2 MB tmpfs (needs root/CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


class Flip:
    """A temperature that crosses the alarm limit on every model tick."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, t: float) -> None:
        self.n += 1

    def values(self) -> dict[str, float]:
        return {"temp": 100.0 if self.n % 2 else 0.0}

    def write(self, name: str, value: float) -> None:
        pass


SPEC = SimDeviceSpec("dev", 0, (SimPoint("temp", 0, type="float32"),), Flip)

CONFIG = """
gateway: {{id: gw, data_dir: {data}, metrics_listen: "127.0.0.1:0"}}
uplink: {{insecure: true, endpoints: ["tcp://127.0.0.1:1"], queue: {data}/q.db}}
devices:
  - name: dev
    port: {port}
    timeout: 500ms
    poll_groups: {{default: 20ms}}
    points: [{{name: temp, address: 0, type: float32}}]
rules:
  - name: hot
    when: dev.temp > 50
    actions: [{{alarm: "hot"}}]
"""


def fill(path: Path) -> None:
    with open(path, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()


def test_full_disk_keeps_sampling_raises_storage_degraded_and_recovers(small_fs: Path) -> None:
    data = small_fs / "data"

    async def main() -> None:
        async with Factory([SPEC]) as factory:
            rt = Runtime(load_config_text(CONFIG.format(data=data, port=factory.ports["dev"])))

            async def ticker() -> None:
                while True:
                    factory.tick()
                    await asyncio.sleep(0.03)

            tick = asyncio.create_task(ticker())
            stop = asyncio.Event()
            run = asyncio.create_task(rt.run(stop))
            try:
                await wait_until(lambda: rt._running, "the runtime to start")
                await wait_until(lambda: peek_state(str(data / "q.db"), QueueAlarmStore.KEY),
                                 "alarm state committed to the queue")  # fmt: skip
                assert (await health(rt))[0] == 200
                filler = small_fs / "filler"
                fill(filler)
                info = await wait_health(rt, 503, "/health to say storage is degraded")
                assert info["status"] == "degraded"
                assert "disk is full" in info["problems"]["storage_degraded"]
                n = rt.metrics.get("samples_total")
                await wait_until(lambda: rt.metrics.get("samples_total") >= n + 20,
                                 "sampling to go on while the disk is full")  # fmt: skip
                assert rt.devices["dev"].stats()["state"] == "online"
                assert transitions(rt, "storage_degraded") == (1, 0)
                assert rt.uplink.stats()["write_errors"] > 0
                _, metrics = await http_get(rt._status_server.port, "/metrics")  # type: ignore[union-attr]
                assert "gateway_storage_degraded 1.0" in metrics

                filler.unlink()
                await wait_health(rt, 200, "/health to recover once space is back", 10.0)
                assert transitions(rt, "storage_degraded") == (1, 1)
                n = rt.metrics.get("samples_total")
                await wait_until(lambda: rt.metrics.get("samples_total") >= n + 10,
                                 "sampling after recovery")  # fmt: skip
            finally:
                tick.cancel()
                stop.set()
                await asyncio.wait_for(run, 10)
            # What the engine holds is what is on disk: nothing was lost while it was full.
            raw = peek_state(str(data / "q.db"), QueueAlarmStore.KEY)
            assert raw is not None
            on_disk = decode_states(raw, "the queue")
            in_memory = {a.rule: a for a in rt.rules.alarms()}
            assert on_disk["hot"] == in_memory["hot"]

    asyncio.run(asyncio.wait_for(main(), 40))
