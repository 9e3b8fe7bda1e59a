"""The one import site of the TFLite interpreter (LiteRT first, legacy ``tflite-runtime`` second).

LiteRT (``ai-edge-litert``) is the renamed successor of ``tflite-runtime`` with the same
``Interpreter`` API; it is the only one with wheels for Raspberry Pi OS bookworm 64-bit and Python
>= 3.12 and it works with numpy 2. ``tflite-runtime`` 2.14 imports fine under numpy 2 but fails at
the first ``Interpreter()`` (``_ARRAY_API not found``), so it is refused up front with numpy >= 2
instead of failing later inside a worker thread.

Nothing here is imported at gateway start unless a config declares models: inference is the
optional extra ``pip install 'edge-gateway[ml]'``.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger("gateway.infer")

INSTALL_HINT = "pip install 'edge-gateway[ml]' (LiteRT: ai-edge-litert)"
LEGACY_HINT = (
    "pip install 'edge-gateway[ml-legacy]' (tflite-runtime with numpy<2; only for 32-bit ARM or "
    "JetPack 5, where LiteRT has no wheel)"
)
EDGETPU_LIBRARY = "libedgetpu.so.1"


class RuntimeUnavailable(ImportError):
    """No usable TFLite interpreter is installed; the message says what to install."""


@dataclass(frozen=True)
class Backend:
    """The interpreter module that was found: ``Interpreter`` class and ``load_delegate``."""

    name: str  # "ai-edge-litert" | "tflite-runtime"
    version: str
    interpreter_cls: Any
    load_delegate: Any


_cached: Backend | None = None


def _numpy_major() -> int:
    return int(np.__version__.split(".", 1)[0])


def load_backend() -> Backend:
    """Find the interpreter: ``ai_edge_litert.interpreter``, then ``tflite_runtime.interpreter``.

    Raises
    ------
    RuntimeUnavailable
        When neither is installed, or only ``tflite-runtime`` is and numpy is 2 or newer.
    """
    global _cached
    if _cached is not None:
        return _cached
    try:
        mod = importlib.import_module("ai_edge_litert.interpreter")
        version = _dist_version("ai-edge-litert")
        _cached = Backend("ai-edge-litert", version, mod.Interpreter, mod.load_delegate)
        return _cached
    except ImportError as exc:
        litert_error = exc
    try:
        mod = importlib.import_module("tflite_runtime.interpreter")
    except ImportError:
        raise RuntimeUnavailable(
            f"no TFLite interpreter installed ({litert_error}); install it with {INSTALL_HINT}"
        ) from None
    if _numpy_major() >= 2:
        raise RuntimeUnavailable(
            f"tflite-runtime is installed but numpy is {np.__version__}: tflite-runtime is built "
            "against numpy 1 and fails at the first Interpreter() under numpy 2. Install LiteRT "
            f"instead: {INSTALL_HINT}; or {LEGACY_HINT}"
        )
    _cached = Backend(
        "tflite-runtime", _dist_version("tflite-runtime"), mod.Interpreter, mod.load_delegate
    )
    return _cached


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def make_interpreter(content: bytes, threads: int = 1, delegate: str = "none") -> tuple[Any, str]:
    """An interpreter for a model held in memory, tensors allocated.

    ``delegate`` is ``"none"`` (CPU kernels with XNNPACK, the default op resolver) or
    ``"edgetpu"``; a delegate that cannot be loaded falls back to the CPU with a warning, since a
    gateway that keeps inferring slowly is better than one that stops. Returns the interpreter
    and the delegate actually in use.
    """
    backend = load_backend()
    delegates = []
    used = "cpu"
    if delegate == "edgetpu":
        try:
            ctypes.CDLL(EDGETPU_LIBRARY)  # fails cleanly; a failed load_delegate warns at exit
            delegates.append(backend.load_delegate(EDGETPU_LIBRARY))
            used = "edgetpu"
        except (OSError, ValueError, RuntimeError) as exc:
            _log.warning("edgetpu delegate unavailable (%s); running on the CPU", exc)
    kwargs: dict[str, Any] = {"model_content": content, "num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    interpreter = backend.interpreter_cls(**kwargs)
    interpreter.allocate_tensors()
    return interpreter, used
