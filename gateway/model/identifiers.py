"""Identifiers: one resolvable code per thing, checked where the scheme has rules.

Known schemes are validated syntactically (a typo in a serial number is caught at ``gateway
check``, not in the cloud a month later); any other URI is carried as given:

``gs1``
    a GS1 Digital Link URI, ``https://id.gs1.org/01/09506000134352/21/SN-42`` (GTIN plus
    serial) or ``.../8004/<GIAI>`` (an individual asset). The primary key's check digit is
    verified (GTIN, GLN, SSCC), key qualifiers (``21``, ``10``, ``22``, ``235``) are checked for
    the characters GS1 allows.
``handle``
    a Handle-style identifier as the industrial identifier resolution system issues them:
    ``88.100.1/press-0042`` (numeric prefix ``/`` suffix), also written ``hdl:88.100.1/...``
    or ``https://hdl.handle.net/88.100.1/...``.
``oid``
    an OID URN, ``urn:oid:1.3.6.1.4.1.99999.1.42``.
``uri``
    anything else with a scheme (``urn:``, ``https:``, ``did:`` ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MAX_IDENTIFIER_CHARS = 512

# GS1 primary keys in a Digital Link path: AI -> (length or None for variable, check digit)
_GS1_KEYS: dict[str, tuple[int | None, bool]] = {
    "01": (14, True),  # GTIN (8/12/13 digits are padded to 14)
    "00": (18, True),  # SSCC
    "414": (13, True),  # GLN
    "8003": (None, False),  # GRAI: 14-digit GTIN-like + serial
    "8004": (None, False),  # GIAI
    "8006": (18, False),
    "8010": (None, False),
    "8017": (18, True),
    "8018": (18, True),
    "253": (None, False),
    "255": (None, False),
    "401": (None, False),
    "402": (17, True),
    "417": (13, True),
}
_GS1_QUALIFIERS = {"21", "10", "22", "235", "254", "7040", "8011", "8019", "8020"}
_GS1_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,30}")
_HANDLE = re.compile(r"([0-9]+(?:\.[0-9A-Za-z_-]+)*)/(\S{1,255})")
_OID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


class IdentifierError(ValueError):
    """An identifier whose scheme is known but whose syntax is wrong (or that is no URI)."""


@dataclass(frozen=True)
class Identifier:
    scheme: str  # "gs1" | "handle" | "oid" | "uri"
    value: str  # as written (what resolution looks up)


def parse(text: str) -> Identifier:
    """Classify and check ``text``; IdentifierError says what is wrong and what is expected."""
    if not isinstance(text, str) or not text.strip():
        raise IdentifierError("an identifier is a non-empty string")
    text = text.strip()
    if len(text) > MAX_IDENTIFIER_CHARS:
        raise IdentifierError(f"{len(text)} characters; at most {MAX_IDENTIFIER_CHARS}")
    if any(ch.isspace() for ch in text):
        raise IdentifierError(f"{text!r}: identifiers contain no spaces (percent-encode them)")
    lower = text.lower()
    if lower.startswith("urn:oid:"):
        arcs = text[8:]
        if not _OID.fullmatch(arcs):
            raise IdentifierError(f"{text!r}: an OID URN is urn:oid: and dot-separated numbers "
                                  "without leading zeros, e.g. urn:oid:1.3.6.1.4.1.99999.1")  # fmt: skip
        first, second = (int(x) for x in arcs.split(".")[:2])
        if first > 2 or (first < 2 and second > 39):
            raise IdentifierError(f"{text!r}: an OID starts with 0, 1 or 2, and below 0 and 1 "
                                  "the second arc is at most 39")  # fmt: skip
        return Identifier("oid", text)
    if lower.startswith("hdl:"):
        _handle(text, text[4:])
        return Identifier("handle", text)
    if _HANDLE.fullmatch(text) and not _SCHEME.match(text):
        return Identifier("handle", text)
    if not _SCHEME.match(text):
        raise IdentifierError(f"{text!r}: not a URI (no scheme); write a full URI, a GS1 Digital "
                              "Link (https://id.gs1.org/01/<GTIN>/21/<serial>), a Handle "
                              "(88.100.1/suffix) or an OID URN (urn:oid:1.3.6...)")  # fmt: skip
    if lower.startswith(("http://", "https://")):
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        if host == "hdl.handle.net":
            _handle(text, parts.path.lstrip("/"))
            return Identifier("handle", text)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if host == "id.gs1.org" or _gs1_start(segments) is not None:
            _gs1(text, segments)
            return Identifier("gs1", text)
    return Identifier("uri", text)


def _handle(text: str, body: str) -> None:
    if not _HANDLE.fullmatch(body):
        raise IdentifierError(f"{text!r}: a Handle is PREFIX/SUFFIX with a numeric, dotted "
                              "prefix, e.g. 88.100.1/press-0042")  # fmt: skip


def _gs1_start(segments: list[str]) -> int | None:
    """Index of the primary key AI in a Digital Link path (a path prefix may come before it)."""
    for i, seg in enumerate(segments[:-1]):
        if seg in ("01", "8004", "00", "414") and segments[i + 1][:1].isalnum():
            return i
    return None


def _gs1(text: str, segments: list[str]) -> None:
    start = next((i for i, s in enumerate(segments[:-1]) if s in _GS1_KEYS), None)
    if start is None:
        raise IdentifierError(f"{text!r}: a GS1 Digital Link names a primary key, e.g. "
                              "/01/<GTIN> or /8004/<GIAI>")  # fmt: skip
    ai, value = segments[start], segments[start + 1]
    length, check = _GS1_KEYS[ai]
    if length is not None:
        if ai == "01" and len(value) in (8, 12, 13):
            value = value.zfill(14)
        if not value.isdigit() or len(value) != length:
            raise IdentifierError(f"{text!r}: GS1 AI ({ai}) takes {length} digits; got {value!r}")
        if check and _check_digit(value[:-1]) != int(value[-1]):
            raise IdentifierError(f"{text!r}: GS1 AI ({ai}) {value}: wrong check digit "
                                  f"{value[-1]} (expected {_check_digit(value[:-1])})")  # fmt: skip
    elif not _GS1_CSET82.fullmatch(value):
        raise IdentifierError(f"{text!r}: GS1 AI ({ai}) takes 1 to 30 characters of GS1's "
                              f"character set; got {value!r}")  # fmt: skip
    rest = segments[start + 2 :]
    if len(rest) % 2:
        raise IdentifierError(f"{text!r}: key qualifiers come in pairs /AI/value; "
                              f"{rest[-1]!r} has no value")  # fmt: skip
    for q, v in zip(rest[::2], rest[1::2], strict=True):
        if q not in _GS1_QUALIFIERS:
            raise IdentifierError(f"{text!r}: ({q}) is not a GS1 key qualifier "
                                  f"(known: {', '.join(sorted(_GS1_QUALIFIERS))})")  # fmt: skip
        if not _GS1_CSET82.fullmatch(v):
            raise IdentifierError(f"{text!r}: GS1 AI ({q}) takes 1 to 30 characters of GS1's "
                                  f"character set; got {v!r}")  # fmt: skip


def _check_digit(digits: str) -> int:
    """GS1 mod-10 check digit of the digits before it (weights 3,1,3,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10
