"""Every compiled module imports and has every attribute its stub and its pure twin declare.

Cython compiles a module fine even when declarations it should have picked up were silently
ignored (a .pxd beside a .pyx built under another package name); the failure only shows on first
use of the attribute. This test touches each declared name on the module, on each class, and on a
live instance of each class that a factory below can build.
"""

from __future__ import annotations

import ast
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.impl import NATIVE_MODULES

pytestmark = pytest.mark.skipif(
    os.environ.get("GATEWAY_PUREPYTHON") == "1", reason="GATEWAY_PUREPYTHON=1: no compiled modules"
)
NATIVE_DIR = Path(__file__).resolve().parents[1] / "gateway" / "_native"

# How to build a live instance of a class, per module (classes not listed are checked on the type).
FACTORIES: dict[str, dict[str, Callable[[ModuleType], Any]]] = {
    "modbus": {
        "MbapFramer": lambda m: m.MbapFramer(),
        "RtuFramer": lambda m: m.RtuFramer("response"),
        "RegisterDecoder": lambda m: m.RegisterDecoder([0], [m.T_FLOAT32], [0], [1.0], [0.0]),
    },
    "ringbuf": {"RingBuffer": lambda m: m.RingBuffer(8)},
    "node_frame": {"NodeFrameParser": lambda m: m.NodeFrameParser()},
    "can": {"SignalDecoder": lambda m: m.SignalDecoder([(100, 0, 8, False, False, 1.0, 0.0, 0)])},
}


def load(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"gateway._native.{name}")
    except ImportError:
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        pytest.skip(f"gateway._native.{name} not built")


def stub_names(name: str) -> tuple[set[str], dict[str, set[str]]]:
    """Top-level names and per-class member names declared in gateway/_native/NAME.pyi."""
    path = NATIVE_DIR / f"{name}.pyi"
    assert path.exists(), f"compiled module {name} has no type stub {path}"
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    classes: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            members |= {
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
            classes[node.name] = members
            names.add(node.name)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if not node.target.id.startswith("_"):
                names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname for a in node.names if a.asname and a.asname == a.name}
    return names, classes


@pytest.mark.parametrize("name", NATIVE_MODULES)
def test_native_module_matches_stub(name: str) -> None:
    module = load(name)
    assert module.__name__ == f"gateway._native.{name}"
    names, classes = stub_names(name)
    missing = sorted(n for n in names if not hasattr(module, n))
    assert not missing, f"gateway._native.{name} lacks {missing}"
    for cls_name, members in classes.items():
        cls = getattr(module, cls_name)
        factory = FACTORIES.get(name, {}).get(cls_name)
        target = factory(module) if factory else cls
        for member in sorted(members - {"__init__"}):
            getattr(target, member)  # raises if a declared attribute is not really there


@pytest.mark.parametrize("name", NATIVE_MODULES)
def test_native_module_has_public_api_of_pure_twin(name: str) -> None:
    module = load(name)
    pure = importlib.import_module(f"gateway._pure.{name}")
    public = getattr(pure, "__all__", None) or [
        n
        for n, v in vars(pure).items()
        if not n.startswith("_")
        and not isinstance(v, ModuleType)
        and getattr(v, "__module__", pure.__name__) == pure.__name__
    ]
    missing = sorted(n for n in public if not hasattr(module, n))
    assert not missing, f"gateway._native.{name} lacks {missing} of its pure twin"
