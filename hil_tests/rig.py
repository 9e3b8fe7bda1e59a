"""A black-box harness: starts the real processes a rig file describes and reads what they produce.

Nothing here imports the runtime's internals: the gateway, cloud and simulated devices are separate
processes driven by their command lines, observed through the cloud's SQLite store, the gateway's
queue file, the gateway's ``/status`` endpoint and the devices themselves (pymodbus client).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
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


def only_devices(cfg: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``cfg`` with only the devices ``keep`` accepts, and without the assets of the others (a rig
    runs the devices it lists; the demo's OPC UA machine needs a server the rig may not have)."""
    gone = {d["name"] for d in cfg["devices"] if not keep(d)}
    cfg["devices"] = [d for d in cfg["devices"] if d["name"] not in gone]

    def prune(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [n for n in nodes if n.get("device") not in gone]
        for n in kept:
            n["children"] = prune(n.get("children") or [])
        return kept

    if cfg.get("assets"):
        cfg["assets"]["tree"] = prune(cfg["assets"]["tree"])
    return cfg


def standalone_demo_config() -> dict[str, Any]:
    """The demo's devices and plain rules as a config that stands on its own anywhere: without the
    model files, rule packs and key paths that examples/demo.yaml names relative to itself (for
    site configs copied onto an image's boot partition)."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    only_devices(cfg, lambda d: d.get("driver", "modbus_tcp") == "modbus_tcp")
    cfg.pop("models", None)
    cfg.pop("rule_files", None)
    cfg["rules"] = [r for r in cfg["rules"] if "bearing_ae" not in r["when"]]
    for key in ("server_key", "key_dir"):
        cfg["uplink"].pop(key, None)
    return cfg


def gateway_status(listen: str, timeout: float = 2.0) -> dict[str, Any]:
    """The gateway's ``/status`` snapshot from its ``metrics_listen`` address (host:port)."""
    with urllib.request.urlopen(f"http://{listen}/status", timeout=timeout) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def curve_keys(workdir: Path, gateway_id: str) -> dict[str, str]:
    """CurveZMQ as in production: a cloud key pair and the gateway's in ``workdir/keys``, the
    gateway's public key allowed in ``workdir/allowed``; returns the gateway's ``uplink`` entries."""
    keys_dir = workdir / "keys"
    keys.create(keys_dir, "cloud", force=True)
    keys.create(keys_dir, gateway_id, force=True)
    keys.allow(keys_dir / f"{gateway_id}.key", workdir / "allowed")
    return {"server_key": str(keys_dir / "cloud.key"), "key_dir": str(keys_dir)}


def cloud_process(
    workdir: Path, bind: str, pub: str, db: Path, log: Path, status_interval: float = 0
) -> ManagedProcess:
    """``gateway cloud`` with the keys :func:`curve_keys` made in ``workdir`` (not started)."""
    return ManagedProcess(
        "cloud",
        [sys.executable, "-m", "gateway.cli", "cloud", "--keys-dir", str(workdir / "keys"),
         "--allow-dir", str(workdir / "allowed"), "--bind", bind, "--pub", pub, "--db", str(db),
         "--status-interval", str(status_interval)],
        log, cwd=str(ROOT),
    )  # fmt: skip


@contextlib.contextmanager
def read_only(db: Path, timeout: float = 10.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a SQLite file another process may be writing."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout)
    try:
        yield con
    finally:
        con.close()


def check_sequences(db: Path, gateway: str) -> dict[str, int]:
    """The cloud store's promise for one gateway: per (stream, epoch), records and announced gaps
    (DROPs) together cover 1..hw with no hole and no overlap. Returns records stored per stream;
    raises AssertionError naming the first hole. Duplicates cannot hide here (the key is the seq):
    payload-level duplicates are the caller's check."""
    with read_only(db) as con:
        rows = con.execute(
            "SELECT stream, epoch, seq FROM records WHERE gateway = ? ORDER BY stream, epoch, seq",
            (gateway,),
        ).fetchall()
        gap_rows = con.execute(
            "SELECT stream, epoch, first, last FROM gaps WHERE gateway = ?", (gateway,)
        ).fetchall()
        hws = {
            (s, e): hw
            for s, e, hw in con.execute(
                "SELECT stream, epoch, hw FROM streams WHERE gateway = ?", (gateway,)
            )
        }
    spans: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for stream, epoch, seq in rows:
        spans.setdefault((stream, epoch), []).append((seq, seq))
    for stream, epoch, first, last in gap_rows:
        spans.setdefault((stream, epoch), []).append((first, last))
    counts: dict[str, int] = {}
    for (stream, epoch), items in spans.items():
        items.sort()
        expected = 1
        for first, last in items:
            assert first == expected, (
                f"{stream}/{epoch}: seq {expected} missing"
                if first > expected
                else f"{stream}/{epoch}: seq {first} stored twice or inside a DROP"
            )
            expected = last + 1
        assert hws.get((stream, epoch)) == expected - 1, (
            f"{stream}/{epoch}: hw {hws.get((stream, epoch))}, records and gaps end at {expected - 1}"
        )
    for stream, _epoch, _seq in rows:
        counts[stream] = counts.get(stream, 0) + 1
    return counts


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
        self.procs["cloud"] = cloud_process(
            self.workdir, cloud["bind"], cloud["pub"], self.cloud_db, logs / "cloud.log"
        )
        self.procs["gateway"] = ManagedProcess(
            "gateway", [*py, "run", str(self.config_path)], logs / "gateway.log", cwd=str(ROOT)
        )

    def _gateway_config(self) -> dict[str, Any]:
        cfg = yaml.safe_load((ROOT / self.spec["gateway"]["config"]).read_text())
        only_devices(cfg, lambda d: d["name"] in self.spec["devices"])
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
        cfg["uplink"].pop("insecure", None)
        cfg["uplink"].update(curve_keys(self.workdir, cfg["gateway"]["id"]))
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
        return gateway_status(self.spec["gateway"]["status"])

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
        with read_only(self.queue_path, timeout=5) as con:
            rows = con.execute("SELECT stream, seq, payload FROM records").fetchall()
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
