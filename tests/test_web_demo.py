"""``gateway demo`` prints the operator page's address and a login that works on it: a newcomer
opens the address, logs in with what the demo printed and may act."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from test_demo import DEMO_CMD, ROOT, free_block

from gateway.demo.screen import SubscriberView, render_lines


def read_line_with(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
    raise AssertionError(f"no line with {needle!r} within {timeout}s: {seen}")


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET until the gateway listens (it starts after the demo printed its address)."""
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > end:
                raise AssertionError(f"{url} did not answer within {timeout}s") from None
            time.sleep(0.2)


def test_demo_prints_the_page_address_and_a_working_login(tmp_path: Path) -> None:
    base = free_block()
    proc = subprocess.Popen(
        [*DEMO_CMD, "--duration", "30", "--base-port", str(base), "--workdir", str(tmp_path / "w")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = read_line_with(proc, "operator page", 30)
        m = re.search(r"(http://127\.0\.0\.1:(\d+)/)  login (\S+) / (\S+)", line)
        assert m, line
        url, port, user, password = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        assert port == base + 5  # the demo's status port
        status, html = get(url, 20)
        assert status == 200 and b"/web/app.js" in html
        req = urllib.request.Request(
            url + "api/login", json.dumps({"user": user, "password": password}).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["role"] == "operator" and doc["token"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_demo_screen_shows_the_page_line_second() -> None:
    page = "http://127.0.0.1:5025/  login operator / secret123456"
    lines = [
        t for t, _ in render_lines(None, SubscriberView(), None, time.time(), 80, 24, page=page)
    ]
    assert lines[1] == f"PAGE     {page}"
