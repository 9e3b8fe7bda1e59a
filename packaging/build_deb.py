"""Build the one runtime package every route installs: ``edge-gateway_VERSION_ARCH.deb``.

The package holds a self-contained virtualenv under ``/opt/gateway`` (the project's wheel plus every
runtime dependency of packaging/runtime-requirements.txt and theirs, as binary wheels, bytecode precompiled), the hardened systemd unit, a sysusers
entry for the ``gateway`` user, ``/etc/gateway/`` and ``/var/lib/gateway/queue``. It depends only on
Debian's ``python3`` (3.11, bookworm), so it installs offline on a Pi, a Jetson rootfs or in a chroot.

For arm64 the Cython extensions are cross-compiled with ``aarch64-linux-gnu-gcc`` (seconds, against
~7x slower under emulation) and the dependency wheels come from the registry as
``manylinux_2_*_aarch64`` binaries (pure-Python sdists built into wheels on the host), downloaded
on the host once and cached under ``build/``; their own dependencies are held at the versions of
the venv that runs this script (the one CI tests).

    python packaging/build_deb.py --arch arm64 --out build/images
"""

from __future__ import annotations

import argparse
import compileall
import email.utils
import gzip
import importlib.metadata
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "packaging"
HOST_PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
PYVER = "3.11"  # the target's python3 (bookworm, Raspberry Pi OS bookworm); --python changes it
ARCHES = {
    # deb arch: (machine, C cross compiler or None, python multiarch triplet)
    "arm64": ("aarch64", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu"),
    "amd64": ("x86_64", None, "x86_64-linux-gnu"),
}
# bookworm has glibc 2.36; pip does not expand a manylinux tag to older ones, so list them.
GLIBC_MINORS = (36, 34, 31, 28, 27, 26, 24, 17)


def platforms(arch: str) -> list[str]:
    machine = ARCHES[arch][0]
    tags = [f"manylinux_2_{m}_{machine}" for m in GLIBC_MINORS]
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def log(msg: str) -> None:
    print(f"build_deb: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: object) -> None:
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("no version in pyproject.toml")


def pins() -> list[str]:
    """Every runtime dependency at the version CI tests: all of packaging/runtime-requirements.txt
    (the drivers' libraries and LiteRT too: a flashed gateway runs every driver it can configure)."""
    found = []
    for raw in (PKG / "runtime-requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, ver = line.partition("==")
        if not sep or not name.strip() or not ver.strip():
            raise SystemExit(f"runtime-requirements.txt: {raw!r}: pin as NAME==VERSION")
        found.append(f"{name.strip()}=={ver.strip()}")
    if not found:
        raise SystemExit("runtime-requirements.txt pins nothing")
    # Another target Python may need other versions of some (numpy 2.4 has no 3.10 wheel).
    override = PKG / f"runtime-requirements-py{PYVER.replace('.', '')}.txt"
    if PYVER != "3.11" and override.exists():
        other = {}
        for raw in override.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line:
                other[line.partition("==")[0].strip().lower()] = line
        found = [other.get(pin.partition("==")[0].lower(), pin) for pin in found]
    return found


def host_constraints() -> list[str]:
    """``NAME==VERSION`` of everything installed beside the build's Python (the venv CI tests
    with), so the dependencies' own dependencies go into the package at the tested versions."""
    out = []
    pinned = {pin.partition("==")[0].lower() for pin in pins()}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.startswith("edge-gateway") or not dist.version:
            continue
        if PYVER != HOST_PYVER and name.lower() in pinned:
            continue  # the target's own pins rule (runtime-requirements-pyXY.txt)
        out.append(f"{name}=={dist.version}")
    return sorted(set(out), key=str.lower)


def pure_build() -> bool:
    """A target Python other than the build host's gets the pure-Python twins: the Cython
    extensions need that version's headers, which a bookworm host does not have."""
    return PYVER != HOST_PYVER


def build_wheel(arch: str, out: Path) -> Path:
    """The project's wheel for ``arch``, built from a clean copy of the tracked sources."""
    _, cc, triplet = ARCHES[arch]
    env = dict(os.environ)
    env.pop("GATEWAY_PUREPYTHON", None)
    if pure_build():
        env["GATEWAY_PUREPYTHON"] = "1"  # setup.py then builds no extensions
    elif cc is not None:
        if shutil.which(cc) is None:
            raise SystemExit(f"{cc} not found: apt-get install gcc-{triplet}")
        env.update(
            CC=cc,
            LDSHARED=f"{cc} -shared",
            _PYTHON_HOST_PLATFORM=f"linux-{ARCHES[arch][0]}",
            SETUPTOOLS_EXT_SUFFIX=f".cpython-{PYVER.replace('.', '')}-{triplet}.so",
        )
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    with tempfile.TemporaryDirectory(prefix="gwsrc") as tmp:
        src = Path(tmp) / "src"
        for f in files:
            if (ROOT / f).is_file() and not f.startswith(("build/", "images/", "hil_tests/")):
                (src / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, src / f)
        run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(out), str(src)],
            env=env,
        )  # fmt: skip
    tag = "py3-none-any" if pure_build() else f"*-linux_{ARCHES[arch][0]}"
    wheels = list(out.glob(f"edge_gateway-{version()}-{tag}.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one {tag} wheel in {out}, found {wheels}")
    return wheels[0]


def target_wheel(arch: str, out: Path) -> Path:
    """The project's wheel for the target Python: compiled for the build host's version, and
    for another version (the Jetson route's 3.10) against that version's headers when this host
    has them (images/jetson/native_wheel.py); the pure-Python twins only when it has none."""
    global HOST_PYVER
    if PYVER == HOST_PYVER:
        return build_wheel(arch, out)
    sys.path.insert(0, str(ROOT / "images/jetson"))
    import native_wheel

    try:
        include = native_wheel.find_include(PYVER, None)
    except SystemExit as exc:
        log(f"{exc}\nbuild_deb: NOT COMPILED: the package gets the pure-Python twins")
        return build_wheel(arch, out)
    host = HOST_PYVER
    try:
        return Path(native_wheel.build(PYVER, arch, out, include))
    finally:  # native_wheel switches this module to the target's version while it builds
        HOST_PYVER = host


def download_deps(arch: str, cache: Path) -> Path:
    """Binary wheels of the runtime dependencies and theirs for ``arch`` (cached).

    A dependency published only as an sdist is built into a wheel on the host, which works for
    pure-Python ones (``py3-none-any``, any machine); one with C code and no wheel for ``arch``
    stops the build with its name (cross-building it is not attempted).
    """
    dest = cache / f"wheels-{arch}-py{PYVER}"
    stamp = dest / ".pins"
    constraints = host_constraints()
    want = "\n".join([*pins(), "--", *constraints])
    if stamp.exists() and stamp.read_text() == want:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    cfile = dest / "constraints.txt"
    cfile.write_text("\n".join(constraints) + "\n")
    local = dest / "built"
    local.mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest),
           "-c", str(cfile), "--find-links", str(local),
           "--python-version", PYVER, "--implementation", "cp"]  # fmt: skip
    for p in platforms(arch):
        cmd += ["--platform", p]
    built: set[str] = set()
    while True:
        log(" ".join([*cmd[:6], "...", *pins()]))
        res = subprocess.run([*cmd, *pins()], capture_output=True, text=True)
        if res.returncode == 0:
            break
        sys.stderr.write(res.stderr)
        missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", res.stderr)
        if missing is None or missing.group(1).lower() in built:
            raise SystemExit(f"pip download of the {arch} wheels failed (exit {res.returncode})")
        name = missing.group(1)
        build_pure_wheel(name, constraints, local)
        built.add(name.lower())
    for whl in local.glob("*.whl"):
        shutil.copy2(whl, dest / whl.name)
    stamp.write_text(want)
    return dest


