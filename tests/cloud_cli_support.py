"""Real processes for the cloud CLI tests: `gateway cloud` receivers and a `gateway run` demo
gateway, each a subprocess with bounded waits; and `gateway command` runs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from gateway_support import demo_workdir

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths may have at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="gwc", dir="/tmp") as d:
        yield Path(d)


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def wait_line(self, pattern: str, what: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; output:\n" + "".join(self.lines)
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _spawn(args: list[str], cwd: Path | None = None) -> Proc:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd or ROOT,
    )
    p = Proc(proc)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            p.lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return p


@dataclass
class Receiver:
    proc: Proc
    name: str
    endpoint: str
    pub: str
    status_port: int


@contextlib.contextmanager
def cloud(root: Path, name: str, db: str = "c.db", *extra: str) -> Iterator[Receiver]:
    """`gateway cloud --insecure` on free loopback ports, control socket in ``root/ctl``."""
    p = _spawn([
        "cloud", "--insecure", "--bind", "tcp://127.0.0.1:0", "--pub", "tcp://127.0.0.1:0",
        "--db", str(root / db), "--control-dir", str(root / "ctl"), "--name", name,
        "--status-listen", "127.0.0.1:0", "--status-interval", "3600", *extra,
    ])  # fmt: skip
    try:
        m = p.wait_line(r"ROUTER (\S+) .* PUB (\S+)", f"receiver {name} to bind")
        s = p.wait_line(r"status http://127\.0\.0\.1:(\d+)/", f"receiver {name}'s status port")
        yield Receiver(p, name, m.group(1), m.group(2), int(s.group(1)))
    finally:
        p.stop()


def gateway_config(root: Path, endpoints: list[str]) -> Path:
    """The demo gateway's config (devices offline) with these uplink endpoints."""
    cfg = demo_workdir(root, endpoints[0])
    doc = yaml.safe_load(cfg.read_text())
    doc["uplink"]["endpoints"] = endpoints
    doc["uplink"]["ack_timeout"] = "2s"  # fail over quickly in tests
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


@contextlib.contextmanager
def gateway(cfg: Path) -> Iterator[Proc]:
    p = _spawn(["run", str(cfg)])
    try:
        yield p
    finally:
        p.stop()


def command(root: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`gateway command ARGS --control-dir root/ctl` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "command", *args, "--control-dir", str(root / "ctl")],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "USER": "op"},
    )


def commands(root: Path, *calls: list[str], timeout: float = 60.0) -> list[tuple[int, str, str]]:
    """Several independent `gateway command` runs at once: ``(exit code, stdout, stderr)``."""
    env = {**os.environ, "USER": "op"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "command", *args, "--control-dir", str(root / "ctl")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        for args in calls
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def wait_online(root: Path, gateway_id: str = "demo-gw", timeout: float = 30.0) -> str:
    """Ping until the gateway answers; returns the ping's stdout."""
    deadline = time.monotonic() + timeout
    while True:  # "unknown" until its first HELLO (plaintext receivers have no allow-list)
        left = max(1.0, deadline - time.monotonic())
        res = command(root, gateway_id, "ping", "--timeout", f"{left:.1f}", timeout=left + 10)
        if res.returncode != 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert res.returncode == 0, f"gateway never answered a ping: {res.stdout}{res.stderr}"
    return res.stdout
