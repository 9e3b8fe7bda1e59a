"""`gateway demo`, the README's first command, run as a user would (plain output, bounded)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.rig_needs(sim=True)  # the demo runs its own simulated factory
def test_demo_shows_data_flowing_end_to_end(tmp_path: Path) -> None:
    for folder in ("examples", "rules"):  # the config, its models and the rule packs it includes
        shutil.copytree(ROOT / folder, tmp_path / folder)
    config = tmp_path / "examples" / "demo.yaml"  # its data dir lands in tmp_path/var
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
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stdout.rsplit("--- ", 1)[-1]
    assert "press1 online" in last and "motor1 online" in last, last
    assert "link connected" in last, last
    assert "gaps 0" in last, last
    received = int(last.split("telemetry ", 2)[2].split()[0].replace(",", ""))
    assert received > 50, last
    assert "\x1b[" not in out.stdout, "plain output must not carry terminal escapes"
    assert (tmp_path / "var" / "demo" / "cloud.db").exists()
