"""End-to-end: N pymodbus devices x M registers polled every P s, through rules and the uplink to the
cloud receiver. Reports datapoints/s delivered to the cloud, the gateway's CPU % of one core and its
RSS over the run; then, in the same run, the same polling load by pymodbus's own async client (the
reference) and the ratio of CPU spent.

    python bench/bench_e2e.py [--devices 50 --registers 20 --period 0.1 --duration 30] [--quick]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadrig import free_port_block, gateway_config, sim_processes  # noqa: E402
from gateway.core.processes import ManagedProcess  # noqa: E402


def delivered(db: Path, t0: float, t1: float) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT payload FROM records WHERE stream = 'telemetry'").fetchall()
    finally:
        con.close()
    n = 0
    for (payload,) in rows:
        rec = msgpack.unpackb(payload, raw=False)
        n += sum(1 for ts in rec["ts"] if t0 <= ts < t1)
    return n


def measure(proc: psutil.Process, duration: float) -> tuple[float, list[float]]:
    """CPU % of one core over ``duration`` and RSS samples (MB) once a second."""
    c0 = proc.cpu_times()
    t0 = time.monotonic()
    rss = []
    while time.monotonic() - t0 < duration:
        rss.append(proc.memory_info().rss / 1e6)
        time.sleep(1.0)
    c1 = proc.cpu_times()
    elapsed = time.monotonic() - t0
    cpu = (c1.user + c1.system - c0.user - c0.system) / elapsed * 100
    return cpu, rss


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=20)
    ap.add_argument("--period", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="5 devices, 5 s: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.duration, args.warmup = 5, 5.0, 2.0
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    base = free_port_block(args.devices + 3)  # devices, then cloud, PUB and the status endpoint
    cport = base + args.devices
    cloud_ep, pub_ep = f"tcp://127.0.0.1:{cport}", f"tcp://127.0.0.1:{cport + 1}"
    status = f"127.0.0.1:{cport + 2}"
    cfg = work / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            gateway_config(work, base, args.devices, args.registers, args.period, cloud_ep, status)
        )
    )
    py = [sys.executable, "-m", "gateway.cli", "--log-level", "warning"]
    sims = sim_processes(work, base, args.devices, args.registers)
    cloud = ManagedProcess(
        "cloud",
        [
            *py,
            "cloud",
            "--insecure",
            "--bind",
            cloud_ep,
            "--pub",
            pub_ep,
            "--db",
            str(work / "cloud.db"),
            "--status-interval",
            "0",
        ],
        work / "cloud.log",
        cwd=str(ROOT),
    )
    gw = ManagedProcess("gateway", [*py, "run", str(cfg)], work / "gateway.log", cwd=str(ROOT))
    procs = [*sims, cloud, gw]
    try:
        for p in procs:
            p.start()
        time.sleep(args.warmup)
        if gw.poll() is not None:
            print(gw.log_tail(), file=sys.stderr)
            return 1
        t0 = time.time()
        cpu, rss = measure(psutil.Process(gw.pid), args.duration)
        t1 = time.time()
        time.sleep(2.0)  # let the last group commits and acks land
        gw.stop()
        cloud.stop()
        n = delivered(work / "cloud.db", t0, t1)
        expected = args.devices * args.registers / args.period * (t1 - t0)
        # The reference polls the same simulated devices, after the gateway has stopped.
        ref = ManagedProcess(
            "ref",
            [
                sys.executable,
                str(ROOT / "bench" / "ref_pymodbus_poller.py"),
                "--base-port",
                str(base),
                "--devices",
                str(args.devices),
                "--registers",
                str(args.registers),
                "--period",
                str(args.period),
                "--duration",
                str(args.duration + args.warmup),
            ],
            work / "ref.log",
            cwd=str(ROOT),
        ).start()
        procs.append(ref)
        time.sleep(args.warmup)
        ref_cpu, ref_rss = measure(psutil.Process(ref.pid), args.duration)
        assert ref.proc is not None
        ref.proc.wait(args.duration + 30)
        ref_values = ref.log_tail(1)
    finally:
        for p in reversed(procs):
            p.stop()
    rate = n / (t1 - t0)
    print(
        f"load: {args.devices} devices x {args.registers} registers every {args.period * 1000:.0f} ms"
        f" = {args.devices * args.registers / args.period:,.0f} datapoints/s offered"
    )
    print(
        f"gateway: delivered {n:,} of {expected:,.0f} datapoints to the cloud "
        f"({rate:,.0f}/s, {n / expected * 100:.1f} %)"
    )
    print(
        f"gateway: CPU {cpu:.1f} % of one core; RSS median {statistics.median(rss):.1f} MB, "
        f"first {rss[0]:.1f} MB, last {rss[-1]:.1f} MB, peak {max(rss):.1f} MB"
    )
    print(
        f"reference (pymodbus async client, polling + decode only): CPU {ref_cpu:.1f} % of one core,"
        f" RSS peak {max(ref_rss):.1f} MB, {ref_values}"
    )
    print(f"ratio: gateway full pipeline CPU / pymodbus polling-only CPU = {cpu / ref_cpu:.2f}")
    print(
        f"targets: all delivered, CPU <= 10 %, RSS <= 60 MB and flat -> "
        f"{'met' if n >= 0.99 * expected and cpu <= 10 and max(rss) <= 60 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
