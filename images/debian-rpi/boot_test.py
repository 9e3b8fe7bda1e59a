"""Boot the Raspberry Pi image under ``qemu-system-aarch64 -M virt`` and check it end to end.

What a person flashing a card would see, without the card: the image is decompressed as shipped,
``gateway-settings.yaml`` and a site config (with the DBC and model files it names) are copied onto
its FAT boot partition with mtools (as a PC would), and the guest boots Debian's kernel and initrd
from the image. The host runs the demo's simulated Modbus TCP devices, a Modbus RTU motor on the
host end of the guest's emulated UART (a qemu pty, ``rtu_slave.py``) and a cloud receiver on
loopback; the guest reaches them through qemu's user network as 10.0.2.2. A script on the boot
partition, run through the kernel command line's ``systemd.run=`` (the image itself is not
changed), brings up ``vcan0`` and sends J1939 frames on it. Checked, each with a bounded wait:

1. the first-boot unit applied the settings (console);
2. systemd reports ``Started gateway.service`` (``Type=notify``: only after the runtime's READY=1);
3. ``/health`` answers 200 through a forwarded port;
4. telemetry from the gateway id in the settings reaches the host's cloud store;
5. a value written on a simulated device on the host arrives in the cloud (the guest polls it);
6. the product on the target: the package's venv imports every runtime dependency, ``/status``
   says the cross-compiled extensions are loaded, the RTU motor's points, the CAN bus's decoded
   signals and the ``bearing_ae`` model's scores reach the cloud, and the model's alarm too;
7. with ``--watchdog`` (the default): the gateway's main process is frozen (SIGSTOP) by the guest
   script when the host opens a port; systemd's watchdog must notice the missing pings, kill the
   gateway and start it again, and ``/health`` must come back;
8. with ``--power-cuts N``: the same VM's power is cut N times during ingest and it boots again
   from the same disk each time; nothing accepted is lost or stored twice and nothing needs repair
   (``power_cut.py`` says how "accepted" is known from outside the guest).

The qemu and host-process machinery is in ``guest.py``.

    python images/debian-rpi/boot_test.py --image build/images/gateway-rpi-arm64.img.zst
    python images/debian-rpi/boot_test.py --no-watchdog --power-cuts 10   # make power-cut
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guest import ROOT, Lab, http_status, stepper  # noqa: E402
from power_cut import run_power_cuts  # noqa: E402

from hil_tests.rig import telemetry_samples  # noqa: E402


def product_checks(lab: Lab, step: Callable[[str, Callable[[], Any], float], None]) -> None:
    """Every driver, the native code and a model on the target, checked from outside the guest."""
    console, rig = lab.console, lab.rig
    step("guest: vcan0 up (vcan module, iproute2)", lambda: console.has(r"image-test: vcan0 (up|FAILED)"), 60)  # fmt: skip
    assert console.has(r"image-test: vcan0 up"), "the guest could not bring up vcan0"
    step("guest: the venv imports every runtime dependency", lambda: console.has(r"image-test: venv imports"), 60)  # fmt: skip
    assert console.has(r"image-test: venv imports: ok on aarch64"), re.findall(r"image-test: venv imports.*", console.text())  # fmt: skip

    def native() -> dict[str, Any]:
        report: dict[str, Any] = lab.status()["native"]
        return report

    step("/status: the compiled modules are loaded", lambda: native()["loaded"], 30)
    files = native()["files"]
    assert all(f.endswith("-aarch64-linux-gnu.so") for f in files.values()), files

    def samples(point: str) -> list[float]:
        recs = rig.cloud_records("meta") + rig.cloud_records("telemetry")  # point models: meta
        return [v for _, v in telemetry_samples(recs, point) if v is not None]

    def rtu_in_cloud() -> bool:
        current, vib = samples("motor2.current"), samples("motor2.vibration")
        return len(current) >= 20 and len(set(vib)) >= 20

    step("Modbus RTU over the guest's UART: motor2 points in the cloud", rtu_in_cloud, 180)
    assert all(8.0 < a < 20.0 for a in samples("motor2.current")), "motor2.current off scale"

    def can_in_cloud() -> bool:
        return len(set(samples("truck.rpm"))) >= 5 and len(set(samples("truck.torque"))) >= 5

    step("CAN on vcan0 decoded with the DBC: truck signals in the cloud", can_in_cloud, 180)
    rpm = samples("truck.rpm")
    assert all(1500.0 <= r < 7750.0 for r in rpm), sorted(set(rpm))[:10]
    torque = set(samples("truck.torque"))
    assert len(torque) >= 5 and torque <= set(map(float, range(-125, 126))), sorted(torque)
    step("TFLite: bearing_ae scores on the RTU motor in the cloud", lambda: samples("bearing_ae.score"), 180)  # fmt: skip

    def model_alarm() -> list[dict[str, Any]]:
        return [
            e
            for e in rig.cloud_events()
            if e.get("kind") == "alarm"
            and e.get("rule") == "motor2_bearing_anomaly"
            and e.get("state") == "raised"
        ]

    step("the model's score raised its alarm, in the cloud", model_alarm, 180)
    assert max(samples("bearing_ae.score")) > 0.195


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
    ap.add_argument(
        "--power-cuts",
        type=int,
        default=0,
        metavar="N",
        help="after the checks, cut the VM's power N times during ingest (power_cut.py)",
    )
    ap.add_argument("--seed", type=int, default=None, help="seed for the power cuts' timing")
    ap.add_argument(
        "--self-check-lose-wal",
        action="store_true",
        help="delete the queue's WAL from the disk at each cut: the power-cut checks must then fail",
    )
    args = ap.parse_args(argv)

    # SIGTERM (CI's timeout, kill) must still stop qemu and the host processes in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lab = Lab(args.image, work, smp=args.smp, freeze=args.watchdog)
    console, rig, ports = lab.console, lab.rig, lab.ports
    steps, step = stepper(t0)

    ok = False
    try:
        lab.start_host()
        lab.power_on()
        step(
            "first-boot settings applied",
            lambda: console.has(r"gateway-firstboot: applied") or not lab.alive(),
            args.boot_timeout,
        )
        lab.wait_started(args.boot_timeout, step)
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
        product_checks(lab, step)
        if args.watchdog:
            freeze = socket.create_server(("127.0.0.1", ports["freeze"]))
            try:
                step("gateway frozen in the guest (SIGSTOP)", lambda: console.has(r"image-test: gateway main process stopped"), 60)  # fmt: skip
                step("systemd: watchdog timeout", lambda: console.has(r"gateway\.service: Watchdog timeout"), 120)  # fmt: skip
            finally:
                freeze.close()
            step(
                "systemd restarted gateway.service (READY=1 again)",
                lambda: console.count(r"systemd\[1\]: Started gateway\.service") >= 2,
                240,
            )
            step("/health = 200 after the restart", lambda: http_status(ports["health"], "/health") == 200, 120)  # fmt: skip
        if args.power_cuts:
            run_power_cuts(
                lab,
                args.power_cuts,
                step,
                boot_timeout=args.boot_timeout,
                seed=args.seed,
                lose_wal=args.self_check_lose_wal,
            )
        ok = True
    finally:
        lab.stop()
        if not ok:
            print(lab.log_tails())
        lab.disk.unlink(missing_ok=True)
    print(f"image-test: all checks passed in {time.monotonic() - t0:.0f}s")
    print(f"image-test: {len(steps)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
