"""The checks the shipped artefacts are held to, put in front of failures without building one.

`make docker` (images/docker/run_check.py) and `make recipes-test` run images/product_probe.py
inside the container and inside a root the .deb was installed into; images/jetson/native_wheel.py
checks the Jetson route's compiled modules. Here each is run for real (subprocesses, real ELF
files) on this host's venv and build, with the faults they exist to catch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "images/product_probe.py"
PINS = ROOT / "packaging/runtime-requirements.txt"
LIBPY310 = Path("/root/.pyenv/versions/3.10.13/lib/libpython3.10.so.1.0")

sys.path.insert(0, str(ROOT / "images/jetson"))
import native_wheel  # noqa: E402

from gateway.impl import NATIVE_MODULES  # noqa: E402


def probe(pins: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, str(PROBE), str(pins)],
        capture_output=True, text=True, timeout=60, env={**clean, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


def test_every_runtime_pin_has_an_import_to_probe() -> None:
    sys.path.insert(0, str(ROOT / "images"))
    import product_probe

    pins = product_probe.read_pins(str(PINS))
    assert {"pyserial", "python-can", "cantools", "ai-edge-litert"} <= set(pins)
    assert set(pins) <= set(product_probe.IMPORTS), "add the new pin's import to product_probe.py"


@pytest.mark.skipif(
    os.environ.get("GATEWAY_PUREPYTHON") == "1", reason="needs the compiled modules"
)
def test_probe_passes_on_the_dev_venv_with_every_pin() -> None:
    res = probe(PINS)
    assert res.returncode == 0, res.stderr
    n = sum(1 for line in PINS.read_text().splitlines() if "==" in line.split("#", 1)[0])
    assert f"all {n} runtime pins installed" in res.stdout


def test_probe_names_a_missing_package_and_a_wrong_version(tmp_path: Path) -> None:
    pins = tmp_path / "req.txt"
    pins.write_text("# a comment\npyserial==0.1\nno-such-dist-xyz==1.0\n")
    res = probe(pins)
    assert res.returncode == 1
    assert "pyserial is 3.5, runtime-requirements.txt pins 0.1" in res.stderr
    assert "no-such-dist-xyz==1.0 is not installed" in res.stderr
    assert "Traceback" not in res.stderr


def test_probe_refuses_the_pure_twins(tmp_path: Path) -> None:
    pins = tmp_path / "req.txt"
    pins.write_text("msgpack==1.2.4\n")
    res = probe(pins, GATEWAY_PUREPYTHON="1")
    assert res.returncode == 1
    assert f"pure-Python twins loaded for {sorted(NATIVE_MODULES)}" in res.stderr


def _wheel_of(sos: list[Path], dest: Path, tag: str) -> Path:
    """A wheel holding ``sos`` under gateway/_native, renamed for ``tag`` (e.g. 310)."""
    whl = dest / f"edge_gateway-0.1.0-cp{tag}-cp{tag}-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for so in sos:
            name = so.name.replace(".cpython-311-", f".cpython-{tag}-")
            z.write(so, f"gateway/_native/{name}")
    return whl


@pytest.mark.skipif(
    os.environ.get("GATEWAY_PUREPYTHON") == "1", reason="needs the compiled modules"
)
def test_jetson_verify_catches_modules_built_for_another_python(tmp_path: Path) -> None:
    built = sorted((ROOT / "gateway/_native").glob("*.cpython-311-x86_64-linux-gnu.so"))
    assert len(built) == len(NATIVE_MODULES), "build the extensions first: setup.py build_ext"
    # 3.11's modules in a wheel that says cp310, keeping their 3.11 names: the name check fails.
    whl = tmp_path / "edge_gateway-0.1.0-cp310-cp310-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for so in built:
            z.write(so, f"gateway/_native/{so.name}")
    problems = native_wheel.verify(whl, None, None)
    assert any("not named *.cpython-310-x86_64-linux-gnu.so" in p for p in problems), problems
    # Renamed as 3.10 modules: only 3.10's own symbol table shows they were built for 3.11.
    if not LIBPY310.exists():
        pytest.skip(f"{LIBPY310} not here: the symbol check needs a Python 3.10 build")
    problems = native_wheel.verify(_wheel_of(built, tmp_path, "310"), LIBPY310, None)
    assert any("does not export" in p and "Py_Version" in p for p in problems), problems


def test_jetson_build_names_where_it_looked_for_headers() -> None:
    with pytest.raises(SystemExit, match=r"no Python 2\.5 headers .*--include DIR"):
        native_wheel.find_include("2.5", "/nonexistent")


def _dockerfile_requirements_step() -> str:
    """The command in Dockerfile.arm64's build stage that writes /wheels/requirements.txt."""
    text = (ROOT / "Dockerfile.arm64").read_text().replace("\\\n", " ")
    steps = [
        s.strip()
        for line in text.splitlines()
        if line.startswith("RUN")
        for s in line[3:].split("&&")
    ]
    writes = [s for s in steps if "/wheels/requirements.txt" in s and "-r " not in s]
    assert len(writes) == 1, writes
    return writes[0]


def test_the_container_build_installs_every_runtime_pin(tmp_path: Path) -> None:
    """The step runs for real (sh, in a scratch copy of the build context): what the image's pip
    installs from must be all of runtime-requirements.txt, not a chosen few."""
    (tmp_path / "wheels").mkdir()
    (tmp_path / "runtime-requirements.txt").write_text(PINS.read_text())
    step = _dockerfile_requirements_step().replace("/wheels/", f"{tmp_path}/wheels/")
    subprocess.run(["sh", "-ec", step], cwd=tmp_path, check=True, timeout=10)
    sys.path.insert(0, str(ROOT / "images"))
    import product_probe

    installed = product_probe.read_pins(str(tmp_path / "wheels/requirements.txt"))
    assert installed == product_probe.read_pins(str(PINS))
