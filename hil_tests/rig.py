"""A black-box harness: starts the real processes a rig file describes and reads what they produce.

Nothing here imports the runtime's internals: the gateway, cloud and simulated devices are separate
processes driven by their command lines, observed through the cloud's SQLite store, the gateway's
queue file, the gateway's ``/status`` endpoint and the devices themselves (pymodbus client).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import yaml

from gateway.core.processes import ManagedProcess
from gateway.uplink import keys

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = fn()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a probe may fail while things start
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_exc!r})" if last_exc else "")
    )


def standalone_demo_config() -> dict[str, Any]:
    """The demo's devices and plain rules as a config that stands on its own anywhere: without the
    model files, rule packs and key paths that examples/demo.yaml names relative to itself (for
    site configs copied onto an image's boot partition)."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    cfg.pop("models", None)
    cfg.pop("rule_files", None)
    cfg["rules"] = [r for r in cfg["rules"] if "bearing_ae" not in r["when"]]
    for key in ("server_key", "key_dir"):
        cfg["uplink"].pop(key, None)
    return cfg


@dataclass
class CloudRecord:
    stream: str
    epoch: int
    seq: int
    payload: bytes


class Rig:
    """One rig run in ``workdir``: processes, files and probes."""

    def __init__(self, rig_file: Path, workdir: Path) -> None:
        self.spec = yaml.safe_load(rig_file.read_text())
        self.workdir = workdir
        self.cloud_db = workdir / "cloud.db"
        self.config_path = workdir / "gateway.yaml"
        self.config = self._gateway_config()
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.gateway_id: str = self.config["gateway"]["id"]
        self.queue_path = Path(self.config["uplink"]["queue"])
        py = [sys.executable, "-m", "gateway.cli"]
        logs = workdir / "logs"
        self.procs: dict[str, ManagedProcess] = {}
        if "sim" in self.spec:
            sim = self.spec["sim"]
            self.procs["sim"] = ManagedProcess(
                "sim",
                [
                    *py,
                    "sim",
                    "--factory",
                    sim["factory"],
                    "--base-port",
                    str(sim["base_port"]),
                    "--speed",
                    str(sim.get("speed", 1)),
                ],
                logs / "sim.log",
                cwd=str(ROOT),
            )
        cloud = self.spec["cloud"]
        self.procs["cloud"] = ManagedProcess(
            "cloud",
            [
                *py,
                "cloud",
                "--keys-dir",
                str(self.workdir / "keys"),
                "--allow-dir",
                str(self.workdir / "allowed"),
                "--bind",
                cloud["bind"],
                "--pub",
                cloud["pub"],
                "--db",
                str(self.cloud_db),
                "--status-interval",
                "0",
            ],
            logs / "cloud.log",
            cwd=str(ROOT),
        )
        self.procs["gateway"] = ManagedProcess(
            "gateway", [*py, "run", str(self.config_path)], logs / "gateway.log", cwd=str(ROOT)
        )

    def _gateway_config(self) -> dict[str, Any]:
        cfg = yaml.safe_load((ROOT / self.spec["gateway"]["config"]).read_text())
        for dev in cfg["devices"]:
            where = self.spec["devices"][dev["name"]]
            dev["host"], dev["port"] = where["host"], where["port"]
        cfg["gateway"]["data_dir"] = str(self.workdir / "data")
        cfg["gateway"]["metrics_listen"] = self.spec["gateway"]["status"]
        cfg["uplink"]["endpoints"] = [self.spec["cloud"]["bind"]]
        cfg["uplink"]["queue"] = str(self.workdir / "data" / "queue.db")
        cfg["uplink"]["ack_timeout"] = "2s"
        source_dir = (ROOT / self.spec["gateway"]["config"]).parent
        for model in cfg.get("models") or ():  # the copy lives elsewhere: keep model paths valid
            for key in ("file", "reference"):
                if model.get(key):
                    model[key] = str(source_dir / model[key])
        files = cfg.get("rule_files") or []
        for i, entry in enumerate(files):  # plain paths or {include: path, params: ...}
            if isinstance(entry, str):
                files[i] = str(source_dir / entry)
            else:
                entry["include"] = str(source_dir / entry["include"])
        # CurveZMQ as in production: the rig makes the keys and allows the gateway's.
        keys_dir = self.workdir / "keys"
        gw_id = cfg["gateway"]["id"]
        keys.create(keys_dir, "cloud", force=True)
        keys.create(keys_dir, gw_id, force=True)
        keys.allow(keys_dir / f"{gw_id}.key", self.workdir / "allowed")
        cfg["uplink"].pop("insecure", None)
        cfg["uplink"]["server_key"] = str(keys_dir / "cloud.key")
        cfg["uplink"]["key_dir"] = str(keys_dir)
        return cfg

    # -- processes ----------------------------------------------------------------------------
    def start(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            self.procs[name].start()

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.procs.values())

    # -- probes -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        url = f"http://{self.spec['gateway']['status']}/status"
        with urllib.request.urlopen(url, timeout=2) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(
            lambda: self.status()["uplink"].get("link") == "connected",
            timeout,
            "the gateway's uplink to connect",
        )
        wait_for(
            lambda: self.cloud_records("telemetry"),
            timeout,
            "the first telemetry record in the cloud store",
        )

    def cloud_records(self, stream: str) -> list[CloudRecord]:
        if not self.cloud_db.exists():
            return []
        con = sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute(
                "SELECT stream, epoch, seq, payload FROM records WHERE gateway = ? AND stream = ?"
                " ORDER BY epoch, seq",
                (self.gateway_id, stream),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()
        return [CloudRecord(s, e, q, bytes(p)) for s, e, q, p in rows]

    def cloud_events(self) -> list[dict[str, Any]]:
        return [msgpack.unpackb(r.payload, raw=False) for r in self.cloud_records("events")]

    def queue_snapshot(self) -> dict[str, dict[int, bytes]]:
        """Every record the gateway's queue file holds now, per stream: ``{stream: {seq: payload}}``."""
        con = sqlite3.connect(f"file:{self.queue_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT stream, seq, payload FROM records").fetchall()
        finally:
            con.close()
        out: dict[str, dict[int, bytes]] = {}
        for stream, seq, payload in rows:
            out.setdefault(stream, {})[seq] = bytes(payload)
        return out

    def device_client(self, device: str) -> Any:
        from pymodbus.client import ModbusTcpClient

        where = self.spec["devices"][device]
        client = ModbusTcpClient(where["host"], port=where["port"], timeout=2, retries=1)
        assert client.connect(), f"cannot connect to rig device {device}"
        return client


def telemetry_samples(records: list[CloudRecord], point: str) -> list[tuple[float, float | None]]:
    """``(ts, value)`` of one point across telemetry records, using the point model record(s)."""
    names: dict[str, dict[int, str]] = {}
    out = []
    for rec in records:
        body = msgpack.unpackb(rec.payload, raw=False)
        if body.get("kind") == "point_model":
            names[body["model"]] = {p["id"]: p["name"] for p in body["points"]}
            continue
        ids = names.get(body["model"], {})
        for pid, ts, x in zip(body["id"], body["ts"], body["x"], strict=True):
            if ids.get(pid) == point:
                out.append((ts, x))
    return out
