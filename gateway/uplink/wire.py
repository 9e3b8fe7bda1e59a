"""Uplink wire messages: versioned msgpack bodies in two-frame ZeroMQ messages.

Every message is ``[type, body]``: ``type`` is a short ASCII tag (``b"DATA"``), ``body`` a msgpack
map that always carries ``v`` (the protocol version). The ROUTER side sees a routing-id frame in
front of these two. Decoding validates every field, so a malformed or foreign message becomes a
:class:`WireError` (never an arbitrary exception deep in the receiver). See docs/store-and-forward.md.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

PROTOCOL_VERSION = 2  # 2: DATA carries one accept-time CRC per record (crcs) instead of crc32

#: Largest epoch/sequence value: both sides store them as SQLite INTEGER (signed 64-bit).
MAX_INT = (1 << 63) - 1

#: Upper bound for one decoded body; a DATA message of 1000 records of 1 KiB is ~1 MiB.
MAX_BODY_BYTES = 64 << 20

#: Stream names: short, printable, no spaces. They end up in store keys, PUB topics, logs and
#: status lines, so a peer must not be able to make them large or control characters.
MAX_STREAM_NAME = 64
STREAM_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:/-]{{0,{MAX_STREAM_NAME - 1}}}")

#: Gateway ids (HELLO's ``gateway``): what the config's ``id`` and the allow-list's key names
#: (``keys.NAME_RE``) allow.
GATEWAY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")

#: Most streams one HELLO / WELCOME may list (the receiver's own limit is usually lower).
MAX_HELLO_STREAMS = 1024

#: DROP reasons: short lowercase words (``quota``, ``blocked``, ``overflow``, ``backpressure``, ...).
REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class WireError(ValueError):
    """A message that cannot be decoded or fails validation."""


class VersionError(WireError):
    """A well-formed message of a protocol version this side does not speak."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"unsupported protocol version {version!r} (this side speaks {PROTOCOL_VERSION})"
        )
        self.version = version


