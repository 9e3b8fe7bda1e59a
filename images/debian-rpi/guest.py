"""The Raspberry Pi image under ``qemu-system-aarch64 -M virt`` with the host side its tests need.

Shared by ``boot_test.py`` (one boot, end to end) and ``power_cut.py`` (the same VM killed and
booted again from the same disk). The image is decompressed as shipped, files are copied onto its
FAT boot partition with mtools (as a PC would), and the guest boots Debian's kernel and initrd
taken from the image. The host runs the demo's simulated Modbus devices and a cloud receiver on
loopback; the guest reaches them through qemu's user network as 10.0.2.2 and the host reaches the
gateway's HTTP endpoint (``/health``, ``/status``) through a forwarded port.
"""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from gateway.core.processes import ManagedProcess  # noqa: E402
from hil_tests.rig import Rig, standalone_demo_config, wait_for  # noqa: E402

GUEST_HOST = "10.0.2.2"  # the host as qemu's user network presents it to the guest
BASE_APPEND = (
    "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 systemd.show_status=1"
    " systemd.journald.forward_to_console=1"
)
# A boot that needs a person: emergency/rescue mode, fsck asking for a manual run, a read-only
# remount after filesystem errors, a unit of ours that failed, or the queue's own alarms
# (quarantined, lost records) in the journal forwarded to the console.
BOOT_NEEDS_REPAIR = (
    r"emergency mode|Entering rescue mode|Give root password|RUN fsck MANUALLY"
    r"|EXT4-fs error|Remounting filesystem read-only|Failed to start .*gateway"
    r"|Dependency failed for .*(gateway|/var/lib/gateway)|alarm uplink_queue_\w+"
)


def free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive free loopback ports (random start: others run tests)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        socks = []
        try:
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


def partition(img: Path, index: int) -> tuple[int, int]:
    """(offset, size) in bytes of partition ``index`` (0 = boot, 1 = root, 2 = data)."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True, text=True).stdout)  # fmt: skip
    part = table["partitiontable"]["partitions"][index]
    return int(part["start"]) * 512, int(part["size"]) * 512


def boot_offset(img: Path) -> int:
    return partition(img, 0)[0]


def copy_to_boot(img: Path, *files: Path) -> None:
    """Copy files onto the image's FAT boot partition (``/boot/firmware`` in the guest)."""
    target = f"{img}@@{boot_offset(img)}"
    for f in files:
        subprocess.run(["mcopy", "-o", "-i", target, str(f), f"::/{f.name}"], check=True)


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
    copy_to_boot(img, work / "site.yaml", work / "gateway-settings.yaml")


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def http_status(port: int, path: str) -> int:
    return http_get(port, path)[0]


