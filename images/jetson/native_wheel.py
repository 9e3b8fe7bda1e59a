"""Compiled extensions for the Jetson route (L4T r36: Ubuntu 22.04, Python 3.10, aarch64), built on
a bookworm host whose python3 is 3.11, and checked as far as this host allows.

Why headers and not the limited API: the parsers take typed memoryviews, i.e. the buffer protocol,
which joined the limited API only in 3.11, so ``Py_LIMITED_API=0x030A0000`` does not compile
(``unknown type name 'Py_buffer'``). The extensions are instead cross-compiled as in
``packaging/build_deb.py`` (the same function builds the wheel), with the target Python's own
headers put first on the include path, and the wheel is tagged for that Python.

Where the headers come from: ``--include DIR`` / ``$PYTHON_TARGET_INCLUDE``, else
``/usr/include/pythonX.Y`` (an Ubuntu host), else a pyenv build (``~/.pyenv/versions/X.Y.*``,
which this project's machines carry). ``pyconfig.h`` is then the build host's (x86_64), exactly as
for the 3.11 cross build: LP64 Linux on both sides, so the sizes and layouts match.

    python images/jetson/native_wheel.py build --python 3.10 --arch arm64 --out build/images
    python images/jetson/native_wheel.py verify build/images/edge_gateway-*-cp310-*.whl \
        [--libpython .../libpython3.10.so] [--load .../python3.10]

``verify`` checks each ``.so`` without running it (ELF machine, file name ABI tag, no libpython
link, every Python C API symbol it imports exported by that Python's libpython); with ``--load``
(a wheel for this host's architecture only) it imports each module under that interpreter with
warnings as errors (Cython warns when the compile-time and run-time versions differ) and
round-trips a frame through the compiled and the pure twin.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging"))

import build_deb  # noqa: E402

ELF_MACHINE = {"arm64": "AArch64", "amd64": "Advanced Micro Devices X86-64"}
TRIPLET = {"arm64": "aarch64-linux-gnu", "amd64": "x86_64-linux-gnu"}

LOAD_PROBE = """
import importlib, sys, warnings
warnings.simplefilter("error")
from gateway import impl
for name in impl.NATIVE_MODULES:
    mod = importlib.import_module("gateway._native." + name)
    assert mod.__file__.endswith(".so"), mod.__file__
