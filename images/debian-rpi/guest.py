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

from gateway.api.auth import UserFile  # noqa: E402
from gateway.core.processes import ManagedProcess  # noqa: E402
from hil_tests.rig import Rig, standalone_demo_config, wait_for  # noqa: E402

GUEST_HOST = "10.0.2.2"  # the host as qemu's user network presents it to the guest
BASE_APPEND = (
    "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 systemd.show_status=1"
    " systemd.journald.forward_to_console=1"
)
# The test's guest script at every boot (GUEST_SCRIPT); systemd.run= would make its own target the
# default one, hence multi-user.target and a want for it.
GUEST_APPEND = (
    " systemd.run=/boot/firmware/image-test-guest.sh systemd.run_success_action=none"
    " systemd.unit=multi-user.target systemd.wants=kernel-command-line.service"
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


#: The guest's side of the test, run as root by ``systemd.run=`` from the test's kernel command
#: line at every boot (the image itself is not changed): a CAN bus on the kernel's vcan driver
#: as an operator brings up can0, a sender of J1939 EEC1 frames on it (python-can from the
#: package's venv), a check that the venv imports every runtime dependency on this CPU, and
#: optionally the watchdog test's freeze. systemd.run= is a oneshot the boot waits for, so the
#: long-running parts run as their own transient units.
GUEST_SCRIPT = """#!/bin/sh
say() {{ echo "image-test: $*" >/dev/console; }}
py=/opt/gateway/bin/python3
case "${{1:-}}" in
can-sender) exec "$py" -I /boot/firmware/image-test-can.py ;;
freeze)
    until python3 -c 'import socket; socket.create_connection(("{host}", {port}), 2)' 2>/dev/null; do
        sleep 1
    done
    systemctl kill --signal=SIGSTOP --kill-whom=main gateway.service
    say "gateway main process stopped"
    exit 0 ;;
esac
if modprobe vcan && ip link add dev vcan0 type vcan && ip link set vcan0 up; then
    say "vcan0 up"
else
    say "vcan0 FAILED"
fi
if out=$("$py" -I -c "{imports}" 2>&1); then say "venv imports: $out"; else say "venv imports FAILED: $out"; fi
systemd-run --no-block --unit=image-test-can /bin/sh "$0" can-sender
{freeze}
"""
#: What the package's venv must import on the target: every runtime dependency.
IMPORTS = (
    "import platform, serial, can, cantools, ai_edge_litert.interpreter, zmq, msgpack, yaml, numpy;"
    " print('ok on', platform.machine())"
)
#: J1939 EEC1 (examples/truck.dbc) every 100 ms: engine speed ramps up by 0.125 rpm a frame from
#: 1500 rpm and torque cycles through -125..125 %, so no two frames of a run (83 min) are alike
#: and a repeated (point, ts, value) in the cloud can only be a record stored twice.
CAN_SENDER = """import time

import can

bus = can.Bus(interface="socketcan", channel="vcan0")
print("image-test: CAN sender on vcan0", flush=True)
i = 0
while True:
    raw = 12000 + i % 50000
    data = bytes([0xFF, 0xFF, i % 251, raw & 0xFF, raw >> 8, 0xFF, 0xFF, 0xFF])
    bus.send(can.Message(arbitration_id=0x0CF004FE, is_extended_id=True, data=data))
    i += 1
    time.sleep(0.1)
"""
#: The guest kernel's name of the PCI 16550 UART qemu adds (``pci-serial``).
GUEST_RTU_PORT = "/dev/ttyS0"
MODELS = ROOT / "examples" / "models"


def site_config(ports: dict[str, int]) -> dict[str, Any]:
    """The demo's Modbus TCP devices on the host, an RTU motor on the emulated UART, a CAN bus
    on vcan0 decoded with examples/truck.dbc, and the bearing_ae model on the RTU motor's
    vibration with an alarm rule on its score."""
    cfg = standalone_demo_config()
    for i, dev in enumerate(cfg["devices"]):
        dev["host"], dev["port"] = GUEST_HOST, ports["sim"] + i
    cfg["uplink"]["ack_timeout"] = "3s"
    cfg["devices"] += [
        {
            "name": "motor2", "driver": "modbus_rtu", "unit_id": 1, "timeout": "300ms",
            "poll_groups": {"default": "100ms"},
            "rtu": {"port": GUEST_RTU_PORT, "baudrate": 115200},
            "points": [
                {"name": "current", "address": 0, "type": "uint16", "scale": 0.01, "unit": "A"},
                {"name": "vibration", "address": 1, "type": "float32", "word_order": "little",
                 "unit": "mm/s"},
                {"name": "temp", "address": 3, "type": "int16", "scale": 0.1, "unit": "degC"},
            ],
        },
        {
            "name": "truck", "driver": "can",
            "can": {"interface": "socketcan", "channel": "vcan0", "dbc": "truck.dbc"},
            "points": [
                {"name": "rpm", "signal": "EEC1.EngineSpeed", "unit": "rpm"},
                {"name": "torque", "signal": "EEC1.Torque", "unit": "%"},
            ],
        },
    ]  # fmt: skip
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    model = next(m for m in demo["models"] if m["name"] == "bearing_ae")
    model.update(file="bearing_ae.tflite", reference="bearing_ae.ref.json")
    model["inputs"] = ["motor2.vibration"]
    cfg["models"] = [model]
    # for: 2s, one window over the threshold (a window every 3.2 s): under emulation the RTU
    # polls' jitter blurs the 3.1 Hz swell, so not every window of the fault scores high.
    cfg["rules"].append(
        {
            "name": "motor2_bearing_anomaly", "when": "bearing_ae.score > 0.195", "for": "2s",
            "clear": "bearing_ae.score < 0.15", "severity": "major",
            "actions": [{"alarm": "motor2 bearing anomaly: score {bearing_ae.score:.3f}"}],
        }
    )  # fmt: skip
    return cfg


def stage_settings(
    img: Path, work: Path, ports: dict[str, int], gateway_id: str, freeze: bool
) -> None:
    """Put a site config (and the files it names), gateway-settings.yaml and the test's guest
    script on the image's boot partition, as a PC would."""
    cfg = site_config(ports)
    freeze_cmd = 'systemd-run --no-block --unit=image-test-freeze /bin/sh "$0" freeze'
    (work / "image-test-guest.sh").write_text(
        GUEST_SCRIPT.format(
            host=GUEST_HOST,
            port=ports["freeze"],
            imports=IMPORTS,
            freeze=freeze_cmd if freeze else "",
        )
    )
    (work / "image-test-can.py").write_text(CAN_SENDER)
    # On the network (through qemu's port forward), so the API needs a user; /status reads
    # from the host then carry its token (http_get).
    (work / "users.json").unlink(missing_ok=True)
    global STATUS_TOKEN
    STATUS_TOKEN = UserFile(work).add("image-test", "read", None, token=True)
    settings = {
        "hostname": "gw-qemu",
        "gateway_id": gateway_id,
        "config": "site.yaml",
        "metrics_listen": "0.0.0.0:9108",
        "users_file": "users.json",
        "cloud": {"endpoint": f"tcp://{GUEST_HOST}:{ports['cloud']}", "insecure": True},
    }
    (work / "site.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "gateway-settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    copy_to_boot(
        img,
        work / "site.yaml",
        work / "gateway-settings.yaml",
        work / "users.json",
        work / "image-test-guest.sh",
        work / "image-test-can.py",
        ROOT / "examples" / "truck.dbc",
        MODELS / "bearing_ae.tflite",
        MODELS / "bearing_ae.ref.json",
    )


STATUS_TOKEN: str | None = None  # an API token of the guest's gateway (read role)


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {STATUS_TOKEN}"} if STATUS_TOKEN else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
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

    def __init__(
        self,
        image: Path,
        work: Path,
        smp: int = 2,
        gateway_id: str = "qemu-gw",
        freeze: bool = False,
    ) -> None:
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
        stage_settings(self.disk, work, self.ports, gateway_id, freeze)
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
        self.rtu: ManagedProcess | None = None  # the RTU slave on this boot's pty
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
            # A 16550 UART on PCI for the RTU device; its other end is a host pty (rtu_slave.py).
            "-chardev", "pty,id=rtu", "-device", "pci-serial,chardev=rtu",
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
            "qemu", self.qemu_argv(BASE_APPEND + GUEST_APPEND + extra_append), self.console.path
        )
        self.qemu.start()
        self.boots += 1
        self.start_rtu_slave()

    def start_rtu_slave(self) -> None:
        """(Re)start the RTU slave on the pty qemu made for this boot's UART."""
        if self.rtu is not None:
            self.rtu.stop()
        pty = wait_for(
            lambda: re.search(r"char device redirected to (/dev/pts/\d+) \(label rtu\)",
                              self.console.text()),
            20, "qemu's pty for the guest's UART", interval=0.1,
        )  # fmt: skip
        self.rtu = ManagedProcess(
            "rtu-slave",
            [sys.executable, str(Path(__file__).with_name("rtu_slave.py")), pty.group(1)],
            self.logs / "rtu-slave.log",
            cwd=str(ROOT),
        )
        self.rtu.start()

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
        for p in (self.qemu, self.rtu, self.cloud, self.sim):
            if p is None:
                continue
            if p is self.qemu:
                p.kill()  # a power cut: the image must cope with it anyway
            else:
                p.stop()

    def log_tails(self, lines: int = 60) -> str:
        procs = [p for p in (self.sim, self.rtu, self.cloud, self.qemu) if p is not None]
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