class Console:
    """The guest's serial console (one log across boots); ``mark()`` starts a new boot's view."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = 0

    def mark(self) -> None:
        try:
            self.start = self.path.stat().st_size
        except OSError:
            self.start = 0

    def text(self, whole: bool = False) -> str:
        try:
            with self.path.open("rb") as f:
                f.seek(0 if whole else self.start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def has(self, pattern: str) -> bool:
        return re.search(pattern, self.text()) is not None

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))


class Lab:
    """One disk image, the host's simulated devices and cloud, and the qemu guest booting it."""

    def __init__(self, image: Path, work: Path, smp: int = 2, gateway_id: str = "qemu-gw") -> None:
        self.work, self.smp, self.gateway_id = work, smp, gateway_id
        stem = image.name.removesuffix(".zst").removesuffix(".img")
        self.kernel, self.initrd = (image.parent / f"{stem}.{k}" for k in ("vmlinuz", "initrd"))
        self.disk = work / "disk.img"
        subprocess.run(["zstd", "-q", "-d", "-f", str(image), "-o", str(self.disk)], check=True)
        base = free_port_block(7)
        self.ports = {
            "sim": base,
            "cloud": base + 3,
            "pub": base + 4,
            "health": base + 5,
            "freeze": base + 6,
        }
        stage_settings(self.disk, work, self.ports, gateway_id)
        self.logs = work / "logs"
        self.console = Console(self.logs / "console.log")
        self.cloud_db = work / "cloud.db"
        py = [sys.executable, "-m", "gateway.cli"]
        ports = self.ports
        self.sim = ManagedProcess(
            "sim",
            [*py, "sim", "--factory", "demo", "--base-port", str(ports["sim"]), "--speed", "4"],
            self.logs / "sim.log",
            cwd=str(ROOT),
        )
        self.cloud = ManagedProcess(
            "cloud",
            [*py, "cloud", "--insecure", "--bind", f"tcp://127.0.0.1:{ports['cloud']}",
             "--pub", f"tcp://127.0.0.1:{ports['pub']}", "--db", str(self.cloud_db),
             "--status-interval", "0"],
            self.logs / "cloud.log",
            cwd=str(ROOT),
        )  # fmt: skip
        self.qemu: ManagedProcess | None = None
        self.boots = 0
        # The rig harness reads the cloud store the same way for real rigs and this one.
        self.rig = Rig.__new__(Rig)
        self.rig.cloud_db, self.rig.gateway_id = self.cloud_db, gateway_id

    def qemu_argv(self, append: str) -> list[str]:
        return [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", str(self.smp),
            "-m", "1024", "-nographic", "-monitor", "none",
            "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", append,
            # cache=writeback (qemu's default): the guest sees a volatile write cache and its
            # flushes become fdatasync on the host, as an SD card's cache and its flushes.
            "-drive", f"if=none,file={self.disk},format=raw,id=d0,cache=writeback",
            "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ports['health']}-:9108",
            "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip

    def start_host(self) -> None:
        self.sim.start()
        self.cloud.start()

    def power_on(self, extra_append: str = "") -> None:
        """Boot the guest from the disk as it is now; the console view starts at this boot."""
        assert self.qemu is None or self.qemu.poll() is not None, "the guest is still running"
        self.console.mark()
        with self.console.path.open("ab") as f:
            f.write(f"\n===== power on #{self.boots + 1} (host {time.time():.3f}) =====\n".encode())
        self.console.mark()
        self.qemu = ManagedProcess(
            "qemu", self.qemu_argv(BASE_APPEND + extra_append), self.console.path
        )
        self.qemu.start()
        self.boots += 1

    def power_cut(self) -> float:
        """SIGKILL qemu: the guest's RAM (page cache, unflushed writes, the running gateway) is
        gone at once, as in a power cut; returns the host time of the cut."""
        assert self.qemu is not None
        self.qemu.kill()
        return time.time()

    def alive(self) -> bool:
        return self.qemu is not None and self.qemu.poll() is None

    def status(self) -> dict[str, Any]:
        """The gateway's ``/status`` JSON through the forwarded port."""
        code, body = http_get(self.ports["health"], "/status", timeout=5)
        if code != 200:
            raise AssertionError(f"/status answered {code}")
        out: dict[str, Any] = json.loads(body)
        return out

    def wait_started(
        self, timeout: float, step: Callable[[str, Callable[[], Any], float], None], label: str = ""
    ) -> None:
        """This boot reached ``Started gateway.service`` (READY=1) and needed no repair."""
        step(
            f"{label}systemd: Started gateway.service (READY=1)",
            lambda: self.console.has(r"systemd\[1\]: Started gateway\.service") or not self.alive(),
            timeout,
        )
        assert self.alive(), "qemu exited"
        bad = re.search(BOOT_NEEDS_REPAIR, self.console.text())
        assert bad is None, f"boot #{self.boots} needs repair: console says {bad.group(0)!r}"

    def stop(self) -> None:
        for p in (self.qemu, self.cloud, self.sim):
            if p is None:
                continue
            if p is self.qemu:
                p.kill()  # a power cut: the image must cope with it anyway
            else:
                p.stop()

    def log_tails(self, lines: int = 60) -> str:
        procs = [p for p in (self.sim, self.cloud, self.qemu) if p is not None]
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in procs)


def stepper(
    t0: float,
) -> tuple[list[tuple[str, float]], Callable[[str, Callable[[], Any], float], None]]:
    """A list of passed steps and ``step(name, probe, timeout)``, which waits for ``probe`` (bounded,
    naming what it waited for) and prints the elapsed time."""
    steps: list[tuple[str, float]] = []

    def step(name: str, fn: Callable[[], Any], timeout: float) -> None:
        wait_for(fn, timeout, name, interval=0.5)
        steps.append((name, time.monotonic() - t0))
        print(f"image-test: {time.monotonic() - t0:6.1f}s  {name}", flush=True)

    return steps, step