assert all(v == "native" for v in impl.IMPLEMENTATION.values()), impl.IMPLEMENTATION
from gateway._native import node_frame as nf
from gateway._pure import node_frame as pf
payload = bytes(range(256)) * 3
assert nf.cobs_encode(payload) == pf.cobs_encode(payload)
assert nf.cobs_decode(nf.cobs_encode(payload)) == payload
print("loaded under", sys.version.split()[0], sorted(impl.IMPLEMENTATION))
"""


def find_include(pyver: str, given: str | None) -> Path:
    """The directory holding ``Python.h`` of ``pyver``, or exit naming where it was looked for."""
    candidates = [
        given or os.environ.get("PYTHON_TARGET_INCLUDE") or "",
        f"/usr/include/python{pyver}",
    ]
    home = os.path.expanduser("~/.pyenv/versions")
    candidates += sorted(glob.glob(f"{home}/{pyver}.*/include/python{pyver}"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "Python.h").is_file():
            return Path(c)
    raise SystemExit(
        f"native_wheel: no Python {pyver} headers (Python.h) in {', '.join(filter(None, candidates))}:"
        f" pass --include DIR, or install Python {pyver} (pyenv install {pyver})"
    )


def build(pyver: str, arch: str, out: Path, include: Path) -> Path:
    """The project's wheel with extensions compiled against ``include``, tagged cpXY-cpXY."""
    tag = "cp" + pyver.replace(".", "")
    build_deb.PYVER = pyver
    build_deb.HOST_PYVER = pyver  # not a pure build: the headers are there
    # CFLAGS come before the include directories setuptools adds (the host Python's own), so
    # Python.h and everything it includes are the target's; pyconfig.h stays the host's.
    os.environ["CFLAGS"] = f"-I{include} {os.environ.get('CFLAGS', '')}".strip()
    os.environ["SETUPTOOLS_EXT_SUFFIX"] = f".cpython-{tag[2:]}-{TRIPLET[arch]}.so"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gwj") as tmp:
        wheel = build_deb.build_wheel(arch, Path(tmp))
        res = subprocess.run(
            [sys.executable, "-m", "wheel", "tags", "--python-tag", tag, "--abi-tag", tag, str(wheel)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        tagged = Path(tmp) / res.stdout.strip().splitlines()[-1]
        dest = out / tagged.name
        dest.write_bytes(tagged.read_bytes())
    build_deb.log(f"{dest} (extensions compiled against {include})")
    return dest


def exported(libpython: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(libpython)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def verify(wheel: Path, libpython: Path | None, load: str | None) -> list[str]:
    """What is wrong with ``wheel``'s extensions for the Python its tag names (empty: nothing)."""
    name = wheel.name.split("-")
    pytag, arch = name[2], "arm64" if name[4].startswith("linux_aarch64") else "amd64"
    suffix = f".cpython-{pytag[2:]}-{TRIPLET[arch]}.so"
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gwv") as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        sos = sorted(Path(tmp).glob("gateway/_native/*.so"))
        want = sorted(p.stem for p in (ROOT / "native").glob("*.pyx"))
        if sorted(s.name.split(".")[0] for s in sos) != want:
            problems.append(
                f"{wheel.name}: expected the compiled modules {want}, found "
                f"{[s.name for s in sos]}"
            )
        api = exported(libpython) if libpython else None
        for so in sos:
            if not so.name.endswith(suffix):
                problems.append(f"{so.name}: not named *{suffix}")
            hdr = subprocess.run(["readelf", "-h", "-d", str(so)], check=True, capture_output=True,
                                 text=True).stdout  # fmt: skip
            if ELF_MACHINE[arch] not in hdr:
                problems.append(f"{so.name}: not an {ELF_MACHINE[arch]} ELF")
            if "libpython" in hdr:
                problems.append(
                    f"{so.name}: linked against libpython (the interpreter provides it)"
                )
            if api is not None:
                undef = subprocess.run(["nm", "-D", "--undefined-only", str(so)], check=True,
                                       capture_output=True, text=True).stdout  # fmt: skip
                syms = {
                    line.split()[-1].split("@")[0] for line in undef.splitlines() if line.strip()
                }
                py = {s for s in syms if s.startswith(("Py", "_Py"))}
                missing = sorted(py - api)
                if missing:
                    problems.append(f"{so.name}: {libpython} does not export {missing[:8]}")
                else:
                    build_deb.log(f"{so.name}: its {len(py)} C API symbols are all in {libpython}")
        if load and not problems:
            res = subprocess.run([load, "-I", "-c", f"import sys; sys.path.insert(0, {tmp!r})\n{LOAD_PROBE}"],
                                 capture_output=True, text=True, cwd=tmp)  # fmt: skip
            if res.returncode != 0:
                problems.append(f"loading under {load} failed:\n{res.stderr[-2000:]}")
            else:
                build_deb.log(res.stdout.strip())
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the wheel")
    b.add_argument("--python", default="3.10", help="the target's Python (default: %(default)s)")
    b.add_argument("--arch", choices=sorted(TRIPLET), default="arm64")
    b.add_argument("--out", type=Path, default=ROOT / "build/images")
    b.add_argument("--include", help="the target Python's include directory (holds Python.h)")
    v = sub.add_parser("verify", help="check a built wheel's extensions")
    v.add_argument("wheel", type=Path)
    v.add_argument(
        "--libpython", type=Path, help="the target Python's libpythonX.Y.so (symbol check)"
    )
    v.add_argument("--load", help="an interpreter of the target's version and this host's arch")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(build(args.python, args.arch, args.out, find_include(args.python, args.include)))
        return 0
    problems = verify(args.wheel, args.libpython, args.load)
    for p in problems:
        print(f"native_wheel: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
