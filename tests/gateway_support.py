"""A demo gateway in a temp dir with a real receiver on loopback: config on disk (so reloads
read it), models and rule packs beside it, devices pointed at a closed port (offline)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from uplink_support import bounded, running_receiver, without_opcua

from gateway.cloud.receiver import CloudReceiver
from gateway.cloud.store import SQLiteCloudStore
from gateway.config import load_config
from gateway.core.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "models" / "bearing_ae.tflite"
REFERENCE = ROOT / "examples" / "models" / "bearing_ae.ref.json"


def demo_workdir(tmp_path: Path, endpoint: str = "tcp://127.0.0.1:9", **gateway: Any) -> Path:
    """``tmp_path/gw/examples/demo.yaml`` (its Modbus devices) with data_dir
    ``tmp_path/gw/data``; returns its path."""
    work = tmp_path / "gw"
    for folder in ("examples", "rules"):
        shutil.copytree(ROOT / folder, work / folder)
    cfg_path = work / "examples" / "demo.yaml"
    doc = without_opcua(yaml.safe_load(cfg_path.read_text()))
    doc["gateway"].update(metrics_listen=None, data_dir=str(work / "data"), **gateway)
    for dev in doc["devices"]:
        dev["port"] = 9  # nothing listens: devices stay offline, writes fail cleanly
    doc["uplink"] = {**doc["uplink"], "endpoints": [endpoint], "insecure": True,
                     "server_key": None, "key_dir": None}  # fmt: skip
    cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg_path


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, **gateway: Any
) -> AsyncIterator[tuple[CloudReceiver, Runtime, Path]]:
    """A receiver and a running demo gateway connected to it: ``(receiver, runtime, config)``."""
    store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
    async with running_receiver(store) as rx:
        cfg_path = demo_workdir(tmp_path, rx.endpoint, **gateway)
        runtime = Runtime(load_config(cfg_path))
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        try:
            ping = await bounded(rx.command("demo-gw", "ping"), "the gateway's first ping", 20)
            assert ping.outcome == "ok", ping
            yield rx, runtime, cfg_path
        finally:
            stop.set()
            await bounded(task, "gateway stop", timeout=15)


def files_under(root: Path) -> set[Path]:
    """Every file and symlink below ``root`` (for "nothing was written outside" checks)."""
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}
