"""The .deb's metadata and file layout (packaging/build_deb.py), without the network-bound venv step.

The venv, the cross-compiled extensions and a real install are covered by `make image-test` and
`make recipes-test`, which install this package into a Debian arm64 root and boot it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("build_deb", ROOT / "packaging/build_deb.py")
assert _spec is not None and _spec.loader is not None
build_deb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_deb)


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    stage = tmp_path / "root"
    stage.mkdir()
    build_deb.stage_files(stage, "arm64", "0.1.0")
    return stage


def test_control_fields_and_maintainer_scripts(staged: Path) -> None:
    control = dict(
        line.split(": ", 1)
        for line in (staged / "DEBIAN/control").read_text().splitlines()
        if ": " in line and not line.startswith(" ")
    )
    assert control["Package"] == "edge-gateway" and control["Architecture"] == "arm64"
    assert "python3 (>= 3.11), python3 (<< 3.12)" in control["Depends"]
    assert not [v for v in control.values() if v.startswith("@")], "unreplaced template field"
    assert (staged / "DEBIAN/conffiles").read_text() == "/etc/default/gateway\n"
    for script in ("postinst", "prerm", "postrm"):
        mode = (staged / "DEBIAN" / script).stat().st_mode & 0o777
        assert mode == 0o755, f"{script} mode {oct(mode)}"


def test_layout_carries_units_user_and_state_dirs(staged: Path) -> None:
    unit = (staged / "lib/systemd/system/gateway.service").read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "User=gateway",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/gateway/queue",
    ):
        assert setting in unit, setting
    assert (staged / "lib/systemd/system/gateway-firstboot.service").exists()
    assert "DynamicUser=yes" in (staged / "lib/systemd/system/gateway-cloud@.service").read_text()
    assert (staged / "usr/lib/sysusers.d/gateway.conf").read_text().count("gateway") >= 2
    assert (staged / "usr/lib/edge-gateway/firstboot.py").exists()
    assert (staged / "var/lib/gateway/queue").is_dir() and (staged / "etc/gateway").is_dir()
    assert (staged / "usr/bin/gateway").readlink() == Path("/opt/gateway/bin/gateway")
    overrides = (staged / "usr/share/lintian/overrides/edge-gateway").read_text()
    assert "python3.11/site-packages" in overrides


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_dpkg_deb_builds_and_lists_it(staged: Path, tmp_path: Path) -> None:
    deb = tmp_path / "edge-gateway.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(staged), str(deb)],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert "./lib/systemd/system/gateway.service" in listing
    assert "root/root" in listing and "./var/lib/gateway/queue/" in listing
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Version", "Depends"], check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert "Version: 0.1.0" in fields


def test_the_package_pins_every_runtime_requirement() -> None:
    """The .deb installs the whole runtime list (drivers' libraries and LiteRT included)."""
    listed = [
        line.split("==")[0]
        for line in (ROOT / "packaging/runtime-requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pinned = [p.split("==")[0] for p in build_deb.pins()]
    assert pinned == listed
    assert {"pyserial", "python-can", "cantools", "ai-edge-litert"} <= set(pinned)
    assert all("==" in p for p in build_deb.pins())


def test_transitive_dependencies_are_held_at_the_tested_versions() -> None:
    held = dict(c.split("==", 1) for c in build_deb.host_constraints())
    assert held["numpy"] == importlib.metadata.version("numpy")
    assert "python-can" in held and not any(n.startswith("edge-gateway") for n in held)


def test_a_dependency_with_c_code_and_no_wheel_is_refused_by_name(tmp_path: Path) -> None:
    """The sdist fallback builds pure-Python packages only; numpy would need cross-compiling."""
    with pytest.raises(SystemExit, match=r"numpy==.* not pure Python: pin a version"):
        build_deb.build_pure_wheel("numpy", build_deb.host_constraints(), tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_jetson_route_takes_its_own_pins_and_is_compiled(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """``--python 3.10``: numpy at a version with a 3.10 wheel (the host's own numpy is not
    forced on it), and the extensions compiled against 3.10's headers, not the pure twins."""
    monkeypatch.setattr(build_deb, "PYVER", "3.10")
    pins = dict(p.split("==", 1) for p in build_deb.pins())
    assert pins["numpy"] == "2.2.6"
    held = dict(c.split("==", 1) for c in build_deb.host_constraints())
    assert "numpy" not in held and "python-can" not in held
    built: list[tuple[str, ...]] = []

    class NativeWheel:
        @staticmethod
        def find_include(pyver: str, given: str | None) -> Path:
            return tmp_path

        @staticmethod
        def build(pyver: str, arch: str, out: Path, include: Path) -> Path:
            built.append((pyver, arch, str(include)))
            return out / "edge_gateway-0.1.0-cp310-cp310-linux_aarch64.whl"

    monkeypatch.setitem(__import__("sys").modules, "native_wheel", NativeWheel)
    wheel = build_deb.target_wheel("arm64", tmp_path)
    assert built == [("3.10", "arm64", str(tmp_path))] and "cp310" in wheel.name
    assert build_deb.pure_build()  # bytecode is compiled at install time by the target's python
