"""`gateway` behaves like a Unix tool: real subprocesses, real pipes, real signals.

``--version``, ``python -m gateway``, global options after the subcommand, defaults in ``--help``,
no traceback on a closed pipe or Ctrl-C, and JSON lines with point names from ``gateway queue`` and
``gateway subscribe`` (the latter against a real receiver fed by a real runtime).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from uplink_support import bounded, demo_config, modbus_demo, run, running_receiver

from gateway.cloud.store import SQLiteCloudStore
from gateway.core import records
from gateway.core.model import SampleBatch
from gateway.core.runtime import Runtime, build_point_table
from gateway.drivers.sim import Factory, demo_factory
from gateway.model.birth import birth_record
from gateway.uplink import inspect
from gateway.uplink.queue import DurableQueue

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway.cli"]


def gateway(*args: str, module: str = "gateway.cli") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def strict_json(line: str) -> Any:
    """json.loads that refuses NaN/Infinity (Python's json writes them; JSON has no such thing)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def demo_names() -> list[str]:
    return [info.name for info in build_point_table(modbus_demo()).infos]


def test_version_and_python_dash_m_gateway() -> None:
    from gateway import __version__

    for module in ("gateway", "gateway.cli"):
        out = gateway("--version", module=module)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"gateway {__version__}"


def test_help_shows_defaults_and_global_options_work_after_the_subcommand(tmp_path: Path) -> None:
    def help_of(*cmd: str) -> str:
        return " ".join(gateway(*cmd, "--help").stdout.split())  # unwrapped

    assert "(default: tcp://127.0.0.1:7000)" in help_of("cloud")
    assert "-n N how many records (default: 10)" in help_of("queue", "peek")
    assert "--log-level {debug,info,warning,error}" in help_of("rules", "test")
    q = tmp_path / "q.db"
    DurableQueue(q).close()
    after = gateway("queue", "stats", "--file", str(q), "--log-level", "debug")
    assert after.returncode == 0, after.stderr
    before = gateway("--log-level", "error", "queue", "stats", "--file", str(q))
    assert before.returncode == 0 and json.loads(before.stdout)["file"] == str(q)
    bad = gateway("queue", "stats", "--file", str(q), "--log-level", "loud")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_mistyped_endpoint_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    out = gateway("subscribe", "--connect", "localhost:7001")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--connect" in out.stderr and "tcp://" in out.stderr
    db = str(tmp_path / "c.db")
    out = gateway("cloud", "--insecure", "--bind", "localhost:7000", "--db", db)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--bind localhost:7000" in out.stderr


@pytest.fixture
def big_queue(tmp_path: Path) -> Path:
    """A queue with the demo's point model, 3000 telemetry records (about 2 MB as JSON: far more
    than a pipe holds) and an event carrying bytes and a NaN."""
    cfg = modbus_demo()
    infos = build_point_table(cfg).infos
    model, meta = records.point_model(cfg.id, infos)
    ids = np.arange(len(infos), dtype=np.uint32)
    values = np.arange(len(infos), dtype=np.float64)
    values[1] = np.nan  # bad quality: null, not NaN
    tel = records.encode_telemetry(model, SampleBatch.uniform(ids, 1000.0, values))
    ev = records.encode_event("rule_event", 1000.0, rule="r", blob=b"\x00\xff", values={"x": 1.5})
    path = tmp_path / "queue.db"
    with DurableQueue(path) as q:
        q.append([("meta", meta), ("events", ev)] + [("telemetry", tel)] * 3000)
    return path


def test_queue_export_is_json_lines_with_point_names(big_queue: Path) -> None:
    out = gateway("queue", "export", "--file", str(big_queue))
    assert out.returncode == 0, out.stderr
    lines = [strict_json(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3002
    event = next(x for x in lines if x["stream"] == "events")["record"]
    assert event["blob"] == {"base64": "AP8="} and event["values"] == {"x": 1.5}
    tel = next(x for x in lines if x["stream"] == "telemetry")["record"]
    assert "id" not in tel and [s["point"] for s in tel["samples"]] == demo_names()
    assert tel["samples"][1]["value"] is None and tel["samples"][2]["value"] == 2.0
    peek = gateway("queue", "peek", "--file", str(big_queue), "--stream", "telemetry", "-n", "2")
    assert [strict_json(x)["record"]["samples"] for x in peek.stdout.splitlines()] == [
        tel["samples"]
    ] * 2


def test_queue_names_points_from_the_config_when_the_queue_lost_its_model(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path, {d.name: 1 for d in modbus_demo().devices}, "tcp://x:1", "q")
    infos = build_point_table(cfg).infos
    model, _ = birth_record(cfg, infos)
    batch = SampleBatch.uniform(np.array([0, 2], np.uint32), 5.0, np.array([1.0, 2.0]))
    path = tmp_path / "queue.db"
    with DurableQueue(path) as q:  # no meta record: it was acked and deleted long ago
        q.append([("telemetry", records.encode_telemetry(model, batch))])
    line = next(iter(_export(path, inspect.point_names(str(path), cfg))))
    assert [s["point"] for s in line["record"]["samples"]] == [infos[0].name, infos[2].name]
    line = next(iter(_export(path, inspect.point_names(str(path)))))
    assert [s["point"] for s in line["record"]["samples"]] == ["#0", "#2"]


def _export(path: Path, names: Any) -> list[dict[str, Any]]:
    import io

    buf = io.StringIO()
    inspect.export(str(path), buf, names=names)
    return [strict_json(x) for x in buf.getvalue().splitlines()]


@pytest.mark.parametrize("action", ["peek", "export"])
def test_closed_pipe_ends_quietly(big_queue: Path, action: str) -> None:
    cmd = " ".join(
        [*GATEWAY, "queue", action, "--file", str(big_queue), "-n 100000" * (action == "peek")]
    )
    out = subprocess.run(
        f"{cmd} | head -1; echo rc=${{PIPESTATUS[0]}} >&2",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert strict_json(out.stdout)["stream"] == "events"
    assert "Traceback" not in out.stderr and "Error" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "rc=141"


def test_ctrl_c_during_start_up_is_quiet() -> None:
    """SIGINT while the command is still loading (before its own handler): no traceback, 130
    (or 0 if it got as far as its handler)."""
    proc = subprocess.Popen(
        [*GATEWAY, "subscribe", "--connect", "tcp://127.0.0.1:9", "--db", "/nonexistent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 20
    while "zmq" not in maps.read_text():  # the CLI is loading its modules (for a second or more)
        assert proc.poll() is None, "gateway subscribe exited at start"
        assert time.monotonic() < deadline, "gateway subscribe did not load pyzmq in 20 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode in (130, 0), err
    assert err == "" and out == ""


def test_subscribe_prints_json_lines_with_point_names_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """A real receiver fed by a real runtime (the demo's config, simulated devices): one
    subscriber from the start (learns the model from the meta record), one joining later (finds it
    in the receiver's store with --db) and one without the store (says so, shows #id)."""
    names = set(demo_names())

    async def subscriber(pub: str, db: Path) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *GATEWAY, "subscribe", "--connect", pub, "--db", str(db), "--log-level", "warning",
            "--records",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip

    async def telemetry_line(proc: asyncio.subprocess.Process, named: bool) -> dict[str, Any]:
        """The first telemetry line (``named``: the first with point names)."""
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            assert line, "subscribe closed its output"
            rec = strict_json(line.decode())  # every line is JSON, not only telemetry
            if rec["stream"] != "telemetry":
                continue
            points = {s["point"] for s in rec["record"]["samples"]}
            if not named or points <= names:
                return rec  # type: ignore[no-any-return]

    async def stop(proc: asyncio.subprocess.Process) -> str:
        proc.send_signal(signal.SIGINT)
        _, err = await bounded(proc.communicate(), "subscribe to stop on SIGINT", timeout=15)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err, err
        return err.decode()

    async def main() -> None:
        specs = [dataclasses.replace(s, port=0) for s in demo_factory()]
        db = tmp_path / "cloud.db"
        async with Factory(specs) as factory, running_receiver(SQLiteCloudStore(str(db))) as rx:
            pub = rx.pub_endpoint
            assert pub is not None and rx.endpoint is not None
            early = await subscriber(pub, db)
            await asyncio.sleep(1)  # a head start (if it has not joined yet, --db names it)
            config = demo_config(tmp_path, factory.ports, rx.endpoint, tmp_path / "q.db")
            halt = asyncio.Event()
            task = asyncio.create_task(Runtime(config).run(halt))
            try:
                # Its first telemetry may come before the meta record (streams are sent
                # independently): then it says once that it has no names yet.
                rec = await bounded(telemetry_line(early, True), "named telemetry (first)", 20)
                assert rec["gateway"] == "demo-gw" and rec["seq"] >= 1
                late = await subscriber(pub, db)
                blind = await subscriber(pub, tmp_path / "none.db")
                piped = await asyncio.create_subprocess_exec(
                    "/bin/bash", "-c",
                    f"{' '.join(GATEWAY)} subscribe --connect {pub} --db {db} | head -1; "
                    "echo rc=${PIPESTATUS[0]} >&2",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
                )  # fmt: skip
                rec = await bounded(telemetry_line(late, False), "telemetry (late one)", 20)
                assert {s["point"] for s in rec["record"]["samples"]} <= names
                rec = await bounded(telemetry_line(blind, False), "telemetry (no store)", 20)
                assert all(s["point"].startswith("#") for s in rec["record"]["samples"])
                assert len((await stop(early)).splitlines()) <= 1
                assert await stop(late) == ""
                err = await stop(blind)
                assert "none.db" in err and len(err.splitlines()) == 1, err
                out, err = await bounded(piped.communicate(), "subscribe | head -1 to end", 20)
                assert strict_json(out.decode())["gateway"] == "demo-gw"
                assert err.decode().splitlines() == ["rc=141"], err  # quiet: no traceback
            finally:
                halt.set()
                await bounded(task, "the runtime to stop", 15)

    run(main(), timeout=90)