def build_pure_wheel(name: str, constraints: list[str], out: Path) -> None:
    """Build ``name`` (at its tested version) from its sdist; refuse anything not pure Python."""
    pinned = next((c for c in constraints if c.split("==")[0].lower() == name.lower()), name)
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    if any(f.suffix in (".so", ".pyd") for f in files):  # no need to build it to know
        raise SystemExit(
            f"{pinned} has no {PYVER} wheel for this architecture and is not pure Python: "
            "pin a version with an aarch64 wheel in runtime-requirements.txt"
        )
    tmp = out / "tmp"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", ":all:",
         "-w", str(tmp), pinned])  # fmt: skip
    for whl in tmp.glob("*.whl"):
        if not whl.name.endswith("-none-any.whl"):
            raise SystemExit(
                f"{pinned} has no {PYVER} wheel for this architecture and is not pure Python "
                f"({whl.name}): pin a version with an aarch64 wheel in runtime-requirements.txt"
            )
        whl.replace(out / whl.name)
    shutil.rmtree(tmp)


def make_venv(stage: Path, wheel: Path, deps: Path, arch: str) -> None:
    """A relocatable-by-construction venv at /opt/gateway whose interpreter is Debian's python3."""
    venv = stage / "opt/gateway"
    site = venv / f"lib/python{PYVER}/site-packages"
    site.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
           "--only-binary=:all:", "--no-compile", "--target", str(site),
           "--python-version", PYVER, "--implementation", "cp"]  # fmt: skip
    for p in platforms(arch):
        cmd += ["--platform", p]
    wheels = [str(wheel)] + sorted(str(w) for w in deps.glob("*.whl"))
    run(cmd + wheels)
    cc = ARCHES[arch][1]
    strip = (cc or "gcc").replace("gcc", "strip")
    for so in (site / "gateway/_native").glob("*.so"):
        run([strip, "--strip-unneeded", str(so)])  # ours only: vendored wheels are left as built
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with the build host's shebang
    for tests in [*site.glob("numpy/**/tests"), site / "zmq/tests", *site.glob("can/**/tests")]:
        shutil.rmtree(tests, ignore_errors=True)  # the dependencies' own test suites: 10 MB
    for lib in site.glob("*.libs/*.so*"):
        lib.chmod(0o644)
    (venv / "bin").mkdir()
    (venv / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {PYVER}\n"
    )
    os.symlink("/usr/bin/python3", venv / "bin/python3")
    os.symlink("python3", venv / "bin/python")
    launcher = venv / "bin/gateway"
    launcher.write_text(
        "#!/opt/gateway/bin/python3 -I\n"
        '"""The gateway command (edge-gateway package)."""\n'
        "import sys\n\nfrom gateway.cli import main\n\nsys.exit(main())\n"
    )
    launcher.chmod(0o755)
    # Bytecode is architecture-independent; compiling here saves the Pi a minute at every cold
    # start (ProtectSystem=strict means the service could never write it). Another Python
    # version compiles at install time (postinst) instead.
    if pure_build():
        (venv / ".compile-on-install").touch()
        return
    compileall.compile_dir(
        str(site),
        quiet=1,
        workers=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def stage_files(stage: Path, arch: str, ver: str) -> None:
    def put(src: Path | str, dest: str, mode: int = 0o644) -> None:
        path = stage / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copyfile(src, path)
        else:
            path.write_text(src)
        path.chmod(mode)

    doc = "usr/share/doc/edge-gateway"
    put(PKG / "systemd/gateway.service", "lib/systemd/system/gateway.service")
    put(PKG / "systemd/gateway-firstboot.service", "lib/systemd/system/gateway-firstboot.service")
    put(PKG / "systemd/gateway-cloud@.service", "lib/systemd/system/gateway-cloud@.service")
    put(PKG / "firstboot.py", "usr/lib/edge-gateway/firstboot.py")
    put(PKG / "systemd/gateway.sysusers", "usr/lib/sysusers.d/gateway.conf")
    put(PKG / "deb/default", "etc/default/gateway")
    put(PKG / "gateway.yaml.example", f"{doc}/examples/gateway.yaml")
    put(PKG / "deb/copyright", f"{doc}/copyright")
    put(PKG / "README.md", f"{doc}/README.md")
    put(
        (PKG / "deb/lintian-overrides").read_text().replace("python3.11", f"python{PYVER}"),
        "usr/share/lintian/overrides/edge-gateway",
    )
    (stage / "etc/gateway").mkdir(parents=True)
    (stage / "var/lib/gateway/queue").mkdir(parents=True)
    (stage / "usr/bin").mkdir(parents=True, exist_ok=True)
    os.symlink("/opt/gateway/bin/gateway", stage / "usr/bin/gateway")
    date = email.utils.formatdate(
        int(os.environ.get("SOURCE_DATE_EPOCH", time.time())), localtime=False
    )
    changelog = (
        f"edge-gateway ({ver}) unstable; urgency=medium\n\n"
        "  * Upstream release; see CHANGELOG.md.\n\n"
        f" -- Edge Gateway Maintainers <maintainers@edge-gateway.invalid>  {date}\n"
    )
    path = stage / doc / "changelog.gz"
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(changelog.encode())
    path.chmod(0o644)

    control = stage / "DEBIAN"
    control.mkdir()
    size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file() and not f.is_symlink())
    (control / "control").write_text(
        (PKG / "deb/control.in")
        .read_text()
        .replace("@VERSION@", ver)
        .replace("@ARCH@", arch)
        .replace("@SIZE@", str(size // 1024))
        .replace("@PYMIN@", PYVER)
        .replace("@PYMAX@", f"3.{int(PYVER.split('.')[1]) + 1}")
    )
    (control / "conffiles").write_text("/etc/default/gateway\n")
    for script in ("postinst", "prerm", "postrm"):
        shutil.copyfile(PKG / f"deb/{script}", control / script)
        (control / script).chmod(0o755)


def build(arch: str, out: Path, cache: Path) -> Path:
    ver = version() + ("" if PYVER == "3.11" else f"+py{PYVER.replace('.', '')}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    wheel = target_wheel(arch, out)
    deps = download_deps(arch, cache)
    with tempfile.TemporaryDirectory(prefix="gwdeb") as tmp:
        stage = Path(tmp) / "root"
        make_venv(stage, wheel, deps, arch)
        stage_files(stage, arch, ver)
        deb = out / f"edge-gateway_{ver}_{arch}.deb"
        run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z6", "--build", str(stage), str(deb)])
    log(f"{deb} ({deb.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.0f}s")
    return deb


def main(argv: list[str] | None = None) -> int:
    global PYVER
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHES), default="arm64")
    ap.add_argument("--out", type=Path, default=ROOT / "build/images")
    ap.add_argument("--cache", type=Path, default=ROOT / "build/images/cache")
    ap.add_argument(
        "--python",
        default="3.11",
        help="the target's python3 version (3.10 for Jetson L4T r36 / Ubuntu 22.04: compiled against 3.10's headers where this host has them, else the pure-Python twins)",
    )
    args = ap.parse_args(argv)
    PYVER = args.python
    print(build(args.arch, args.out, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