@dataclass(frozen=True, slots=True)
class Hello:
    """Gateway -> cloud, first message of every session: who I am and which epochs I hold."""

    gateway: str
    streams: dict[str, int]  # stream -> epoch
    #: stream -> last seq the gateway has queued (optional, for the cloud's backlog view; a
    #: receiver that does not know the field ignores it). None: not announced (older gateways).
    last: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Cloud -> gateway: the committed high-water mark per stream of the HELLO, and the credit."""

    hw: dict[str, tuple[int, int]]  # stream -> (epoch, hw)
    credit: int


@dataclass(frozen=True, slots=True)
class Data:
    """Gateway -> cloud: ``count`` consecutive records of one stream starting at ``first_seq``.

    ``crcs``: the CRC-32 of each record, computed when the gateway accepted it (stored with the
    record in the queue), so the cloud checks the bytes end to end: disk, memory and wire.
    """

    stream: str
    epoch: int
    first_seq: int
    records: tuple[bytes, ...]
    crcs: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.records) - 1

    @classmethod
    def build(
        cls,
        stream: str,
        epoch: int,
        first_seq: int,
        records: Sequence[bytes],
        crcs: Sequence[int] | None = None,
    ) -> Data:
        """Make a DATA message; ``crcs`` are the records' accept-time CRCs (computed now if None)."""
        recs = tuple(records)
        sums = tuple(crcs) if crcs is not None else tuple(map(zlib.crc32, recs))
        return cls(stream, epoch, first_seq, recs, sums)

    def crc_ok(self) -> bool:
        """Every record still has the bytes its CRC was computed over."""
        return len(self.crcs) == len(self.records) and all(
            zlib.crc32(r) == c for r, c in zip(self.records, self.crcs, strict=False)
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """Cloud -> gateway: cumulative; every record of (stream, epoch) with seq <= hw is committed."""

    stream: str
    epoch: int
    hw: int
    credit: int


@dataclass(frozen=True, slots=True)
class Nack:
    """Cloud -> gateway: the DATA did not fit (bad CRC or a gap); resend from ``expected``."""

    stream: str
    epoch: int
    expected: int


@dataclass(frozen=True, slots=True)
class Drop:
    """Gateway -> cloud: seqs ``first``..``last`` of (stream, epoch) were dropped on purpose.

    Encoded with the keys ``from``/``to``; ``reason`` is ``quota``, ``blocked``, ``overflow`` or ``backpressure``.
    """

    stream: str
    epoch: int
    first: int
    last: int
    reason: str


@dataclass(frozen=True, slots=True)
class Command:
    """Cloud -> gateway: a downlink command; ``id`` makes retries idempotent."""

    id: str
    kind: str  # one of gateway.core.commands (docs/store-and-forward.md "Downlink commands")
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Result:
    """Gateway -> cloud: the outcome of a command (``ok``/``failed``/``unsupported``/``interrupted``)."""

    id: str
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class Error:
    """Cloud -> gateway: the session cannot continue (``hello_required``, ``version``, ``bad``)."""

    code: str
    reason: str


Message = Hello | Welcome | Data | Ack | Nack | Error | Drop | Command | Result


def encode(msg: Message) -> list[bytes]:
    """Encode a message into its ``[type, body]`` frames."""
    body: dict[str, Any]
    if isinstance(msg, Data):
        tag = b"DATA"
        body = {
            "stream": msg.stream,
            "epoch": msg.epoch,
            "first_seq": msg.first_seq,
            "count": len(msg.records),
            "crcs": list(msg.crcs),
            "records": list(msg.records),
        }
    elif isinstance(msg, Ack):
        tag = b"ACK"
        body = {"stream": msg.stream, "epoch": msg.epoch, "hw": msg.hw, "credit": msg.credit}
    elif isinstance(msg, Hello):
        tag = b"HELLO"
        body = {"gateway": msg.gateway, "streams": dict(msg.streams)}
        if msg.last is not None:
            body["last"] = dict(msg.last)
    elif isinstance(msg, Welcome):
        tag = b"WELCOME"
        body = {"hw": {s: [e, h] for s, (e, h) in msg.hw.items()}, "credit": msg.credit}
    elif isinstance(msg, Nack):
        tag = b"NACK"
        body = {"stream": msg.stream, "epoch": msg.epoch, "expected": msg.expected}
    elif isinstance(msg, Error):
        tag = b"ERROR"
        body = {"code": msg.code, "reason": msg.reason}
    elif isinstance(msg, Drop):
        tag = b"DROP"
        body = {
            "stream": msg.stream,
            "epoch": msg.epoch,
            "from": msg.first,
            "to": msg.last,
            "reason": msg.reason,
        }
    elif isinstance(msg, Command):
        tag = b"CMD"
        body = {"id": msg.id, "kind": msg.kind, "args": dict(msg.args)}
    elif isinstance(msg, Result):
        tag = b"RESULT"
        body = {"id": msg.id, "outcome": msg.outcome, "detail": msg.detail}
    else:
        raise TypeError(f"not a wire message: {msg!r}")
    body["v"] = PROTOCOL_VERSION
    return [tag, msgpack.packb(body, use_bin_type=True)]


def decode(frames: Sequence[bytes]) -> Message:
    """Decode and validate ``[type, body]`` frames.

    Raises
    ------
    VersionError
        The body is well-formed but of another protocol version.
    WireError
        Anything else wrong: frame count, unknown type, bad msgpack, missing or mistyped field.
    """
    if len(frames) != 2:
        raise WireError(f"expected 2 frames [type, body], got {len(frames)}")
    tag, raw = bytes(frames[0]), bytes(frames[1])
    if len(raw) > MAX_BODY_BYTES:
        raise WireError(f"body of {len(raw)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"{_clip(tag)}: body is not valid msgpack: {_clip(str(exc))}") from None
    if not isinstance(body, dict):
        raise WireError(f"{_clip(tag)}: body is {type(body).__name__}, expected a map")
    version = body.get("v")
    if version != PROTOCOL_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            raise VersionError(version)
        raise WireError(
            f"{_clip(tag)}: missing or invalid protocol version field 'v': {_clip(version)}"
        )
    f = _Fields(tag, body)
    if tag == b"DATA":
        records = f.get("records", list)
        if not all(isinstance(r, bytes) for r in records):
            raise WireError("b'DATA': records must all be bin")
        count = f.uint("count")
        if count != len(records) or count == 0:
            raise WireError(f"b'DATA': count {count} but {len(records)} records")
        first = f.uint("first_seq", minimum=1)
        if first + count - 1 > MAX_INT:
            raise WireError("b'DATA': sequence overflows 63 bits")
        crcs = f.get("crcs", list)
        if len(crcs) != count or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 0xFFFFFFFF for c in crcs
        ):
            raise WireError(f"b'DATA': crcs must be {count} integers in [0, 2**32)")
        return Data(f.stream(), f.uint("epoch", 1), first, tuple(records), tuple(crcs))
    if tag == b"ACK":
        return Ack(f.stream(), f.uint("epoch", 1), f.uint("hw"), f.uint("credit"))
    if tag == b"HELLO":
        streams = f.get("streams", dict)
        _check_count(tag, streams)
        for s, e in streams.items():
            _check_stream(tag, s)
            _check_uint(tag, "streams[...]", e, 1)
        gateway = f.text("gateway")
        if not GATEWAY_ID_RE.fullmatch(gateway):
            raise WireError(
                f"b'HELLO': gateway id {_clip(gateway)} must match {GATEWAY_ID_RE.pattern}"
            )
        last = body.get("last")
        if last is None:
            return Hello(gateway, streams)
        if not isinstance(last, dict) or not set(last) <= set(streams):
            raise WireError("b'HELLO': last must map streams of the HELLO to seqs")
        for q in last.values():
            _check_uint(tag, "last[...]", q, 0)
        return Hello(gateway, streams, last)
    if tag == b"WELCOME":
        hw: dict[str, tuple[int, int]] = {}
        pairs = f.get("hw", dict)
        _check_count(tag, pairs)
        for s, pair in pairs.items():
            _check_stream(tag, s)
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError(f"{tag!r}: hw[{_clip(s)}] must be [epoch, hw]")
            hw[s] = (_check_uint(tag, "epoch", pair[0], 1), _check_uint(tag, "hw", pair[1], 0))
        return Welcome(hw, f.uint("credit"))
    if tag == b"NACK":
        return Nack(f.stream(), f.uint("epoch", 1), f.uint("expected", 1))
    if tag == b"ERROR":
        return Error(f.text("code"), f.get("reason", str))
    if tag == b"DROP":
        first, last = f.uint("from", 1), f.uint("to", 1)
        if last < first:
            raise WireError(f"b'DROP': to {last} < from {first}")
        reason = f.text("reason")
        if not REASON_RE.fullmatch(reason):
            raise WireError(f"b'DROP': reason {_clip(reason)} must match {REASON_RE.pattern}")
        return Drop(f.stream(), f.uint("epoch", 1), first, last, reason)
    if tag == b"CMD":
        args = f.get("args", dict)
        if not all(isinstance(k, str) for k in args):
            raise WireError("b'CMD': args keys must be strings")
        return Command(f.text("id"), f.text("kind"), args)
    if tag == b"RESULT":
        return Result(f.text("id"), f.text("outcome"), f.get("detail", str))
    raise WireError(f"unknown message type {_clip(tag)}")


def check_stream_name(name: object) -> str:
    """``name`` if it is a valid stream name, else :class:`WireError` saying what is allowed.

    Gateways should check names with this before queueing records under them: a name the cloud
    refuses would strand its records.
    """
    if not isinstance(name, str) or not STREAM_NAME_RE.fullmatch(name):
        raise WireError(
            f"stream name {_clip(name)} must match {STREAM_NAME_RE.pattern} "
            f"(at most {MAX_STREAM_NAME} characters)"
        )
    return name


def _clip(value: object, limit: int = 40) -> str:
    """repr() for error messages, cut short: peer-controlled values never go out unbounded."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def _check_stream(tag: bytes, name: object) -> None:
    try:
        check_stream_name(name)
    except WireError as exc:
        raise WireError(f"{tag!r}: {exc}") from None


def _check_count(tag: bytes, streams: dict[Any, Any]) -> None:
    if len(streams) > MAX_HELLO_STREAMS:
        raise WireError(
            f"{tag!r}: {len(streams)} streams, the protocol allows at most {MAX_HELLO_STREAMS}"
        )


def _check_uint(tag: bytes, name: str, value: object, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT:
        raise WireError(
            f"{tag!r}: field {name!r} must be an integer in [{minimum}, 2**63), got {_clip(value)}"
        )
    return value


class _Fields:
    """Typed access to a decoded body, turning every mismatch into a WireError naming the field."""

    def __init__(self, tag: bytes, body: dict[str, Any]) -> None:
        self.tag = tag
        self.body = body

    def get(self, name: str, kind: type) -> Any:
        if name not in self.body:
            raise WireError(f"{self.tag!r}: missing field {name!r}")
        value = self.body[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WireError(
                f"{self.tag!r}: field {name!r} must be {kind.__name__}, got {_clip(value)}"
            )
        return value

    def stream(self) -> str:
        name = self.get("stream", str)
        _check_stream(self.tag, name)
        return name  # type: ignore[no-any-return]

    def text(self, name: str) -> str:
        value: str = self.get(name, str)
        if not value:
            raise WireError(f"{self.tag!r}: field {name!r} must not be empty")
        return value

    def uint(self, name: str, minimum: int = 0) -> int:
        return _check_uint(self.tag, name, self.get(name, int), minimum)
