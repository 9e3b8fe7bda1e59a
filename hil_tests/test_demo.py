"""`gateway demo`, the README's first command, run as a user would (plain output, bounded)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.demo.ports import DemoPorts, busy_ports

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.rig_needs(sim=True)  # the demo runs its own simulated factory
def test_demo_shows_data_flowing_end_to_end(tmp_path: Path) -> None:
    for folder in ("examples", "rules"):  # the config, its models and the rule packs it includes
        shutil.copytree(ROOT / folder, tmp_path / folder)
    config = tmp_path / "examples" / "demo.yaml"
    base = next(b for b in range(31000, 32000, 6) if not busy_ports(DemoPorts(b)))
    work = tmp_path / "work"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--plain",
            "--duration",
            "12",
            "--config",
            str(config),
            "--workdir",
            str(work),
            "--base-port",
            str(base),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for said in ("device press1 online", "device motor1 online", "uplink link connected"):
        assert any(ln[9:] == said for ln in lines), lines
    last = [ln for ln in lines if " summary " in ln][-1]
    assert "gaps 0" in last, last
    received = int(re.search(r"telemetry ([\d,]+)", last).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert received > 50, last
    assert "\x1b[" not in out.stdout, "plain output must not carry terminal escapes"
    assert (work / "cloud" / "cloud.db").exists() and (work / "data" / "queue.db").exists()
    assert not (tmp_path / "var").exists(), "the config's own data_dir is not the demo's"
