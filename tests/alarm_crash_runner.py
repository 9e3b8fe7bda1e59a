"""A gateway process for the alarm crash test: a real Runtime fed samples of ``press1.temp``.

After each sample it waits until everything is committed (``flush``), except after sample
``--kill-after``: there it SIGKILLs itself at once, the worst moment for alarm state (the rule
engine has changed it, the alarm event is still on its way to the queue).

    python tests/alarm_crash_runner.py CONFIG --temps 90,60 --kill-after 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import load_config  # noqa: E402
from gateway.core.model import SampleBatch  # noqa: E402
from gateway.core.runtime import Runtime  # noqa: E402


async def main(a: argparse.Namespace) -> int:
    rt = Runtime(load_config(a.config))
    await rt.start()
    pid = np.array([rt.points.id_of("press1.temp")], np.uint32)
    for i, temp in enumerate(float(t) for t in a.temps.split(",")):
        rt.on_batch(SampleBatch.uniform(pid, a.t0 + i, np.array([temp])))
        if i + 1 == a.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        await rt.uplink.flush()
    await rt.stop()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--temps", required=True)
    ap.add_argument("--kill-after", type=int, default=0)
    ap.add_argument("--t0", type=float, default=1000.0)
    sys.exit(asyncio.run(main(ap.parse_args())))
