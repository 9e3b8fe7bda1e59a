"""End-to-end: N pymodbus devices x M registers polled every P s, through rules and the uplink to the
cloud receiver. Reports datapoints/s delivered to the cloud, the gateway's CPU % of one core and its
RSS over the run; then, in the same run, the same polling load by pymodbus's own async client (the
reference) and the ratio of CPU spent. ``--scaling`` prints CPU per 1k datapoints/s at 1k, 10k, 50k
and 100k; ``--repeat N`` runs each load N times and prints medians (the machine is shared);
``--pure`` runs every load a second time with the gateway on the pure-Python twins of the compiled
hot paths (``GATEWAY_PUREPYTHON=1``), side by side; ``--issue`` runs the issue's loads (10k, 100k and
100 x 125 registers @ 50 ms = 250k dp/s); ``--sim-procs`` spreads the simulated devices over more
processes when one simulator process cannot answer the load.

    python bench/bench_e2e.py [--devices 50 --registers 20 --period 0.1 --duration 30] [--quick]
    python bench/bench_e2e.py --scaling --repeat 3 --duration 20 --pure
    python bench/bench_e2e.py --issue --repeat 3 --pure --sim-procs 4
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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


def start_profile(pid: int, duration: float, out: str) -> subprocess.Popen[bytes]:
    """py-spy (sampling, ~no overhead on the target) over the measured window, collapsed stacks."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    return subprocess.Popen(
        [spy, "record", "-p", str(pid), "-d", str(int(duration)), "-r", "100", "-f", "raw", "--function",
         "-o", out + ".raw", "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def finish_profile(spy: subprocess.Popen[bytes], out: str, top: int = 25) -> None:
    """Top functions by own and by total samples (the gateway's threads together)."""
    spy.wait(60)
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    n = 0
    for line in Path(out + ".raw").read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")
        ]
        n += c
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    lines = [f"{n} samples; own time:"]
    lines += [f"  {c / n * 100:5.1f} %  {f}" for f, c in own.most_common(top)]
    lines += ["total (inclusive) time:"]
    lines += [f"  {c / n * 100:5.1f} %  {f}" for f, c in total.most_common(top)]
    Path(out).write_text("\n".join(lines) + "\n")


