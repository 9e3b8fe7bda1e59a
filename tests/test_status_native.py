"""``/status`` says whether the compiled hot paths run: a real ``gateway run`` asked over HTTP.

A package built for another machine or Python silently falls back to the pure-Python twins
(gateway/impl.py); the image's boot test reads this report to prove its cross-compiled
extensions load on the target.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.impl import NATIVE_MODULES

ROOT = Path(__file__).resolve().parent.parent
BUILT = all(
    list((ROOT / "gateway/_native").glob(f"{m}.*.so")) for m in ("modbus", "ringbuf", "can")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_of_gateway(tmp_path: Path, pure: bool) -> dict[str, Any]:
    port = free_port()
    cfg = tmp_path / "gateway.yaml"
    doc = {
        "gateway": {"id": "native-gw", "data_dir": str(tmp_path / "data"),
                    "metrics_listen": f"127.0.0.1:{port}"},
        "uplink": {"endpoints": ["tcp://127.0.0.1:9"], "insecure": True},
    }  # fmt: skip
    cfg.write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if pure:
        env["GATEWAY_PUREPYTHON"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", str(cfg)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                url = f"http://127.0.0.1:{port}/status"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    result: dict[str, Any] = json.loads(resp.read())
                    return result
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise AssertionError(f"gateway run exited {proc.returncode}: {err}") from None
                if time.monotonic() > deadline:
                    raise AssertionError("no /status from gateway run within 20 s") from None
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.skipif(not BUILT, reason="Cython extensions not built (setup.py build_ext --inplace)")
def test_status_reports_the_compiled_modules_loaded(tmp_path: Path) -> None:
    native = status_of_gateway(tmp_path, pure=False)["native"]
    assert native["loaded"] is True and native["forced_pure"] is False
    assert set(native["modules"]) == set(NATIVE_MODULES)
    assert set(native["modules"].values()) == {"native"}
    assert all(f.endswith(".so") for f in native["files"].values()), native["files"]


def test_status_reports_the_pure_twins_when_forced(tmp_path: Path) -> None:
    native = status_of_gateway(tmp_path, pure=True)["native"]
    assert native["loaded"] is False and native["forced_pure"] is True
    assert set(native["modules"].values()) == {"pure"}
    assert native["files"]["modbus"] == "modbus.py"
