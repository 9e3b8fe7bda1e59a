"""Issue 12 chaos run (``make chaos``): three ``gateway cloud`` processes on one PostgreSQL,
50 simulated gateways (the real protocol, CurveZMQ, failover over the three endpoints), and
during ingest: a receiver SIGKILLed and restarted, PostgreSQL itself crashed (``pg_ctl -m
immediate``) and restarted, a receiver SIGSTOPped past every timeout (the gateways' ACK timeout
and the database's ``idle_in_transaction_session_timeout``) and resumed. Verdict from the
database: 0 lost, 0 stored twice, order per stream kept, everything drained after recovery.
Prints the failover time (how long gateways went without an ACK across a fault).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

import pytest
from pg_support import private_cluster, server_bindir

from bench.cloudsim import SimGateway, check_store, fleet_keys, receiver_process
from gateway.core.processes import ManagedProcess

pytest.importorskip("psycopg")

GATEWAYS = int(os.environ.get("GATEWAY_CHAOS_GATEWAYS", "50"))
RATE = 8.0  # records/s per gateway (10 samples each): 400 records/s, 4,000 datapoints/s in all


def _ready(proc: ManagedProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "cloud: ROUTER" not in proc.log_tail(200):
        assert proc.poll() is None, f"{proc.name} exited at start:\n{proc.log_tail()}"
        assert time.monotonic() < deadline, f"{proc.name} not ready in {timeout} s"
        time.sleep(0.1)


def _restart(proc: ManagedProcess) -> ManagedProcess:
    fresh = ManagedProcess(proc.name, proc.argv, proc.log_path, cwd=proc.cwd)
    return fresh.start()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_three_receivers_many_gateways_under_faults(tmp_path: Path) -> None:
    if server_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (.ci/run installs postgresql)")
    with private_cluster(fsync=True) as pg:
        dsn = pg.create_db("chaos")
        names = [f"gw{i:03d}" for i in range(GATEWAYS)]
        keys_dir, allow_dir, curves = fleet_keys(tmp_path, names)
        made = [receiver_process(tmp_path, i, dsn, keys_dir, allow_dir, 60) for i in range(3)]
        procs = [p.start() for p, _ in made]
        endpoints = [e for _, e in made]
        faults: list[tuple[str, float]] = []
        try:
            for p in procs:
                _ready(p)
            duration = 42.0
            fleet = [
                SimGateway(name, endpoints[i % 3 :] + endpoints[: i % 3], curves[name],
                           count=int(RATE * duration), rate=RATE, points=10, batch=8,
                           ack_timeout=2.0)
                for i, name in enumerate(names)
            ]  # fmt: skip

            async def chaos() -> None:
                loop = asyncio.get_running_loop()
                await asyncio.sleep(6)
                faults.append(("SIGKILL receiver 0", time.monotonic()))
                procs[0].kill()
                await asyncio.sleep(2)
                procs[0] = _restart(procs[0])
                await asyncio.sleep(6)
                faults.append(("PostgreSQL crash + restart", time.monotonic()))
                await loop.run_in_executor(None, pg.stop, "immediate")
                await asyncio.sleep(2)
                await loop.run_in_executor(None, pg.start)
                await asyncio.sleep(6)
                faults.append(("SIGSTOP receiver 1 for 14 s", time.monotonic()))
                procs[1].signal(signal.SIGSTOP)
                await asyncio.sleep(14)  # > ack_timeout, > idle_in_transaction (4 s)
                procs[1].signal(signal.SIGCONT)

            async def main() -> float:
                t0 = time.monotonic()
                runs = [asyncio.ensure_future(g.run()) for g in fleet]
                await chaos()
                done, pending = await asyncio.wait(runs, timeout=150)
                for t in pending:
                    t.cancel()
                late = [g.name for g in fleet if g.acked < g.count]
                assert not pending, f"not drained in 150 s after the faults: {late[:10]}"
                for t in done:
                    t.result()
                # The resumed receiver serves again on its own (its old database session is gone).
                alone = SimGateway(names[0], [endpoints[1]], curves[names[0]], count=fleet[0].count + 40,
                                   points=10, batch=8, ack_timeout=5.0)  # fmt: skip
                alone.acked = fleet[0].count
                alone.meta_acked = True
                await asyncio.wait_for(alone.run(), 60)
                fleet[0].count = alone.count
                return time.monotonic() - t0

            elapsed = asyncio.run(main())
            totals = check_store(dsn, fleet)
        finally:
            for p in procs:
                p.signal(signal.SIGCONT)
                p.stop()
        reconnects = sum(g.reconnects for g in fleet)
        per_fault: dict[str, list[float]] = {name: [] for name, _ in faults}
        for g in fleet:
            for since, gap in g.stalls:  # a stall belongs to the last fault before it began
                began = [name for name, at in faults if at <= since + 0.5]
                if began:
                    per_fault[began[-1]].append(gap)
        shown = "; ".join(
            f"{name}: median {statistics.median(v):.1f} s, max {max(v):.1f} s ({len(v)} gateways)"
            if v else f"{name}: no gateway waited longer than the ACK timeout"
            for name, v in per_fault.items()
        )  # fmt: skip
        print(
            f"\ncloud chaos (PostgreSQL, 3 receivers, {GATEWAYS} gateways, CurveZMQ): "
            f"{totals['records']} records, {totals['points']} point rows, 0 lost, 0 twice, "
            f"order kept; {elapsed:.0f} s; {reconnects} failovers. Failover time (no ACK across "
            f"the fault, ACK timeout 2 s): {shown}"
        )
        assert reconnects >= 1, "no gateway failed over: the faults did not bite"
