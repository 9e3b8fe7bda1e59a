"""Replay equals live: the demo's rules run live (the real runtime against the simulated devices,
a real receiver and its SQLite store), the samples go `gateway export` -> `gateway rules test`,
and the replay makes the same firings, clears and writes at the same times.

Nothing here names the demo's rules or their firings: whatever ``examples/demo.yaml`` says, the
live engine's effects are the expectation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from uplink_support import demo_config, running_receiver, wait_until

from gateway.cloud.store import SQLiteCloudStore
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, demo_factory
from gateway.rules.effects import effect_record

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.yaml"
SPEED = 10.0  # machine time runs 10x faster: the overheat-and-restart episode in a few seconds


def _jsonable(rec: dict[str, object]) -> dict[str, object]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}


class EngineLog:
    """Every call the runtime makes into its rule engine, in order, with the effects returned."""

    def __init__(self, runtime: Runtime) -> None:
        self.calls: list[tuple[str, float, list[dict[str, object]]]] = []
        engine = runtime.rules
        process, tick = engine.process, engine.tick

        def logged_process(batch: Any) -> list[Any]:
            out = process(batch)
            self.calls.append(
                ("batch", float(batch.ts[0]), [_jsonable(effect_record(e)) for e in out])
            )
            return out

        def logged_tick(now: float) -> list[Any]:
            out = tick(now)
            self.calls.append(("tick", now, [_jsonable(effect_record(e)) for e in out]))
            return out

        engine.process = logged_process  # type: ignore[method-assign]
        engine.tick = logged_tick  # type: ignore[method-assign]

    def effects_until_batch(self, n: int, last_ts: float) -> list[dict[str, object]]:
        """Effects of the calls before the (n+1)-th batch, up to ``last_ts`` (the recording's
        end: a replay cannot know what the gateway did after its last recorded sample)."""
        out: list[dict[str, object]] = []
        batches = 0
        for kind, _, effects in self.calls:
            if kind == "batch":
                if batches == n:
                    break
                batches += 1
            out += effects
        return [e for e in out if float(e["ts"]) <= last_ts]  # type: ignore[arg-type]

    def batch_times(self) -> list[float]:
        return [t for kind, t, _ in self.calls if kind == "batch"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)  # fmt: skip


def test_a_recorded_live_run_replays_to_the_same_effects_at_the_same_times(tmp_path: Path) -> None:
    t0, m0 = time.time(), time.monotonic()

    def clock() -> float:
        return t0 + (time.monotonic() - m0) * SPEED

    db = tmp_path / "cloud.db"
    live: EngineLog | None = None
    runtime: Runtime | None = None

    async def main() -> None:
        nonlocal live, runtime
        specs = [dataclasses.replace(s, port=0) for s in demo_factory()]
        store = SQLiteCloudStore(str(db))
        async with Factory(specs, clock) as factory, running_receiver(store) as receiver:
            config = demo_config(tmp_path, factory.ports, receiver.endpoint, tmp_path / "q.db")
            runtime = Runtime(config, clock=clock)
            if hasattr(runtime, "rule_clock"):  # its holdback is in clock time: 1 s of wall time
                runtime.rule_clock.holdback *= SPEED
            live = EngineLog(runtime)
            stop = asyncio.Event()
            run = asyncio.create_task(runtime.run(stop))

            def episode_over() -> bool:
                factory.tick()
                rules = [e["rule"] for _, _, es in live.calls for e in es if e["kind"] == "write"]  # type: ignore[union-attr]
                return len(rules) >= 2 and rules[-1] != rules[0]  # stopped, then restarted

            try:
                await wait_until(episode_over, "the press to be stopped and restarted by rules", 40)
                telemetry = runtime.uplink.stats()["streams"]["telemetry"]  # type: ignore[index]
                sent = int(telemetry["next_seq"]) - 1  # type: ignore[index]

                def stored() -> bool:
                    factory.tick()
                    st = runtime.uplink.stats()["streams"]["telemetry"]  # type: ignore[union-attr, index]
                    return int(st["acked_hw"]) >= sent  # type: ignore[index]

                await wait_until(stored, "the receiver to store the recorded telemetry", 20)
            finally:
                stop.set()
                await asyncio.wait_for(run, 15)
        store.close()

    asyncio.run(asyncio.wait_for(main(), 90))
    assert live is not None and runtime is not None

    # cloud store -> gateway export -> gateway rules test, all real processes and files
    rec = tmp_path / "recording.csv"
    exp = _run("export", "--db", str(db), "--format", "csv", "-o", str(rec))
    assert exp.returncode == 0, exp.stderr
    rows = rec.read_text().splitlines()[1:]
    replayed = _run("rules", "test", str(DEMO), "--data", str(rec), "--json")
    assert replayed.returncode == 0, replayed.stderr
    got = [json.loads(line) for line in replayed.stdout.splitlines()]

    # The recording is every batch the live engine processed, in its order (the store holds a
    # prefix of them: the run went on while it was being stored).
    batch_ts: list[float] = []
    for line in rows:
        ts = float(line.split(",")[0])
        if not batch_ts or ts != batch_ts[-1]:
            batch_ts.append(ts)
    live_ts = live.batch_times()
    n = len(batch_ts)
    assert batch_ts == live_ts[:n] or _merged(live_ts, batch_ts), "recording is not the live order"
    n_live = _batches_covering(live_ts, batch_ts)
    last_ts = max(float(line.split(",")[0]) for line in rows)
    want = live.effects_until_batch(n_live, last_ts)
    got = [e for e in got if float(e["ts"]) <= last_ts]

    kinds = {e["kind"] for e in want}
    assert "write" in kinds and "alarm_raised" in kinds, f"the live run did too little: {want}"
    late = getattr(getattr(runtime, "rule_clock", None), "late", 0)
    assert late == 0, f"{late} batches reached the live rules after their ticks (slow machine?)"
    assert got == want, _diff(want, got)


def _merged(live_ts: list[float], rec_ts: list[float]) -> bool:
    """Consecutive live batches with one timestamp are one batch in a recording."""
    dedup = [t for i, t in enumerate(live_ts) if i == 0 or t != live_ts[i - 1]]
    return dedup[: len(rec_ts)] == rec_ts


def _batches_covering(live_ts: list[float], rec_ts: list[float]) -> int:
    """How many live batches the recording's batches stand for."""
    seen = 0
    count = 0
    for i, t in enumerate(live_ts):
        if i == 0 or t != live_ts[i - 1]:
            if seen == len(rec_ts):
                break
            seen += 1
        count += 1
    return count


