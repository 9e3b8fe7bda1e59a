"""JSON that every reader accepts: what the CLI prints and ``/status`` serves.

``json.dumps`` writes NaN and Infinity, which are not JSON (``jq``, browsers and most clients
reject the whole document), and a repr for types it does not know. Here non-finite floats become
``null``, bytes ``{"base64": ...}``, keys strings, anything else its ``str``.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
from typing import Any


def jsonable(obj: Any) -> Any:
    """``obj`` with bytes as ``{"base64": ...}``, non-finite floats as None, keys as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(obj)).decode()}
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, numbers.Integral):  # numpy integers
        return int(obj)
    if isinstance(obj, numbers.Real):  # numpy float32 and the like
        value = float(obj)
        return value if math.isfinite(value) else None
    return str(obj)  # msgpack ExtType or the like: a string, never a repr that looks like JSON


def dumps(obj: Any) -> str:
    """One JSON line (no newline)."""
    return json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False)
