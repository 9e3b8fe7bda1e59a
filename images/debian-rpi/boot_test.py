"""Boot the Raspberry Pi image under ``qemu-system-aarch64 -M virt`` and check it end to end.

What a person flashing a card would see, without the card: the image is decompressed as shipped,
``gateway-settings.yaml`` and a site config are copied onto its FAT boot partition with mtools (as a
PC would), and the guest boots Debian's kernel and initrd from the image. The host runs the demo's
simulated Modbus devices and a cloud receiver on loopback; the guest reaches them through qemu's
user network as 10.0.2.2. Checked, each with a bounded wait:

1. the first-boot unit applied the settings (console);
2. systemd reports ``Started gateway.service`` (``Type=notify``: only after the runtime's READY=1);
3. ``/health`` answers 200 through a forwarded port;
4. telemetry from the gateway id in the settings reaches the host's cloud store;
5. a value written on a simulated device on the host arrives in the cloud (the guest polls it);
6. with ``--watchdog`` (the default): the gateway's main process is frozen (SIGSTOP) by a script on
   the boot partition, run through the kernel command line's ``systemd.run=`` (the image itself
   is not changed) when the host opens a port; systemd's watchdog must notice the missing pings,
   kill the gateway and start it again, and ``/health`` must come back.

    python images/debian-rpi/boot_test.py --image build/images/gateway-rpi-arm64.img.zst
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from gateway.core.processes import ManagedProcess  # noqa: E402
from hil_tests.rig import Rig, standalone_demo_config, telemetry_samples, wait_for  # noqa: E402

GUEST_HOST = "10.0.2.2"  # the host as qemu's user network presents it to the guest


def free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive free loopback ports (random start: others run tests)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def boot_offset(img: Path) -> int:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True, text=True).stdout)  # fmt: skip
    first = table["partitiontable"]["partitions"][0]
    return int(first["start"]) * 512


def stage_settings(img: Path, work: Path, ports: dict[str, int], gateway_id: str) -> None:
    """Put a site config and gateway-settings.yaml on the image's boot partition, as a PC would."""
    cfg = standalone_demo_config()
    for i, dev in enumerate(cfg["devices"]):
        dev["host"], dev["port"] = GUEST_HOST, ports["sim"] + i
    cfg["uplink"]["ack_timeout"] = "3s"
    settings = {
        "hostname": "gw-qemu",
        "gateway_id": gateway_id,
        "config": "site.yaml",
        "metrics_listen": "0.0.0.0:9108",
        "cloud": {"endpoint": f"tcp://{GUEST_HOST}:{ports['cloud']}", "insecure": True},
    }
    (work / "site.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "gateway-settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    target = f"{img}@@{boot_offset(img)}"
    for name in ("site.yaml", "gateway-settings.yaml"):
        subprocess.run(["mcopy", "-o", "-i", target, str(work / name), f"::/{name}"], check=True)


FREEZE_SCRIPT = """#!/bin/sh
# image-test only, run by systemd.run= from the test's kernel command line: when the host opens
# port {port}, freeze the gateway's main process as a hung event loop would look to systemd.
# systemd.run= is a oneshot the boot waits for, so the waiting runs as its own transient unit.
if [ "$1" != wait ]; then
    exec systemd-run --no-block --unit=image-test-freeze /bin/sh "$0" wait
fi
until python3 -c 'import socket; socket.create_connection(("{host}", {port}), 2)' 2>/dev/null; do
    sleep 1
done
systemctl kill --signal=SIGSTOP --kill-whom=main gateway.service
echo "image-test: gateway main process stopped" >/dev/console
"""


def stage_freeze_script(img: Path, work: Path, port: int) -> None:
    script = work / "freeze-gateway.sh"
    script.write_text(FREEZE_SCRIPT.format(host=GUEST_HOST, port=port))
    target = f"{img}@@{boot_offset(img)}"
    subprocess.run(["mcopy", "-o", "-i", target, str(script), "::/freeze-gateway.sh"], check=True)


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class Console:
    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except OSError:
            return ""

    def has(self, pattern: str) -> bool:
        return re.search(pattern, self.text()) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=ROOT / "build/images/gateway-rpi-arm64.img.zst")
    ap.add_argument("--work", type=Path, default=ROOT / "build/images/boot-test")
    ap.add_argument("--boot-timeout", type=float, default=420.0)
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument(
        "--no-watchdog",
        dest="watchdog",
        action="store_false",
        help="skip freezing the gateway to check systemd's watchdog restart (saves ~90 s)",
    )
    args = ap.parse_args(argv)

    # SIGTERM (CI's timeout, kill) must still stop qemu and the host processes in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stem = args.image.name.removesuffix(".zst").removesuffix(".img")
    kernel, initrd = (args.image.parent / f"{stem}.{k}" for k in ("vmlinuz", "initrd"))
    disk = work / "disk.img"
    subprocess.run(["zstd", "-q", "-d", "-f", str(args.image), "-o", str(disk)], check=True)
    gateway_id = "qemu-gw"
    base = free_port_block(7)
    ports = {
        "sim": base,
        "cloud": base + 3,
        "pub": base + 4,
        "health": base + 5,
        "freeze": base + 6,
    }
    stage_settings(disk, work, ports, gateway_id)
    append = "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 systemd.show_status=1"
    append += " systemd.journald.forward_to_console=1"
    if args.watchdog:
        stage_freeze_script(disk, work, ports["freeze"])
        # systemd.run= would make its own target the default one: boot multi-user and want it.
        append += " systemd.run=/boot/firmware/freeze-gateway.sh systemd.run_success_action=none"
        append += " systemd.unit=multi-user.target systemd.wants=kernel-command-line.service"

    py = [sys.executable, "-m", "gateway.cli"]
    logs = work / "logs"
    console = Console(logs / "console.log")
    procs = {
        "sim": ManagedProcess(
            "sim",
            [*py, "sim", "--factory", "demo", "--base-port", str(ports["sim"]), "--speed", "4"],
            logs / "sim.log",
            cwd=str(ROOT),
        ),
        "cloud": ManagedProcess(
            "cloud",
            [
                *py,
                "cloud",
                "--insecure",
                "--bind",
                f"tcp://127.0.0.1:{ports['cloud']}",
                "--pub",
                f"tcp://127.0.0.1:{ports['pub']}",
                "--db",
                str(work / "cloud.db"),
                "--status-interval",
                "0",
            ],
            logs / "cloud.log",
            cwd=str(ROOT),
        ),  # fmt: skip
        "qemu": ManagedProcess(
            "qemu",
            [
                "qemu-system-aarch64",
                "-M",
                "virt",
                "-cpu",
                "cortex-a72",
                "-smp",
                str(args.smp),
                "-m",
                "1024",
                "-nographic",
                "-monitor",
                "none",
                "-kernel",
                str(kernel),
                "-initrd",
                str(initrd),
                "-append",
                append,
                "-drive",
                f"if=none,file={disk},format=raw,id=d0",
                "-device",
                "virtio-blk-pci,drive=d0",
                "-netdev",
                f"user,id=n0,hostfwd=tcp:127.0.0.1:{ports['health']}-:9108",
                "-device",
                "virtio-net-pci,netdev=n0",
            ],
            logs / "console.log",
        ),  # fmt: skip
    }
    # The rig harness reads the cloud store the same way for real rigs and this one.
    rig = Rig.__new__(Rig)
    rig.cloud_db, rig.gateway_id = work / "cloud.db", gateway_id
    steps: list[tuple[str, float]] = []

    def step(name: str, fn: object, timeout: float) -> None:
        wait_for(fn, timeout, name, interval=0.5)  # type: ignore[arg-type]
        steps.append((name, time.monotonic() - t0))
        print(f"image-test: {time.monotonic() - t0:6.1f}s  {name}", flush=True)

    ok = False
    try:
        for p in procs.values():
            p.start()
        alive = lambda: procs["qemu"].poll() is None  # noqa: E731
        step(
            "first-boot settings applied",
            lambda: console.has(r"gateway-firstboot: applied") or not alive(),
            args.boot_timeout,
        )
        step(
            "systemd: Started gateway.service (READY=1)",
            lambda: console.has(r"systemd\[1\]: Started gateway\.service") or not alive(),
            args.boot_timeout,
        )
        assert alive(), "qemu exited"
        assert not console.has(r"Failed to start .*gateway"), "gateway.service failed to start"
        step("/health = 200 over the emulated network", lambda: http_status(ports["health"], "/health") == 200, 120)  # fmt: skip
        step("telemetry from the guest in the host's cloud store", lambda: rig.cloud_records("telemetry"), 180)  # fmt: skip

        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient("127.0.0.1", port=ports["sim"] + 1, timeout=2, retries=1)
        assert client.connect(), "cannot reach the simulated pump on the host"
        try:
            client.write_register(10, 437, device_id=1)  # pump1.setpoint = 43.7 m3/h
        finally:
            client.close()

        def setpoint_arrived() -> bool:
            recs = rig.cloud_records("meta") + rig.cloud_records("telemetry")
            return any(
                v is not None and abs(v - 43.7) < 1e-6
                for _, v in telemetry_samples(recs, "pump1.setpoint")
            )

        step("a value written on the host's simulated device reaches the cloud", setpoint_arrived, 120)  # fmt: skip
        if args.watchdog:
            freeze = socket.create_server(("127.0.0.1", ports["freeze"]))
            try:
                step("gateway frozen in the guest (SIGSTOP)", lambda: console.has(r"image-test: gateway main process stopped"), 60)  # fmt: skip
                step("systemd: watchdog timeout", lambda: console.has(r"gateway\.service: Watchdog timeout"), 120)  # fmt: skip
            finally:
                freeze.close()
            step(
                "systemd restarted gateway.service (READY=1 again)",
                lambda: (
                    len(re.findall(r"systemd\[1\]: Started gateway\.service", console.text())) >= 2
                ),
                240,
            )
            step("/health = 200 after the restart", lambda: http_status(ports["health"], "/health") == 200, 120)  # fmt: skip
        ok = True
    finally:
        for p in reversed(list(procs.values())):
            if p.name == "qemu":
                p.kill()  # a power cut: the image must cope with it anyway
            else:
                p.stop()
        if not ok:
            for p in procs.values():
                print(f"--- {p.name} ---\n{p.log_tail(60)}")
        disk.unlink(missing_ok=True)
    print(f"image-test: all checks passed in {time.monotonic() - t0:.0f}s")
    print(f"image-test: {len(steps)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
