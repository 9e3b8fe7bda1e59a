"""Alarm history survives a crash at the worst moment (issue 14, item 9).

The alarm state and the alarm event that reports a transition commit in one queue transaction.
A real gateway process (tests/alarm_crash_runner.py) raises an alarm, then SIGKILLs itself right
after the clear (state changed, event not yet committed); the restarted process sees the same
temperatures again. What the cloud will receive (the ``events`` stream of the queue, sent in
order) must alternate raised/cleared, and the stored state must match the last event.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from test_rules_runtime import free_port

from gateway.core.records import decode
from gateway.uplink import inspect
from gateway.uplink.queue import peek_state

ROOT = Path(__file__).resolve().parents[1]
RUNNER = str(ROOT / "tests" / "alarm_crash_runner.py")


CONFIG = """
gateway: {{id: gw, data_dir: data, metrics_listen: null}}
uplink:
  insecure: true
  endpoints: ["tcp://127.0.0.1:{port}"]
  queue: data/q.db
  batch_max_delay: 2s
devices:
  - name: press1
    port: {port}
    reconnect_min: 10s
    reconnect_max: 10s
    points:
      - {{name: temp, address: 0, type: float32}}
rules:
  - name: hot
    when: press1.temp > 80
    hysteresis: 5
    actions:
      - alarm: "hot"
"""


def _run(cfg: Path, temps: str, kill_after: int = 0, t0: float = 1000.0) -> int:
    out = subprocess.run(
        [sys.executable, RUNNER, str(cfg), "--temps", temps, "--kill-after", str(kill_after),
         "--t0", str(t0)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )  # fmt: skip
    assert out.returncode in (0, -signal.SIGKILL), out.stderr[-2000:]
    return out.returncode


def test_alarm_history_alternates_after_a_sigkill_between_state_and_event(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG.format(port=free_port()))
    assert _run(cfg, "90,60", kill_after=2) == -signal.SIGKILL  # raise; clear, then killed
    assert _run(cfg, "90,60", t0=2000.0) == 0  # the same temperatures after the restart
    queue = str(tmp_path / "data" / "q.db")
    history = [
        rec["state"]
        for _, _, _, payload in inspect.records(queue, "events")
        if (rec := decode(payload))["kind"] == "alarm" and rec.get("rule") == "hot"
    ]
    assert history == ["raised", "cleared"], history  # not raised, raised, cleared
    raw = peek_state(queue, "alarms")
    assert raw is not None
    hot = next(a for a in json.loads(raw)["alarms"] if a["rule"] == "hot")
    assert hot["active"] is False and hot["since"] == 2001.0