def wait_ready(gw: ManagedProcess, status: str, timeout: float) -> bool:
    """Until the gateway's status endpoint answers: a 10k-point config takes seconds to load,
    and measuring before that measures the loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.poll() is not None:
            return False
        try:
            urllib.request.urlopen(f"http://{status}/health", timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # 503 while starting up: it is serving
        except OSError:
            time.sleep(0.5)
    return False


def samples_total(status: str) -> float:
    """The gateway's own count of samples polled so far (``gateway_samples_total``)."""
    with urllib.request.urlopen(f"http://{status}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("gateway_samples_total "):
                return float(line.split()[1])
    return 0.0


@dataclass
class Result:
    devices: int
    registers: int
    period: float
    offered: float  # datapoints/s
    delivered: float  # fraction of what was offered in the window that reached the cloud
    cpu: float  # % of one core
    rss: list[float]  # MB, once a second
    ref_cpu: float
    ref_rss: float
    polled: float = 0.0  # fraction of the offered load the gateway actually polled in the window
    pure: bool = False  # the gateway ran on the pure-Python twins (GATEWAY_PUREPYTHON=1)
    ref_polled: float = 0.0  # fraction of the offered load the reference polled

    @property
    def ratio_per_dp(self) -> float:
        """The ratio per datapoint actually polled: fair when either side missed cadence."""
        if not (self.ref_cpu and self.polled and self.ref_polled):
            return float("nan")
        return (self.cpu / self.polled) / (self.ref_cpu / self.ref_polled)

    @property
    def ratio(self) -> float:
        return self.cpu / self.ref_cpu if self.ref_cpu else float("nan")


def run_once(
    devices: int, registers: int, period: float, duration: float, warmup: float,
    profile: str | None = None, pure: bool = False, sim_procs: int = 2,
    ring_capacity: int | None = None,
) -> Result:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    base = free_port_block(devices + 3)  # devices, then cloud, PUB and the status endpoint
    cport = base + devices
    cloud_ep, pub_ep = f"tcp://127.0.0.1:{cport}", f"tcp://127.0.0.1:{cport + 1}"
    status = f"127.0.0.1:{cport + 2}"
    cfg = work / "gateway.yaml"
    config = gateway_config(work, base, devices, registers, period, cloud_ep, status)
    if ring_capacity is not None:  # 16 bytes per sample and point: 10k points x 128 = 20.5 MB
        config["gateway"]["ring_capacity"] = ring_capacity
    cfg.write_text(yaml.safe_dump(config))
    py = [sys.executable, "-m", "gateway.cli", "--log-level", "warning"]
    sims = sim_processes(work, base, devices, registers, sim_procs)
    cloud = ManagedProcess(
        "cloud",
        [*py, "cloud", "--insecure", "--bind", cloud_ep, "--pub", pub_ep,
         "--db", str(work / "cloud.db"), "--status-interval", "0"],
        work / "cloud.log",
        cwd=str(ROOT),
    )  # fmt: skip
    gw = ManagedProcess(
        "gateway", [*py, "run", str(cfg)], work / "gateway.log", cwd=str(ROOT),
        env={"GATEWAY_PUREPYTHON": "1" if pure else "0"},
    )  # fmt: skip
    procs = [*sims, cloud, gw]
    try:
        for p in procs:
            p.start()
        if not wait_ready(gw, status, 120.0):
            raise RuntimeError(f"the gateway did not start:\n{gw.log_tail()}")
        time.sleep(warmup)
        s0, t0 = samples_total(status), time.time()
        spy = start_profile(gw.pid, duration, profile) if profile else None
        cpu, rss = measure(psutil.Process(gw.pid), duration)
        if spy is not None and profile:
            finish_profile(spy, profile)
        s1, t1 = samples_total(status), time.time()
        time.sleep(2.0)  # let the last group commits and acks land
        gw.stop()
        cloud.stop()
        n = delivered(work / "cloud.db", t0, t1)
        expected = devices * registers / period * (t1 - t0)
        # The reference polls the same simulated devices, after the gateway has stopped.
        ref = ManagedProcess(
            "ref",
            [sys.executable, str(ROOT / "bench" / "ref_pymodbus_poller.py"),
             "--base-port", str(base), "--devices", str(devices), "--registers", str(registers),
             "--period", str(period), "--duration", str(duration + warmup)],
            work / "ref.log",
            cwd=str(ROOT),
        ).start()  # fmt: skip
        procs.append(ref)
        time.sleep(warmup)
        ref_cpu, ref_rss = measure(psutil.Process(ref.pid), duration)
        assert ref.proc is not None
        ref.proc.wait(duration + 30)
        ref_values = ref_count(work / "ref.log")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    return Result(
        devices, registers, period, devices * registers / period, n / expected, cpu, rss,
        ref_cpu, max(ref_rss), (s1 - s0) / expected, pure,
        ref_values / (devices * registers / period * (duration + warmup)),
    )  # fmt: skip


def ref_count(log: Path) -> int:
    """The values the reference poller decoded over its whole run (its last line)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("values="):
            return int(line.split("=", 1)[1])
    return 0


def median_result(runs: list[Result]) -> Result:
    """Medians of repeated runs (the machine is shared and noisy); RSS of the median-CPU run."""
    mid = sorted(runs, key=lambda r: r.cpu)[len(runs) // 2]
    return Result(
        mid.devices, mid.registers, mid.period, mid.offered,
        statistics.median(r.delivered for r in runs), statistics.median(r.cpu for r in runs),
        mid.rss, statistics.median(r.ref_cpu for r in runs), mid.ref_rss,
        statistics.median(r.polled for r in runs), mid.pure,
        statistics.median(r.ref_polled for r in runs),
    )  # fmt: skip


def report(r: Result, runs: int) -> None:
    rss = r.rss
    growth = rss[-1] - rss[min(5, len(rss) - 1)]
    print(
        f"load: {r.devices} devices x {r.registers} registers every {r.period * 1000:.0f} ms"
        f" = {r.offered:,.0f} datapoints/s offered ({runs} run(s), medians; "
        f"{'pure Python' if r.pure else 'compiled'} hot paths)"
    )
    print(
        f"gateway: delivered {r.delivered * 100:.1f} % of the window's datapoints to the cloud "
        f"(polled {r.polled * 100:.1f} %: a shortfall there is poll cadence on a busy machine)"
    )
    print(
        f"gateway: CPU {r.cpu:.1f} % of one core; RSS median {statistics.median(rss):.1f} MB, "
        f"first {rss[0]:.1f} MB, last {rss[-1]:.1f} MB, peak {max(rss):.1f} MB "
        f"(growth after 5 s: {growth:+.1f} MB)"
    )
    print(
        f"reference (pymodbus async client, polling + decode only): CPU {r.ref_cpu:.1f} % of one "
        f"core, RSS peak {r.ref_rss:.1f} MB"
    )
    print(
        f"ratio: gateway full pipeline CPU / pymodbus polling-only CPU = {r.ratio:.2f}; per "
        f"datapoint polled {r.ratio_per_dp:.2f} (pymodbus polled {r.ref_polled * 100:.1f} %)"
    )
    ok = r.delivered >= 0.999 and r.ratio <= 1.0 and max(rss) <= 80 and growth < 1.0
    print(
        "targets (issue 15): 100 % delivered, CPU <= 1.0x pymodbus, RSS <= 80 MB, growth < 1 MB"
        f" -> {'met' if ok else 'NOT met'}"
    )


#: The scaling table's loads: (devices, registers, period) for 1k, 10k, 50k and 100k dp/s.
SCALING = [(10, 10, 0.1), (50, 20, 0.1), (100, 50, 0.1), (100, 100, 0.1)]
#: The issue's loads: 10k, 100k and 250k dp/s (125 registers: the most one read may return).
ISSUE = [(50, 20, 0.1), (100, 100, 0.1), (100, 125, 0.05)]


def print_table(table: list[Result], title: str) -> None:
    """The issue's table: one row per load and implementation, CPU per 1k dp/s for scaling."""
    print(f"\n{title}")
    print("| offered load | hot paths | delivered | polled | gateway CPU % | CPU % per 1k dp/s "
          "| RSS median / peak MB | growth MB | pymodbus CPU % (polled) | ratio "
          "| ratio per dp polled |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        growth = r.rss[-1] - r.rss[min(5, len(r.rss) - 1)]
        print(
            f"| {r.devices} x {r.registers} @ {r.period * 1000:.0f} ms ({r.offered:,.0f} dp/s) | "
            f"{'pure' if r.pure else 'compiled'} | {r.delivered * 100:.1f} % | "
            f"{r.polled * 100:.1f} % | {r.cpu:.1f} | {r.cpu / (r.offered / 1000):.3f} | "
            f"{statistics.median(r.rss):.1f} / {max(r.rss):.1f} | {growth:+.1f} | "
            f"{r.ref_cpu:.1f} ({r.ref_polled * 100:.0f} %) | {r.ratio:.2f} | "
            f"{r.ratio_per_dp:.2f} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=20)
    ap.add_argument("--period", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after the gateway is up")
    ap.add_argument("--repeat", type=int, default=1, help="runs per load; medians are printed")
    ap.add_argument(
        "--scaling", action="store_true",
        help="the scaling table instead: CPU per 1k datapoints/s at 1k, 10k, 50k and 100k",
    )  # fmt: skip
    ap.add_argument(
        "--issue", action="store_true",
        help="the issue's loads: 10k, 100k and 250k (100 x 125 registers @ 50 ms) dp/s",
    )  # fmt: skip
    ap.add_argument(
        "--pure", action="store_true",
        help="each load also with GATEWAY_PUREPYTHON=1 (the pure-Python twins), side by side",
    )  # fmt: skip
    ap.add_argument(
        "--sim-procs", type=int, default=2,
        help="simulator processes the devices are spread over (default 2)",
    )  # fmt: skip
    ap.add_argument(
        "--ring-capacity", type=int, default=None,
        help="gateway.ring_capacity (default: the config default, 128 samples per point)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="5 devices, 5 s: a smoke run")
    ap.add_argument(
        "--profile", metavar="FILE", help="py-spy the gateway during the run; top functions -> FILE"
    )
    args = ap.parse_args()
    if args.quick:
        args.devices, args.duration, args.warmup = 5, 5.0, 2.0
    pure_env = os.environ.get("GATEWAY_PUREPYTHON") == "1"
    impls = [False, True] if args.pure else [pure_env]
    if args.scaling:
        loads = SCALING
    elif args.issue:
        loads = ISSUE
    else:
        loads = [(args.devices, args.registers, args.period)]
    table = []
    for d, m, p in loads:
        for pure in impls:
            opts = (args.profile, pure, args.sim_procs, args.ring_capacity)
            runs = [
                run_once(d, m, p, args.duration, args.warmup, *opts) for _ in range(args.repeat)
            ]
            r = median_result(runs)
            report(r, len(runs))
            table.append(r)
            sys.stdout.flush()
    print_table(table, f"medians of {args.repeat} run(s) per row; ratio = gateway CPU / pymodbus "
                       "polling-only CPU on the same load, measured in the same run")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
