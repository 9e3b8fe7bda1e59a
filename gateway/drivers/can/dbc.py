"""DBC file -> the flat signal layout the compiled SignalDecoder runs on.

cantools parses the file (it knows DBC's corners: Motorola start bits, extended-id flags, value
tables); only the per-frame extraction runs in our own code. A point names its signal as
``MESSAGE.SIGNAL``; the layout keeps the signals points ask for, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import DeviceConfig
from gateway.impl import can as can_codec

EXTENDED = 0x80000000


class DbcError(ValueError):
    """The DBC file or a point's signal reference cannot be used (the message says which)."""


def load_dbc(path: str) -> Any:
    import cantools

    try:
        return cantools.database.load_file(path, database_format="dbc", strict=False)
    except FileNotFoundError:
        raise DbcError(f"DBC file not found: {path}") from None
    except Exception as exc:  # cantools raises its own ParseError types
        raise DbcError(f"{path}: cannot parse DBC: {exc}") from None


def compile_layout(
    config: DeviceConfig, point_ids: Mapping[str, int], db: Any
) -> list[tuple[int, int, int, bool, bool, float, float, int]]:
    """One signal tuple per point (see gateway._pure.can.Signal)."""
    assert config.can is not None
    j1939 = config.can.j1939
    out = []
    for p in config.points:
        full = f"{config.name}.{p.name}"
        msg_name, _, sig_name = (p.signal or "").partition(".")
        try:
            msg = db.get_message_by_name(msg_name)
        except KeyError:
            raise DbcError(f"{full}: message {msg_name!r} is not in the DBC") from None
        sig = next((s for s in msg.signals if s.name == sig_name), None)
        if sig is None:
            names = ", ".join(s.name for s in msg.signals)
            raise DbcError(f"{full}: signal {sig_name!r} is not in {msg_name} (has: {names})")
        if sig.is_float:
            raise DbcError(f"{full}: IEEE float signals are not supported")
        if sig.multiplexer_ids:
            raise DbcError(f"{full}: multiplexed signals are not supported")
        if not 0 <= sig.start <= 63 or not 1 <= sig.length <= 64:
            raise DbcError(
                f"{full}: signal {sig_name!r} lies beyond the first 8 bytes of {msg_name} "
                "(CAN FD payloads are not supported)"
            )
        if msg.is_extended_frame:
            key = EXTENDED | msg.frame_id
            if j1939:
                key = can_codec.j1939_key(msg.frame_id)
        else:
            key = msg.frame_id
        out.append((key, sig.start, sig.length, sig.byte_order == "big_endian", sig.is_signed,
                    float(sig.scale), float(sig.offset), point_ids[full]))  # fmt: skip
    return out
