"""Issue 15: a large config's load must not leave its peak behind in the gateway's RSS.

Each load runs in a fresh interpreter (a real subprocess), so the figures are the process's own
resident memory, not what this test process happened to allocate before."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from bench.loadrig import gateway_config
from gateway.config import load_config
from gateway.core.memory import compacted

ROOT = Path(__file__).resolve().parent.parent

_PROBE = textwrap.dedent(
    """
    import gc, sys
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    from gateway.config import load_config
    from gateway.core.memory import compacted
    load_config(sys.argv[3])  # a one-point config: what loading imports is not the load's growth
    gc.collect()
    before = rss()
    if sys.argv[2] == "compacted":
        config = compacted(lambda: load_config(sys.argv[1]))
    else:
        config = load_config(sys.argv[1])
    gc.collect()
    print(len(config.devices), rss() - before)
    """
)


def _growth(path: Path, how: str) -> float:
    small = path.with_name("small.yaml")
    small.write_text(
        yaml.safe_dump(
            gateway_config(path.parent, 30000, 1, 1, 0.1, "tcp://127.0.0.1:1", "127.0.0.1:1")
        )
    )
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), how, str(small)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT), check=True,
    )  # fmt: skip
    devices, growth = out.stdout.split()
    assert int(devices) == 20
    return float(growth)


def test_a_compacted_config_leaves_the_load_peak_behind(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    cfg = gateway_config(tmp_path, 30000, 20, 100, 0.1, "tcp://127.0.0.1:1", "127.0.0.1:1")
    path.write_text(yaml.safe_dump(cfg))
    plain, compact = _growth(path, "plain"), _growth(path, "compacted")
    # 2,000 points: measured ~+13 MB kept after a plain load, ~+6 MB compacted.
    assert compact < 0.5 * plain, (compact, plain)
    assert compact < 10, compact


def test_the_compacted_config_equals_the_loaded_one() -> None:
    for name in ("demo.yaml", "southbound.yaml"):
        path = ROOT / "examples" / name
        assert compacted(lambda p=path: load_config(p)) == load_config(path)
