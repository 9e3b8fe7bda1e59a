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
   kill the gateway and start it again, and ``/health`` must come back;
7. with ``--power-cuts N``: the same VM's power is cut N times during ingest and it boots again
   from the same disk each time; nothing accepted is lost or stored twice and nothing needs repair
   (``power_cut.py`` says how "accepted" is known from outside the guest).

The qemu and host-process machinery is in ``guest.py``.

    python images/debian-rpi/boot_test.py --image build/images/gateway-rpi-arm64.img.zst
    python images/debian-rpi/boot_test.py --no-watchdog --power-cuts 10   # make power-cut
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guest import GUEST_HOST, ROOT, Lab, copy_to_boot, http_status, stepper  # noqa: E402
from power_cut import run_power_cuts  # noqa: E402

from hil_tests.rig import telemetry_samples  # noqa: E402

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
    copy_to_boot(img, script)


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
    lab = Lab(args.image, work, smp=args.smp)
    append = ""
    if args.watchdog:
        stage_freeze_script(lab.disk, work, lab.ports["freeze"])
        # systemd.run= would make its own target the default one: boot multi-user and want it.
        append += " systemd.run=/boot/firmware/freeze-gateway.sh systemd.run_success_action=none"
        append += " systemd.unit=multi-user.target systemd.wants=kernel-command-line.service"
    console, rig, ports = lab.console, lab.rig, lab.ports
    steps, step = stepper(t0)

    ok = False
    try:
        lab.start_host()
        lab.power_on(append)
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
