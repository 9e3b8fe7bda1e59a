"""What the operator page costs the gateway: its RSS with the status listener off, with the
listener (REST API) on and nobody looking, and with the page open in Debian's chromium.

The demo's processes (simulated factory, cloud receiver, gateway: ``gateway.demo.app``), each a
real process; the RSS is the gateway's, sampled every second after a warm-up, median reported.
``make bench-web``; about 2.5 minutes. Needs /usr/bin/chromium and playwright (requirements-dev).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import load_config  # noqa: E402
from gateway.core.processes import ManagedProcess  # noqa: E402
from gateway.demo.app import processes  # noqa: E402
from gateway.demo.ports import DemoPorts  # noqa: E402
from gateway.demo.scratch import prepare_workdir, scratch_config  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def rss_mb(proc: psutil.Process, seconds: float) -> float:
    """Median RSS (MB) sampled every second for ``seconds``."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(proc.memory_info().rss / 1e6)
        time.sleep(1.0)
    return statistics.median(out)


def wait_health(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the gateway's listener did not answer within {timeout}s")


def start(base: int, listener: bool) -> tuple[list[ManagedProcess], Path]:
    ports = DemoPorts(base)
    work = prepare_workdir(None)
    copy = scratch_config(ROOT / "examples" / "demo.yaml", work, ports)
    if not listener:
        doc = yaml.safe_load(copy.read_text())
        doc["gateway"]["metrics_listen"] = None
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    procs = processes(ports, load_config(copy), work, copy)
    for p in procs:
        p.start()
    return procs, work


def stop(procs: list[ManagedProcess], work: Path) -> None:
    for p in reversed(procs):
        p.stop()
    shutil.rmtree(work, ignore_errors=True)


async def with_page(port: int, seconds: float, gw: psutil.Process) -> tuple[float, int]:
    """RSS with the page open (and following the event stream); the SSE events seen."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.locator("#link", has_text="live").wait_for(timeout=20_000)
        rss = await asyncio.to_thread(rss_mb, gw, seconds)
        rows = await page.evaluate("() => document.querySelectorAll('#point-rows tr').length")
        await browser.close()
    return rss, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-port", type=int, default=5120)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="each measurement")
    args = ap.parse_args()
    results: dict[str, float] = {}

    procs, work = start(args.base_port, listener=False)
    try:
        gw = psutil.Process(procs[-1].pid)
        time.sleep(args.warmup)
        results["listener off"] = rss_mb(gw, args.seconds)
    finally:
        stop(procs, work)

    port = DemoPorts(args.base_port).metrics
    procs, work = start(args.base_port, listener=True)
    try:
        gw = psutil.Process(procs[-1].pid)
        wait_health(port)
        time.sleep(args.warmup)
        results["API on, nobody looking"] = rss_mb(gw, args.seconds)
        rss, rows = asyncio.run(with_page(port, args.seconds, gw))
        results["page open (event stream)"] = rss
        results["page closed again"] = rss_mb(gw, args.seconds)
    finally:
        stop(procs, work)

    base = results["listener off"]
    print(f"gateway RSS, median of 1 s samples over {args.seconds:g} s (page showed {rows} points)")
    for name, mb in results.items():
        print(f"  {name:<28} {mb:7.1f} MB  ({mb - base:+.1f} MB vs listener off)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
