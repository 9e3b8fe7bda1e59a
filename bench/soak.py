"""Soak: the real pipeline for an hour at 10,000 datapoints/s with a cloud outage every cycle.

Real processes on loopback: ``gateway sim --factory bench`` (pymodbus devices, two processes),
``gateway run`` polling every register each period, ``gateway cloud`` with CurveZMQ keys. The run
is ``--cycles`` equal cycles; each is one third connected ("up"), one third with the receiver
process stopped ("outage"; SIGINT, as an operator or a deploy would), one third after restarting it
on the same store ("recovery": the backlog drains, then steady again). One hour and 4 cycles give
a 5-minute outage every 15 minutes.

Warm-up is the first cycle (start-up, the first outage and the first drain). Growth of a process is
compared between like phases: for each phase, the median RSS in the last cycle minus the median
RSS in cycle 2 (the first after warm-up); the verdict uses the largest of the three. The receiver
is a new process in every cycle after the first, each with the same history (started after an
outage, drains, runs steady), so its like phases compare like lives.

After the last cycle the devices stop, the queue must drain to 0 and the gateway's counters must
match the cloud's store (see soak_check.py). Figures go to stdout and to ``soak.json`` in the work
directory (``build/soak/<time>`` unless ``--work``), beside the raw ``samples.csv`` and ``run.json``
from which ``--work DIR --report-only`` recomputes them (the stores and logs stay there too).

    python bench/soak.py [--minutes 60] [--cycles 4] [--devices 20 --registers 50 --period 0.1]

``SOAK_MINUTES`` sets the default of ``--minutes`` (``make soak SOAK_MINUTES=6``: a smoke run).
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadrig import free_port_block, gateway_config, sim_processes  # noqa: E402
from bench.soak_check import scan_telemetry  # noqa: E402
from gateway.core.processes import ManagedProcess  # noqa: E402
from hil_tests.rig import (  # noqa: E402
    check_sequences,
    cloud_process,
    curve_keys,
    gateway_status,
    read_only,
    wait_for,
)

GW_ID = "soak-gw"
PHASES = ("up", "outage", "recovery")
RSS_LIMIT_MB = 2.0
DRAINED_AGE_S = 2.0  # the backlog is gone when the oldest queued record is younger than this


@dataclass
class Sample:
    t: float  # s since the measured run began
    cycle: int
    phase: str
    gw_rss: float  # MB
    cloud_rss: float | None  # MB; None while the receiver is down
    gw_anon: float | None  # MB of it anonymous (heap), the rest file-backed (libraries, mmaps)
    depth: int  # records queued, all streams
    oldest_s: float
    link: str
    sps: float  # the gateway's own samples/s
    load1: float


@dataclass
class Outage:
    cycle: int
    stopped_at: float
    restarted_at: float = 0.0
    drained_at: float | None = None
    peak_depth: int = 0

    @property
    def drain_s(self) -> float | None:
        return None if self.drained_at is None else self.drained_at - self.restarted_at


def mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 1e6


def anon_mb(pid: int) -> float | None:
    """RssAnon from /proc (Linux): tells heap growth from file pages mapped in."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return None


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def queue_depth(st: dict[str, Any]) -> int:
    return sum(int(s.get("depth", 0)) for s in st["uplink"].get("streams", {}).values())


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        base = free_port_block(args.devices + 3)
        cport = base + args.devices
        self.bind, self.pub = f"tcp://127.0.0.1:{cport}", f"tcp://127.0.0.1:{cport + 1}"
        self.status_addr = f"127.0.0.1:{cport + 2}"
        self.db = work / "cloud.db"
        cfg = gateway_config(
            work,
            base,
            args.devices,
            args.registers,
            args.period,
            self.bind,
            self.status_addr,
            GW_ID,
        )
        cfg["uplink"].pop("insecure")
        cfg["uplink"].update(curve_keys(work, GW_ID))
        (work / "gateway.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.sims = sim_processes(work, base, args.devices, args.registers)
        py = [sys.executable, "-m", "gateway.cli", "--log-level", "warning"]
        self.gw = ManagedProcess(
            "gateway", [*py, "run", str(work / "gateway.yaml")], work / "gateway.log", cwd=str(ROOT)
        )
        self.cloud: ManagedProcess | None = None
        self.cloud_cpu: dict[int, float] = {}  # pid -> last CPU seconds seen
        self.samples: list[Sample] = []
        self.outages: list[Outage] = []
        self.problems: list[str] = []

    # -- processes ----------------------------------------------------------------------------
    def start_cloud(self) -> None:
        # Status lines once a day, i.e. never here: `--status-interval 0` makes run_cloud spin
        # (asyncio.wait(timeout=0) in a loop: a full core), which would swamp the receiver's CPU.
        self.cloud = cloud_process(
            self.work, self.bind, self.pub, self.db, self.work / "cloud.log", status_interval=86400
        )
        self.cloud.start()

    def stop_cloud(self) -> None:
        assert self.cloud is not None
        self._note_cloud_cpu()
        code = self.cloud.stop(timeout=30)
        if code not in (0, None):  # noted, not fatal: the run's other figures still count
            self.problems.append(f"receiver exited {code}: {self.cloud.log_tail(3)}")
        self.cloud = None

    def _note_cloud_cpu(self) -> None:
        if self.cloud is not None:
            try:
                self.cloud_cpu[self.cloud.pid] = cpu_s(psutil.Process(self.cloud.pid))
            except psutil.Error:
                pass

    def alive(self) -> None:
        for p in [*self.sims, self.gw, *([self.cloud] if self.cloud else [])]:
            if p.poll() is not None:
                raise AssertionError(f"{p.name} died (exit {p.poll()}):\n{p.log_tail()}")

    def close(self) -> None:
        for p in [self.gw, *([self.cloud] if self.cloud else []), *self.sims]:
            p.stop()

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        a = self.args
        for p in self.sims:
            p.start()
        self.start_cloud()
        self.gw.start()
        wait_for(  # true at once when a process died, so the error below is said at once
            lambda: (
                any(p.poll() is not None for p in [*self.sims, self.gw])
                or gateway_status(self.status_addr)["uplink"].get("link") == "connected"
            ),
            60,
            "the gateway's uplink to connect",
        )
        self.alive()
        time.sleep(a.settle)
        gw = psutil.Process(self.gw.pid)
        sim_procs = [psutil.Process(p.pid) for p in self.sims]
        cycle_s = a.minutes * 60 / a.cycles
        total_s = a.minutes * 60
        psutil.cpu_percent()  # starts the machine-wide CPU interval
        gw_cpu0, sim_cpu0 = cpu_s(gw), sum(cpu_s(p) for p in sim_procs)
        wall0, t0 = time.time(), time.monotonic()
        next_tick = 0.0
        while (now := time.monotonic() - t0) < total_s:
            cycle, within = int(now // cycle_s), now % cycle_s
            phase = PHASES[min(2, int(within // (cycle_s / 3)))]
            if phase == "outage" and self.cloud is not None:
                self.stop_cloud()
                self.outages.append(Outage(cycle + 1, time.monotonic() - t0))
            elif phase == "recovery" and self.cloud is None:
                self.start_cloud()
                self.outages[-1].restarted_at = time.monotonic() - t0
            self.alive()
            self.sample(gw, cycle + 1, phase, time.monotonic() - t0)
            next_tick += a.interval
            time.sleep(max(0.0, next_tick - (time.monotonic() - t0)))
        wall1, t_end = time.time(), time.monotonic()
        gw_cpu = cpu_s(gw) - gw_cpu0
        sim_cpu = sum(cpu_s(p) for p in sim_procs) - sim_cpu0
        machine_cpu = psutil.cpu_percent()
        self._note_cloud_cpu()
        # The end: no more load; everything the gateway accepted must reach the cloud.
        problems_under_load = gateway_status(self.status_addr).get("problems") or []
        for p in self.sims:
            p.stop()
        final_drain_s = self.final_drain(t_end)
        st = gateway_status(self.status_addr)
        time.sleep(2.0)
        st2 = gateway_status(self.status_addr)
        assert st2["samples_total"] == st["samples_total"] and queue_depth(st2) == 0, (
            "the gateway still produced or queued after its devices stopped"
        )
        gw_rss_end = mb(gw)
        self.gw.stop(timeout=30)
        self.stop_cloud()
        return {
            "wall": (wall0, wall1),
            "seconds": t_end - t0,
            "status": st,
            "final_drain_s": final_drain_s,
            "gw_rss_end": gw_rss_end,
            "problems": self.problems,
            "gateway_problems_at_end": problems_under_load,
            "cpu": {
                "gateway_pct": gw_cpu / (t_end - t0) * 100,
                "receivers_pct": sum(self.cloud_cpu.values()) / (t_end - t0) * 100,
                "sims_pct": sim_cpu / (t_end - t0) * 100,
                "machine_pct": machine_cpu,
            },
        }

    def sample(self, gw: psutil.Process, cycle: int, phase: str, t: float) -> None:
        try:
            st = gateway_status(self.status_addr, timeout=5)
        except OSError:
            return  # a slow answer under load: skip this tick, the next one samples
        cloud_rss = None
        if self.cloud is not None:
            try:
                cproc = psutil.Process(self.cloud.pid)
                cloud_rss = mb(cproc)
                self.cloud_cpu[self.cloud.pid] = cpu_s(cproc)
            except psutil.Error:
                pass
        up = st["uplink"]
        s = Sample(
            t=t,
            cycle=cycle,
            phase=phase,
            gw_rss=mb(gw),
            gw_anon=anon_mb(gw.pid),
            cloud_rss=cloud_rss,
            depth=queue_depth(st),
            oldest_s=float(up.get("oldest_age_s") or 0.0),
            link=str(up.get("link")),
            sps=float(st.get("samples_per_second") or 0.0),
            load1=os.getloadavg()[0],
        )
        self.samples.append(s)
        if self.outages and self.outages[-1].drained_at is None:
            o = self.outages[-1]
            o.peak_depth = max(o.peak_depth, s.depth)
            if o.restarted_at and s.link == "connected" and s.oldest_s < DRAINED_AGE_S:
                o.drained_at = t

    def final_drain(self, t_end: float) -> float:
        wait_for(
            lambda: (
                queue_depth(gateway_status(self.status_addr)) == 0
                and not any(
                    d["online"] for d in gateway_status(self.status_addr)["devices"].values()
                )
            ),
            self.args.minutes * 60 / self.args.cycles,
            "the gateway's queue to drain to 0 after its devices stopped",
            interval=0.5,
        )
        return time.monotonic() - t_end


# -- figures --------------------------------------------------------------------------------------
def phase_medians(samples: list[Sample], attr: str) -> dict[tuple[int, str], float]:
    groups: dict[tuple[int, str], list[float]] = {}
    for s in samples:
        v = getattr(s, attr)
        if v is not None:
            groups.setdefault((s.cycle, s.phase), []).append(v)
    return {k: statistics.median(v) for k, v in groups.items()}


def growth(med: dict[tuple[int, str], float], cycles: int) -> tuple[float, dict[str, float]]:
    """Largest like-phase growth, last cycle against cycle 2 (cycle 1 is warm-up)."""
    per = {
        ph: med[(cycles, ph)] - med[(2, ph)]
        for ph in PHASES
        if (cycles, ph) in med and (2, ph) in med
    }
    return (max(per.values()) if per else float("nan")), per


def cloud_alarms(db: Path) -> list[str]:
    """Alarms the receiver raised (duplicate identity, store replaced...); none in a clean soak."""
    with read_only(db) as con:
        try:
            rows = con.execute("SELECT kind, detail FROM alarms").fetchall()
        except sqlite3.OperationalError:  # a store from before the alarms table
            return []
    return [f"{k}: {d}" for k, d in rows]


def report(
    work: Path,
    samples: list[Sample],
    outages: list[Outage],
    run: dict[str, Any],
    args: argparse.Namespace,
) -> bool:
    st = run["status"]
    scan = scan_telemetry(work / "cloud.db", GW_ID, run["wall"], in_range_below=args.registers // 2)
    try:
        stored: dict[str, int] | str = check_sequences(work / "cloud.db", GW_ID)
        seq_ok = True
    except AssertionError as exc:
        stored, seq_ok = str(exc), False
    offered = args.devices * args.registers / args.period
    reached = scan.in_window / run["seconds"]
    gw_med = phase_medians(samples, "gw_rss")
    cl_med = phase_medians(samples, "cloud_rss")
    gw_growth, gw_per = growth(gw_med, args.cycles)
    cl_growth, cl_per = growth(cl_med, args.cycles)
    dp_per_rec = scan.datapoints / max(1, scan.records)
    up = st["uplink"]
    responses = sum(int(d.get("responses", 0)) for d in st["devices"].values())
    acquired = int(st["samples_total"])
    lost_vs_acquired = acquired - scan.datapoints
    streams_ok = all(
        s["depth"] == 0 and s["acked_hw"] == s["next_seq"] - 1 for s in up["streams"].values()
    )
    loads = [s.load1 for s in samples]

    print(f"\nsoak: {args.minutes:g} min, {args.cycles} cycles of {args.minutes / args.cycles:g} min"
          f" (outage {args.minutes / args.cycles / 3:g} min each); work dir {work}")  # fmt: skip
    print(f"load offered: {args.devices} devices x {args.registers} registers every "
          f"{args.period * 1000:.0f} ms = {offered:,.0f} dp/s; reached {reached:,.0f} dp/s "
          f"({reached / offered * 100:.1f} %), gateway's own rate median "
          f"{statistics.median(s.sps for s in samples):,.0f}/s")  # fmt: skip
    print(f"CPU (% of one core): gateway {run['cpu']['gateway_pct']:.0f}, receivers "
          f"{run['cpu']['receivers_pct']:.0f}, simulators {run['cpu']['sims_pct']:.0f}; machine "
          f"{run['cpu']['machine_pct']:.0f} % of {psutil.cpu_count()} cores; load avg "
          f"median {statistics.median(loads):.1f}, max {max(loads):.1f}")  # fmt: skip
    print("\nRSS, MB (median per phase)   " + "  ".join(f"{'c' + str(c):>16}" for c in
          range(1, args.cycles + 1)))  # fmt: skip
    anon_med = phase_medians(samples, "gw_anon")
    for name, med in (("gateway", gw_med), ("gw heap", anon_med), ("receiver", cl_med)):
        for ph in PHASES:
            cells = [med.get((c, ph)) for c in range(1, args.cycles + 1)]
            row = "  ".join(f"{'-' if v is None else f'{v:.1f}':>16}" for v in cells)
            print(f"  {name:<9}{ph:<19}{row}")
    print("\noutage  stopped  restarted  backlog peak (records ~dp)  drain s")
    for o in outages:
        drain = "not drained" if o.drain_s is None else f"{o.drain_s:.0f}"
        print(f"  {o.cycle:<6}{o.stopped_at:>7.0f}s {o.restarted_at:>9.0f}s "
              f"{o.peak_depth:>12,} {o.peak_depth * dp_per_rec:>12,.0f}  {drain:>9}")  # fmt: skip
    print(f"  final: devices stopped, queue drained to 0 in {run['final_drain_s']:.1f}s")
    checks = {
        f"gateway RSS growth after warm-up {gw_growth:+.2f} MB < {RSS_LIMIT_MB}": gw_growth
        < RSS_LIMIT_MB,
        f"receiver RSS growth after warm-up {cl_growth:+.2f} MB < {RSS_LIMIT_MB}": cl_growth
        < RSS_LIMIT_MB,
        f"cloud sequences contiguous (holes only at declared DROPs): {stored}": seq_ok,
        "gateway queue drained to 0, acked_hw = last seq on every stream": streams_ok,
        f"lost: gateway acquired {acquired:,} dp, cloud stored {scan.datapoints:,} "
        f"(diff {lost_vs_acquired:+,})": lost_vs_acquired == 0,
        f"duplicated/out of order: {scan.not_advancing} samples whose ts did not advance": (
            scan.not_advancing == 0
        ),
        f"device responses x registers = good dp: {responses * args.registers:,} vs "
        f"{scan.good:,}": responses * args.registers == scan.good,
        f"poll records complete (a device's points equal): uneven {scan.uneven_devices}": (
            not scan.uneven_devices
        ),
        f"values in the bench model's range: {scan.out_of_range} outside": scan.out_of_range == 0,
        f"uplink drops: {up.get('dropped', 0)}, gaps declared: 0": not up.get("dropped"),
        f"receiver stopped cleanly every time: {run['problems'] or 'yes'}": not run["problems"],
        f"cloud alarms raised: {cloud_alarms(work / 'cloud.db') or 'none'}": not cloud_alarms(
            work / "cloud.db"
        ),
        f"gateway /status problems at the end, under load: {run.get('gateway_problems_at_end') or 'none'}": not run.get(
            "gateway_problems_at_end"
        ),
        "every outage drained": all(o.drain_s is not None for o in outages),
    }
    print()
    for what, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")
    (work / "soak.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "run": {k: v for k, v in run.items() if k != "status"},
                "reached_dps": reached,
                "rss_growth_mb": {"gateway": gw_per, "receiver": cl_per},
                "outages": [asdict(o) | {"drain_s": o.drain_s} for o in outages],
                "scan": asdict(scan),
                "checks": checks,
            },
            indent=1,
            default=str,
        )
    )
    return all(checks.values())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 60)))
    ap.add_argument("--cycles", type=int, default=4, help="outage cycles (>= 3: warm-up + 2)")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--registers", type=int, default=50)
    ap.add_argument("--period", type=float, default=0.1)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after connect")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--report-only", action="store_true", help="recompute the figures of the run in --work"
    )
    args = ap.parse_args()
    if args.cycles < 3:
        ap.error("--cycles must be >= 3: the first is warm-up, growth compares two after it")
    # Absolute: the gateway resolves key paths against its config file's directory.
    work = (args.work or ROOT / "build" / "soak" / time.strftime("%Y%m%dT%H%M%S")).resolve()
    if args.report_only:
        saved = json.loads((work / "run.json").read_text())
        args = argparse.Namespace(**{**vars(args), **saved["args"], "work": work})
        run, outages = saved["run"], [Outage(**o) for o in saved["outages"]]
        samples = load_samples(work / "samples.csv")
    else:
        work.mkdir(parents=True, exist_ok=True)
        soak = Soak(args, work)
        try:
            run = soak.run()
        except BaseException:
            print(f"soak aborted; logs in {work}", file=sys.stderr)
            for p in [soak.gw, *([soak.cloud] if soak.cloud else [])]:
                print(f"--- {p.name} ---\n{p.log_tail()}", file=sys.stderr)
            raise
        finally:
            soak.close()
            with open(work / "samples.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(Sample.__dataclass_fields__)
                w.writerows(asdict(s).values() for s in soak.samples)
        samples, outages = soak.samples, soak.outages
        saved_args = {k: v for k, v in vars(args).items() if k != "work"}
        (work / "run.json").write_text(
            json.dumps({"args": saved_args, "run": run, "outages": [asdict(o) for o in outages]})
        )
    ok = report(work, samples, outages, run, args)
    print(f"\nsoak: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def load_samples(path: Path) -> list[Sample]:
    """samples.csv back into Samples (for --report-only)."""
    types = {f.name: f.type for f in Sample.__dataclass_fields__.values()}
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            vals: dict[str, Any] = {}
            for k, v in row.items():
                t = str(types[k])
                if v == "" and "None" in t:
                    vals[k] = None
                elif t.startswith("int"):
                    vals[k] = int(v)
                elif t.startswith("float"):
                    vals[k] = float(v)
                else:
                    vals[k] = v
            out.append(Sample(**vals))
    return out


if __name__ == "__main__":
    sys.exit(main())
