"""Runs inside a shipped artefact (the container, a root the package was installed into) with that
artefact's own interpreter: does it carry the whole product, not only the core?

    /opt/gateway/bin/python -I product_probe.py [runtime-requirements.txt]

Every pin of packaging/runtime-requirements.txt must be installed at its version and importable,
and gateway.impl must load the compiled modules, not the pure-Python twins (without the file: only
the latter, e.g. for a package built for another Python, whose pins differ). Exit 1 names each
problem. Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys

# The import each runtime pin provides; a pin added without one here is reported, by name.
IMPORTS = {
    "pyzmq": "zmq",
    "msgpack": "msgpack",
    "PyYAML": "yaml",
    "numpy": "numpy",
    "pyserial": "serial",
    "python-can": "can",
    "cantools": "cantools",
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "asyncua": "asyncua.client.client",
    "cryptography": "cryptography.hazmat.primitives.asymmetric.rsa",
    "cffi": "_cffi_backend",
}


def read_pins(path: str) -> dict[str, str]:
    pins = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[name.strip()] = version.strip()
    return pins


def problems(pins: dict[str, str]) -> list[str]:
    found = []
    for dist, want in pins.items():
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            found.append(f"{dist}=={want} is not installed")
            continue
        if have != want:
            found.append(f"{dist} is {have}, runtime-requirements.txt pins {want}")
        if dist not in IMPORTS:
            found.append(f"{dist}: product_probe.py IMPORTS does not say what it provides")
            continue
        try:
            importlib.import_module(IMPORTS[dist])
        except Exception as exc:  # an installed wheel that cannot load is the finding
            found.append(f"{dist}: import {IMPORTS[dist]} failed: {exc!r}")
    os.environ["GATEWAY_REQUIRE_NATIVE"] = "1"
    try:
        from gateway import impl
    except ImportError as exc:
        return [*found, f"compiled modules missing (GATEWAY_REQUIRE_NATIVE=1): {exc}"]
    pure = sorted(m for m, how in impl.IMPLEMENTATION.items() if how != "native")
    if pure:
        found.append(f"pure-Python twins loaded for {pure}")
    for name in impl.NATIVE_MODULES:
        path = getattr(impl, name).__file__ or ""
        if not path.endswith(".so"):
            found.append(f"gateway.impl.{name} is {path}, not a compiled module")
    return found


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    pins = read_pins(argv[1]) if len(argv) == 2 else {}
    bad = problems(pins)
    for p in bad:
        print(f"product: {p}", file=sys.stderr)
    if bad:
        return 1
    from gateway import impl

    if pins:
        print(f"product: all {len(pins)} runtime pins installed at their versions and importable")
    print(f"product: compiled modules loaded under Python {sys.version.split()[0]}: "
          f"{', '.join(sorted(impl.IMPLEMENTATION))}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
