"""Start the built container's entrypoint and check it the way a container engine would.

Runs inside a buildah working container (``--isolation chroot``, so no daemon or container runtime
is needed; the arm64 binaries run under qemu-user). A cloud receiver on the host loopback receives
the gateway's point model; the image's own HEALTHCHECK command, read from the image config, must
pass; the gateway must run as the image's non-root user. Before that, the image must carry the whole
product: every pin of packaging/runtime-requirements.txt installed at its version and importable,
the compiled modules loaded (not the pure twins), and `gateway check` passing on a config with a
Modbus RTU device, a CAN bus with a DBC and a TFLite model that it loads and self-tests.

    python images/docker/run_check.py "buildah --storage-driver vfs" CONTAINER
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "images/debian-rpi"))

from guest import free_port_block  # noqa: E402

from gateway.core.processes import ManagedProcess  # noqa: E402
from hil_tests.rig import wait_for  # noqa: E402

# Under qemu-user, LiteRT's cpuinfo reads this x86 host's CPU topology from /sys, takes it for an
# arm64 one and crashes (SIGSEGV at address 8); on an arm64 machine it reads its own. The model
# check runs with that directory hidden in a private mount namespace (cpuinfo then reports it
# cannot parse the CPU list and LiteRT runs without it); the host's /sys is untouched.
HIDE_HOST_CPUS = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount -t tmpfs none /sys/devices/system/cpu && exec "$@"', "sh"]  # fmt: skip


def check_product(run: list[str], work: Path) -> int:
    """The image carries every runtime pin at its version, loads its compiled modules
    (images/product_probe.py) and `gateway check` passes on a config that uses every driver library
    and a model. Returns the number of checks passed."""
    full = work / "full"
    (full / "models").mkdir(parents=True)
    for src in ("images/product_probe.py", "packaging/runtime-requirements.txt",
                "images/docker/check-full.yaml", "examples/truck.dbc"):  # fmt: skip
        shutil.copy(ROOT / src, full)
    for name in ("bearing_ae.tflite", "bearing_ae.ref.json"):
        shutil.copy(ROOT / "examples/models" / name, full / "models")
    for path in [full, *full.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    # run ends with CONTAINER "--": the mount goes before the container.
    inside = [*run[:-2], "-v", f"{full}:/check:ro", *run[-2:]]
    py = "/opt/gateway/bin/python"
    res = subprocess.run([*inside, py, "-I", "/check/product_probe.py", "/check/runtime-requirements.txt"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    print(res.stdout, end="")
    assert res.returncode == 0, f"the image does not carry the whole product:\n{res.stderr[-3000:]}"
    res = subprocess.run([*HIDE_HOST_CPUS, *inside, "/opt/gateway/bin/gateway", "check",
                          "/check/check-full.yaml"], capture_output=True, text=True, timeout=600)  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"gateway check (RTU + CAN + model) failed:\n{out[-3000:]}"
    assert "model bearing_ae: self-test passed" in out, f"the model was not self-tested:\n{out}"
    print("docker: gateway check passed on Modbus RTU + CAN (DBC) + a TFLite model self-test")
    return 3  # pins, compiled modules, check


def main(buildah: str, ctr: str) -> int:
    b = buildah.split()
    info = json.loads(subprocess.run([*b, "inspect", ctr], check=True, capture_output=True, text=True).stdout)  # fmt: skip
    config = info["Docker"]["config"]
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD", health
    entry = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
    user = config.get("User", "")
    assert user and not user.startswith(("0", "root")), f"image runs as {user!r}"

    base = free_port_block(3)
    cloud, pub, status = base, base + 1, base + 2
    work = Path(tempfile.mkdtemp(prefix="gwctr"))
    (work / "gateway.yaml").write_text(
        "gateway: {id: docker-gw, data_dir: /var/lib/gateway/queue,"
        f" metrics_listen: '127.0.0.1:{status}'}}\n"
        f"uplink: {{endpoints: ['tcp://127.0.0.1:{cloud}'],"
        " queue: /var/lib/gateway/queue/queue.db, insecure: true}\n"
    )
    os.chmod(work / "gateway.yaml", 0o644)
    url = f"http://127.0.0.1:{status}/health"
    py = [sys.executable, "-m", "gateway.cli"]
    db = work / "cloud.db"
    receiver = ManagedProcess(
        "cloud",
        [*py, "cloud", "--insecure", "--bind", f"tcp://127.0.0.1:{cloud}",
         "--pub", f"tcp://127.0.0.1:{pub}", "--db", str(db), "--status-interval", "0"],
        work / "cloud.log",
        cwd=str(ROOT),
    )  # fmt: skip
    run = [*b, "run", "--isolation", "chroot", "--user", user, "--env", f"GATEWAY_HEALTH_URL={url}",
           "--env", "GATEWAY_REQUIRE_NATIVE=1",
           "-v", f"{work / 'gateway.yaml'}:/etc/gateway/gateway.yaml:ro", ctr, "--"]  # fmt: skip
    gateway = ManagedProcess("gateway", [*run, *entry], work / "gateway.log")
    ok = False
    passed = check_product(run, work)
    t0 = time.monotonic()
    try:
        receiver.start()
        gateway.start()

        def healthy() -> bool:
            assert gateway.poll() is None, "the container's gateway exited"
            res = subprocess.run([*run, *health[1:]], capture_output=True, timeout=60)
            return res.returncode == 0

        wait_for(healthy, 240, "the image's HEALTHCHECK command to pass", interval=2)
        print(f"docker: HEALTHCHECK passed {time.monotonic() - t0:.0f}s after start", flush=True)

        def meta_in_cloud() -> bool:
            if not db.exists():
                return False
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return bool(con.execute("SELECT count(*) FROM records WHERE gateway='docker-gw'").fetchone()[0])  # fmt: skip
            except sqlite3.OperationalError:
                return False
            finally:
                con.close()

        wait_for(meta_in_cloud, 60, "the container gateway's point model in the cloud store")
        uid = subprocess.run([*run, "id", "-u"], capture_output=True, text=True, check=True).stdout
        assert uid.strip() == user.split(":")[0], f"ran as uid {uid.strip()}, image says {user}"
        print(f"docker: gateway runs as uid {uid.strip()} and delivered to the host's cloud")
        print(f"docker: {passed + 3} passed, 0 failed")  # + HEALTHCHECK, delivery, non-root user
        ok = True
    finally:
        gateway.stop(20)
        if gateway.proc is not None:
            try:
                os.killpg(gateway.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        receiver.stop()
        if not ok:
            print(
                f"--- gateway ---\n{gateway.log_tail(40)}\n--- cloud ---\n{receiver.log_tail(20)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