def _diff(want: list[dict[str, object]], got: list[dict[str, object]]) -> str:
    lines = [f"live {len(want)} effects, replay {len(got)}"]
    for i in range(max(len(want), len(got))):
        w = want[i] if i < len(want) else None
        g = got[i] if i < len(got) else None
        if w != g:
            lines.append(f"#{i}: live   {w}\n     replay {g}")
    return "\n".join(lines[:12])


def test_rule_clock_ticks_a_grid_of_sample_time_and_counts_batches_the_loop_outran() -> None:
    import numpy as np

    from gateway.core.model import SampleBatch
    from gateway.rules.clock import RuleClock

    class Engine:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float]] = []

        def tick(self, now: float) -> list[Any]:
            self.calls.append(("tick", now))
            return []

        def process(self, batch: SampleBatch) -> list[Any]:
            self.calls.append(("batch", float(batch.ts[0])))
            return []

    def batch(t: float) -> SampleBatch:
        return SampleBatch.uniform(np.array([0], np.uint32), t, np.array([1.0]))

    clock, eng = RuleClock(holdback=1.0), Engine()
    assert [clock.grid_index(t) for t in (0.3, 0.7, 2.3, 1e9 + 0.1)] == [3, 7, 23, 10_000_000_001]
    clock.feed(eng, batch(0.25))  # type: ignore[arg-type]
    clock.feed(eng, batch(0.55))  # type: ignore[arg-type]
    clock.advance(eng, 1.3)  # type: ignore[arg-type]  # holds back 1 s: nothing past 0.3
    assert eng.calls == [("tick", 0.2), ("batch", 0.25), ("tick", 0.3), ("tick", 0.4),
                         ("tick", 0.5), ("batch", 0.55)]  # fmt: skip
    clock.advance(eng, 1.75)  # type: ignore[arg-type]  # no samples: the loop ticks 0.6, 0.7
    clock.feed(eng, batch(0.65))  # type: ignore[arg-type]  # stamped before 0.7, delivered after
    assert clock.late == 1
    clock.feed(eng, batch(0.9))  # type: ignore[arg-type]
    clock.feed(eng, batch(0.8))  # type: ignore[arg-type]  # behind a later batch: replayable
    assert clock.late == 1
