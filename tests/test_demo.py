"""`gateway demo` as a user runs it: real subprocesses, pipes and a pty.

The demo must not touch the config it is given nor anything that config points at, must say
which port is busy before it starts anything, must fit an 80x24 terminal and print one line per
event when its output is not a terminal.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.demo.ports import PORT_COUNT, DemoPorts, busy_ports
from gateway.demo.scratch import MARKER, DemoSetupError, prepare_workdir, scratch_config
from gateway.uplink import keys
from gateway.uplink.queue import DurableQueue

ROOT = Path(__file__).resolve().parent.parent
DEMO_CMD = [sys.executable, "-m", "gateway.cli", "demo"]
TIMESTAMPED = re.compile(r"^\d\d:\d\d:\d\d (device|uplink|alarm|write|log|event|summary) ")


def free_block() -> int:
    """A base port whose whole block is free now (random, so parallel runs rarely collide)."""
    for _ in range(100):
        base = random.randrange(20000, 60000 - PORT_COUNT)
        if not busy_ports(DemoPorts(base)):
            return base
    raise AssertionError("no free block of demo ports found in 100 tries")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), and every folder (-> 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def site_with_state(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of examples/ and rules/ whose demo.yaml's data_dir holds a queue with records and
    the gateway's and cloud's keys, as a real installation's would: (config, data_dir)."""
    for folder in ("examples", "rules"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    data = tmp_path / "var" / "demo"  # examples/demo.yaml: data_dir ../var/demo
    q = DurableQueue(data / "queue.db")
    q.append([("telemetry", b"accepted, not yet in the cloud"), ("events", b"an alarm")])
    q.close()
    keys.create(data / "keys", "cloud")
    keys.create(data / "keys", "demo-gw")
    return tmp_path / "examples" / "demo.yaml", data


def test_demo_leaves_its_config_and_the_data_it_names_untouched(tmp_path: Path) -> None:
    """Also: with stdout a pipe the demo prints one line per event, not screens."""
    config, data = site_with_state(tmp_path)
    before = tree_digest(tmp_path)
    assert "var/demo/queue.db" in before and "var/demo/keys/demo-gw.key_secret" in before
    out = subprocess.run(
        [*DEMO_CMD, "--config", str(config), "--duration", "5", "--base-port", str(free_block())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert tree_digest(tmp_path) == before, "the demo changed files outside its scratch folder"
    lines = out.stdout.splitlines()
    scratch = Path(re.search(r"scratch folder (\S+),", lines[0]).group(1))  # type: ignore[union-attr]
    assert not scratch.exists(), "the temporary scratch folder is removed after a clean run"
    assert "\x1b[" not in out.stdout, "no terminal escapes into a pipe"
    events = [ln for ln in lines if TIMESTAMPED.match(ln)]
    assert {"device press1 online", "uplink link connected"} <= {ln[9:] for ln in events}, lines
    assert len(events) == len(set(events)), "each event once"
    assert len(lines) < 30 and all(len(ln) < 400 for ln in lines), lines
    assert "Traceback" not in out.stderr


def test_demo_names_a_busy_port_and_starts_nothing(tmp_path: Path) -> None:
    base = free_block()
    ports = DemoPorts(base)
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.cloud))
        held.listen()
        t0 = time.monotonic()
        out = subprocess.run(
            [*DEMO_CMD, "--base-port", str(base), "--workdir", str(tmp_path / "w")],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        elapsed = time.monotonic() - t0
        assert out.returncode == 1, out.stderr
        assert f"port {ports.cloud} (cloud receiver (ZeroMQ ROUTER)) is not free" in out.stderr
        assert "--base-port" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert elapsed < 10
        assert [p for p, _, _ in busy_ports(ports)] == [ports.cloud], "something was left running"
    assert not (tmp_path / "w").exists(), "nothing is prepared before the ports are checked"


def test_demo_workdir_refuses_what_is_not_a_demo_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("precious")
    for workdir, says in [(home, "not from a demo run"), (home / "notes.txt", "not a folder")]:
        out = subprocess.run(
            [*DEMO_CMD, "--base-port", str(free_block()), "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert out.returncode == 1 and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert sorted(os.listdir(home)) == ["notes.txt"]
    assert (home / "notes.txt").read_text() == "precious"


def test_prepare_workdir_reuses_only_a_previous_demo_folder(tmp_path: Path) -> None:
    work = tmp_path / "w"
    assert prepare_workdir(str(work)) == work and (work / MARKER).exists()
    (work / "data").mkdir()
    (work / "data" / "queue.db").write_bytes(b"from the previous run")
    prepare_workdir(str(work))
    assert sorted(os.listdir(work)) == [MARKER], "a previous run's state is cleared"
    (work / "thesis.tex").write_text("mine")
    with pytest.raises(DemoSetupError, match="thesis.tex"):
        prepare_workdir(str(work))
    (work / "thesis.tex").unlink()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "queue.db").write_text("real")
    (work / "data").symlink_to(tmp_path / "real")
    with pytest.raises(DemoSetupError, match="data"):
        prepare_workdir(str(work))
    assert (tmp_path / "real" / "queue.db").read_text() == "real"
    temp = prepare_workdir(None)
    try:
        assert os.listdir(temp) == [MARKER]
    finally:
        shutil.rmtree(temp)


def run_in_pty(argv: list[str], cols: int, rows: int, timeout: float) -> bytes:
    """Run ``argv`` with its stdout on a pty of ``cols`` x ``rows``; everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the pty
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"the demo did not end within {timeout}s")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        os.close(master)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    return b"".join(chunks)


CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_demo_screen_fits_an_80x24_terminal() -> None:
    argv = [*DEMO_CMD, "--duration", "5", "--base-port", str(free_block())]
    text = run_in_pty(argv, 80, 24, timeout=60).decode("utf-8", "replace")
    frames = [f.split("\x1b[J")[0] for f in text.split("\x1b[H")[1:]]
    assert len(frames) >= 4, text[-2000:]
    assert any("DEVICES" in f for f in frames), "the gateway's status reached the screen"
    for f in frames:
        lines = CSI.sub("", f).replace("\r", "").split("\n")
        assert len(lines) <= 24, lines
        assert max(len(ln) for ln in lines) <= 80, [ln for ln in lines if len(ln) > 80]


def test_scratch_copy_keeps_rules_and_models_and_points_everything_else_inside(
    tmp_path: Path,
) -> None:
    original = load_config(ROOT / "examples" / "demo.yaml")
    work = prepare_workdir(str(tmp_path / "w"))
    copy = load_config(scratch_config(ROOT / "examples" / "demo.yaml", work, DemoPorts(41000)))
    assert [r.name for r in copy.rules] == [r.name for r in original.rules]
    assert [(m.file, m.sha256) for m in copy.models] == [
        (m.file, m.sha256) for m in original.models
    ]
    assert copy.data_dir == str(work / "data") and copy.uplink.queue.startswith(str(work))
    assert copy.uplink.key_dir == str(work / "keys")
    assert copy.uplink.endpoints == ("tcp://127.0.0.1:41003",)
    assert copy.metrics_listen == "127.0.0.1:41005"
    assert {d.name: (d.host, d.port) for d in copy.devices} == {
        "press1": ("127.0.0.1", 41000),
        "pump1": ("127.0.0.1", 41001),
        "motor1": ("127.0.0.1", 41002),
        "mould1": ("127.0.0.1", 502),  # OPC UA: host/port unused, the endpoint says where
    }
    mould = next(d for d in copy.devices if d.name == "mould1")
    assert mould.opcua is not None and mould.opcua.endpoint == DemoPorts(41000).opcua_endpoint


def test_demo_refuses_a_config_with_real_devices(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(ROOT / "packaging" / "gateway.yaml.example", config)
    out = subprocess.run(
        [*DEMO_CMD, "--config", str(config), "--base-port", str(free_block())],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 1 and "plc1" in out.stderr and "simulat" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_demo_into_a_pipe_closed_early_stops_cleanly() -> None:
    """`gateway demo | head -2`: no traceback, no process and no scratch folder left behind."""
    base = free_block()
    proc = subprocess.Popen(
        [*DEMO_CMD, "--duration", "4", "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline().decode()
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as head does
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the demo did not stop within 40 s of its reader leaving") from None
    err = proc.stderr.read().decode()
    assert "Traceback" not in err, err
    scratch = Path(re.search(r"scratch folder (\S+),", first).group(1))  # type: ignore[union-attr]
    assert not scratch.exists()
    assert busy_ports(DemoPorts(base)) == [], "a child outlived the demo"
