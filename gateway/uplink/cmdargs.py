"""Bounded views of downlink command arguments, for log lines and RESULT details.

A CMD body may carry megabytes (``update_model`` sends the model file) and strings of any length
from the cloud. Nothing a peer sent reaches a log line or a RESULT as it is: strings are cut and
escaped, binary values become their size, nested values their type and length.
"""

from __future__ import annotations

from typing import Any

from gateway.bounded import clip

#: Longest RESULT detail (also what the command table keeps per command).
MAX_DETAIL = 512
#: Longest command id and kind the gateway accepts; longer ones are answered ``failed``.
MAX_ID = 128
MAX_KIND = 32
_MAX_SHOWN_ARGS = 8


def value(v: Any) -> str:
    """One argument value, bounded: numbers as they are, strings cut, everything else its size."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return repr(v) if abs(v) < 10**20 else f"<int of {v.bit_length()} bits>"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return f"'{clip(v, 60)}'"
    if isinstance(v, bytes | bytearray | memoryview):
        return f"<{len(v)} bytes>"
    if isinstance(v, dict | list | tuple):
        return f"<{type(v).__name__} of {len(v)}>"
    return f"<{type(v).__name__}>"


def summary(cmd_id: str, kind: str, args: dict[str, Any]) -> str:
    """``id kind {key: value, ...}`` with every part bounded (at most 8 arguments shown)."""
    items = list(args.items())
    parts = [f"{clip(str(k), 24)}: {value(v)}" for k, v in items[:_MAX_SHOWN_ARGS]]
    if len(items) > _MAX_SHOWN_ARGS:
        parts.append(f"+{len(items) - _MAX_SHOWN_ARGS} more")
    return f"{clip(cmd_id, 40)} {clip(kind, MAX_KIND)} {{{', '.join(parts)}}}"


def detail(text: str) -> str:
    """A RESULT detail: escaped and at most :data:`MAX_DETAIL` characters."""
    return clip(text, MAX_DETAIL - 32)


def refusal(cmd_id: str, kind: str) -> str | None:
    """Why a command is refused before it is recorded or run (id or kind too long), or None."""
    if len(cmd_id) > MAX_ID:
        return f"command id of {len(cmd_id)} characters; at most {MAX_ID}"
    if len(kind) > MAX_KIND:
        return f"command kind of {len(kind)} characters; at most {MAX_KIND}"
    return None
