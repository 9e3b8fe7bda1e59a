"""Showing text that someone else wrote (a peer, a config file) in a message: cut and escaped."""

from __future__ import annotations


def clip(text: str, limit: int = 80) -> str:
    """``text`` escaped (no control characters) and cut to about ``limit`` characters."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")[:limit]
    return shown if len(text) <= limit else f"{shown}...(+{len(text) - limit} chars)"


def clip_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` for messages, with long strings cut (see :func:`clip`)."""
    if isinstance(value, str) and len(value) > limit:
        return f"'{clip(value, limit)}'"
    return repr(value)
