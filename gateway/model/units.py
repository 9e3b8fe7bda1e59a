"""UCUM units: a compact table of the field's units and the UCUM grammar over it.

UCUM (the Unified Code for Units of Measure) is what the model announces: ``Cel``, ``mm/s``,
``m3/h``, ``kW``, ``bar``, ``L/min``. A unit is parsed with UCUM's grammar (prefixes, ``.`` and
``/``, integer exponents, parentheses, ``{annotations}``) over the atoms below, so ``kg.m/s2``
and ``{parts}/h`` are understood without being listed. The table is a subset of UCUM's (the SI,
the common non-SI units of machines and processes, the customary inch/foot/pound/psi/°F); an
atom outside it is an error naming the unit, never a silent pass. Written here rather than taken
from a package: the gateway runs on a Pi, and the maintained UCUM packages pull a parser
generator (lark) or a native core for what is a few hundred lines.

Common spellings that are not UCUM (``degC``, ``rpm``, ``kWh``, ``l/min``, ``parts``) are
aliases: the config accepts them and the model carries the UCUM code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

# dimension vector: length, mass, time, current, temperature, amount, luminous intensity
Dim = tuple[int, int, int, int, int, int, int]
_ONE: Dim = (0, 0, 0, 0, 0, 0, 0)


def _d(L: int = 0, M: int = 0, T: int = 0, I: int = 0, K: int = 0, N: int = 0, J: int = 0) -> Dim:  # noqa: E741
    return (L, M, T, I, K, N, J)


@dataclass(frozen=True)
class _Atom:
    factor: float  # to the coherent SI unit of its dimension (grams: to kg, hence 1e-3)
    dim: Dim
    metric: bool  # takes prefixes
    offset: float = 0.0  # special units (Cel, [degF]): SI = value * factor + offset
    name: str = ""


_N = _d(L=1, M=1, T=-2)
_PA = _d(L=-1, M=1, T=-2)
_J = _d(L=2, M=1, T=-2)
_W = _d(L=2, M=1, T=-3)
_V = _d(L=2, M=1, T=-3, I=-1)

ATOMS: dict[str, _Atom] = {
    # base units (the gram is UCUM's base of mass)
    "m": _Atom(1, _d(L=1), True, name="metre"),
    "g": _Atom(1e-3, _d(M=1), True, name="gram"),
    "s": _Atom(1, _d(T=1), True, name="second"),
    "A": _Atom(1, _d(I=1), True, name="ampere"),
    "K": _Atom(1, _d(K=1), True, name="kelvin"),
    "mol": _Atom(1, _d(N=1), True, name="mole"),
    "cd": _Atom(1, _d(J=1), True, name="candela"),
    "rad": _Atom(1, _ONE, True, name="radian"),
    "sr": _Atom(1, _ONE, True, name="steradian"),
    # SI derived
    "Hz": _Atom(1, _d(T=-1), True, name="hertz"),
    "N": _Atom(1, _N, True, name="newton"),
    "Pa": _Atom(1, _PA, True, name="pascal"),
    "J": _Atom(1, _J, True, name="joule"),
    "W": _Atom(1, _W, True, name="watt"),
    "C": _Atom(1, _d(T=1, I=1), True, name="coulomb"),
    "V": _Atom(1, _V, True, name="volt"),
    "F": _Atom(1, _d(L=-2, M=-1, T=4, I=2), True, name="farad"),
    "Ohm": _Atom(1, _d(L=2, M=1, T=-3, I=-2), True, name="ohm"),
    "S": _Atom(1, _d(L=-2, M=-1, T=3, I=2), True, name="siemens"),
    "Wb": _Atom(1, _d(L=2, M=1, T=-2, I=-1), True, name="weber"),
    "T": _Atom(1, _d(M=1, T=-2, I=-1), True, name="tesla"),
    "H": _Atom(1, _d(L=2, M=1, T=-2, I=-2), True, name="henry"),
    "lm": _Atom(1, _d(J=1), True, name="lumen"),
    "lx": _Atom(1, _d(L=-2, J=1), True, name="lux"),
    "Bq": _Atom(1, _d(T=-1), True, name="becquerel"),
    "Cel": _Atom(1, _d(K=1), True, offset=273.15, name="degree Celsius"),
    # other metric units of the field
    "L": _Atom(1e-3, _d(L=3), True, name="litre"),
    "l": _Atom(1e-3, _d(L=3), True, name="litre"),
    "bar": _Atom(1e5, _PA, True, name="bar"),
    "t": _Atom(1e3, _d(M=1), True, name="tonne"),
    "eV": _Atom(1.602176634e-19, _J, True, name="electronvolt"),
    "[g]": _Atom(9.80665, _d(L=1, T=-2), False, name="standard gravity"),
    # time and angle
    "min": _Atom(60, _d(T=1), False, name="minute"),
    "h": _Atom(3600, _d(T=1), False, name="hour"),
    "d": _Atom(86400, _d(T=1), False, name="day"),
    "wk": _Atom(604800, _d(T=1), False, name="week"),
    "a": _Atom(31557600, _d(T=1), False, name="year"),
    "deg": _Atom(math.pi / 180, _ONE, False, name="degree"),
    # ratios
    "%": _Atom(1e-2, _ONE, False, name="percent"),
    "[ppm]": _Atom(1e-6, _ONE, False, name="parts per million"),
    "[ppb]": _Atom(1e-9, _ONE, False, name="parts per billion"),
    # pressure
    "atm": _Atom(101325, _PA, False, name="standard atmosphere"),
    "mm[Hg]": _Atom(133.322387415, _PA, False, name="millimetre of mercury"),
    "m[H2O]": _Atom(9806.65, _PA, True, name="metre of water column"),
    "[psi]": _Atom(6894.757293168361, _PA, False, name="pound per square inch"),
    # customary
    "[in_i]": _Atom(0.0254, _d(L=1), False, name="inch"),
    "[ft_i]": _Atom(0.3048, _d(L=1), False, name="foot"),
    "[mi_i]": _Atom(1609.344, _d(L=1), False, name="mile"),
    "[lb_av]": _Atom(0.45359237, _d(M=1), False, name="pound"),
    "[gal_us]": _Atom(0.003785411784, _d(L=3), False, name="US gallon"),
    "[degF]": _Atom(5 / 9, _d(K=1), False, offset=273.15 - 32 * 5 / 9, name="degree Fahrenheit"),
    "[HP]": _Atom(745.6998715822702, _W, False, name="horsepower"),
}

PREFIXES: dict[str, float] = {
    "Y": 1e24, "Z": 1e21, "E": 1e18, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3,
    "h": 1e2, "da": 1e1, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12,
    "f": 1e-15, "a": 1e-18, "z": 1e-21, "y": 1e-24,
}  # fmt: skip

#: Spellings people write -> the UCUM code the model carries.
ALIASES: dict[str, str] = {
    "degC": "Cel", "°C": "Cel", "C°": "Cel", "celsius": "Cel",
    "degF": "[degF]", "°F": "[degF]",
    "rpm": "{rev}/min", "RPM": "{rev}/min", "1/min": "/min",
    "kWh": "kW.h", "Wh": "W.h", "MWh": "MW.h", "kVAh": "kV.A.h", "kVA": "kV.A", "VA": "V.A",
    "l/min": "L/min", "l/h": "L/h", "lpm": "L/min", "m³/h": "m3/h", "m^3/h": "m3/h",
    "mm/s²": "mm/s2", "m/s²": "m/s2", "m/s^2": "m/s2", "g0": "[g]",
    "psi": "[psi]", "in": "[in_i]", "in/s": "[in_i]/s", "ips": "[in_i]/s", "ft": "[ft_i]",
    "lb": "[lb_av]", "gal": "[gal_us]", "hp": "[HP]",
    "ppm": "[ppm]", "ppb": "[ppb]", "percent": "%", "pct": "%",
    "parts": "{parts}", "pcs": "{pieces}", "count": "{count}", "counts": "{count}",
    "ohm": "Ohm", "Ω": "Ohm", "µm": "um", "μm": "um", "µs": "us", "μs": "us",
    "sec": "s", "hr": "h", "hrs": "h",
}  # fmt: skip

MAX_UNIT_CHARS = 64


class UnitError(ValueError):
    """A unit that is not UCUM (nor a known alias); the message says what and how to write it."""


@dataclass(frozen=True)
class Unit:
    """A parsed UCUM unit: ``code`` as announced, its dimension and factor to coherent SI."""

    code: str
    dim: Dim
    factor: float
    offset: float = 0.0  # non-zero only for Cel and [degF] written alone

    def convertible(self, other: Unit) -> bool:
        return self.dim == other.dim


def normalize(text: str) -> str:
    """The UCUM code for ``text`` (an alias resolved); UnitError when it is not a unit."""
    return parse(text).code


def parse(text: str) -> Unit:
    """Parse a UCUM code or alias; UnitError (with a hint) when it is neither."""
    if not isinstance(text, str):
        raise UnitError(f"a unit is a string, got {type(text).__name__}")
    code = ALIASES.get(text.strip(), text.strip())
    return _parse(code)


@lru_cache(maxsize=1024)
def _parse(code: str) -> Unit:
    if not code:
        raise UnitError("empty unit (leave `unit` out, or write '1' for a plain number)")
    if len(code) > MAX_UNIT_CHARS:
        raise UnitError(f"a unit of {len(code)} characters; at most {MAX_UNIT_CHARS}")
    if any(ch.isspace() for ch in code):
        raise UnitError(f"{code!r}: UCUM units have no spaces (products are written 'N.m')")
    p = _Parser(code)
    dim, factor = p.term()
    if p.pos != len(code):
        raise UnitError(f"{code!r}: unexpected {code[p.pos :]!r} at character {p.pos + 1}")
    offset = 0.0
    if p.special is not None:
        if p.atoms != 1:
            raise UnitError(f"{code!r}: {p.special} is a special unit (an offset scale); "
                            "it cannot be combined, prefixed or raised to a power")  # fmt: skip
        offset = ATOMS[p.special].offset
    return Unit(code, dim, factor, offset)


class _Parser:
    """Recursive descent over UCUM's grammar: term := ['/'] component (('.'|'/') component)*."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.pos = 0
        self.special: str | None = None
        self.atoms = 0

    def _fail(self, what: str) -> UnitError:
        return UnitError(f"{self.code!r}: {what} at character {self.pos + 1}{_hint(self.code)}")

    def term(self) -> tuple[Dim, float]:
        dim, factor = _ONE, 1.0
        sign = 1
        if self.code.startswith("/", self.pos):
            self.pos += 1
            sign = -1
        d, f = self.component()
        dim, factor = _mul(dim, factor, d, f, sign)
        while self.pos < len(self.code) and self.code[self.pos] in "./":
            sign = 1 if self.code[self.pos] == "." else -1
            self.pos += 1
            d, f = self.component()
            dim, factor = _mul(dim, factor, d, f, sign)
        return dim, factor

    def component(self) -> tuple[Dim, float]:
        code, pos = self.code, self.pos
        if pos >= len(code):
            raise self._fail("a unit is missing")
        if code[pos] == "(":
            self.pos += 1
            inner = self.term()
            if not code.startswith(")", self.pos):
                raise self._fail("')' expected")
            self.pos += 1
            return inner
        if code[pos] == "{":
            end = code.find("}", pos)
            if end < 0:
                raise self._fail("unclosed '{'")
            self.pos = end + 1
            return _ONE, 1.0  # an annotation alone is the unity
        m = re.match(r"\d+", code[pos:])
        if m:  # a factor: 10, 1000 (UCUM: positive integers only)
            self.pos += m.end()
            return _ONE, float(m.group())
        m = re.match(r"(?:[^\s.\/(){}\[\]\d+-]|\[[^\[\]]*\])+", code[pos:])
        if not m:
            raise self._fail(f"unexpected {code[pos]!r}")
        symbol = m.group()
        self.pos += m.end()
        atom_name, prefix = _split(symbol)
        if atom_name is None:
            self.pos = pos
            raise self._fail(f"unknown unit {symbol!r}")
        atom = ATOMS[atom_name]
        self.atoms += 1
        exp = 1
        e = re.match(r"[+-]?\d+", code[self.pos :])
        if e:
            exp = int(e.group())
            self.pos += e.end()
        if atom.offset:
            if prefix or exp != 1:
                raise UnitError(f"{code!r}: {atom_name} is a special unit (an offset scale); it "
                                "cannot be prefixed or raised to a power")  # fmt: skip
            self.special = atom_name
        if code.startswith("{", self.pos):  # an annotation on a unit: m{wall}
            end = code.find("}", self.pos)
            if end < 0:
                raise self._fail("unclosed '{'")
            self.pos = end + 1
        factor = (PREFIXES[prefix] if prefix else 1.0) * atom.factor
        return tuple(x * exp for x in atom.dim), factor**exp  # type: ignore[return-value]


def _split(symbol: str) -> tuple[str | None, str]:
    """``(atom, prefix)`` of a symbol such as ``km``, ``mbar`` or ``[psi]``; the atom wins over a
    prefix reading (``min`` is the minute, not milli-inch; ``Pa`` the pascal, not peta-year)."""
    if symbol in ATOMS:
        return symbol, ""
    for plen in (2, 1):
        prefix, rest = symbol[:plen], symbol[plen:]
        if prefix in PREFIXES and rest in ATOMS and ATOMS[rest].metric:
            return rest, prefix
    return None, ""


def _mul(dim: Dim, factor: float, d: Dim, f: float, sign: int) -> tuple[Dim, float]:
    return tuple(a + sign * b for a, b in zip(dim, d, strict=True)), factor * f**sign  # type: ignore[return-value]


def _hint(code: str) -> str:
    close = [a for a in ALIASES if a.lower() == code.lower()]
    if close:
        return f" (did you mean {close[0]!r}, that is {ALIASES[close[0]]!r}?)"
    return " (UCUM codes: 'Cel', 'mm/s', 'm3/h', 'kW', 'bar', 'L/min', '{parts}'; see docs/information-model.md)"


def converter(src: str, dst: str) -> tuple[float, float]:
    """``(scale, offset)`` with ``dst_value = src_value * scale + offset``; UnitError when the two
    units measure different things (``mm`` is not ``mm/s``)."""
    a, b = parse(src), parse(dst)
    if a.dim != b.dim:
        raise UnitError(f"{a.code!r} cannot be converted to {b.code!r}: they measure different "
                        f"quantities ({describe_dim(a.dim)} vs {describe_dim(b.dim)})")  # fmt: skip
    # SI = v * fa + oa; dst = (SI - ob) / fb
    return a.factor / b.factor, (a.offset - b.offset) / b.factor


def convert(value: float, src: str, dst: str, *, delta: bool = False) -> float:
    """``value`` in ``src`` expressed in ``dst``; ``delta=True`` for differences (no offset)."""
    scale, offset = converter(src, dst)
    return value * scale + (0.0 if delta else offset)


_DIM_NAMES = ("m", "kg", "s", "A", "K", "mol", "cd")


def describe_dim(dim: Dim) -> str:
    """A dimension in SI base units, e.g. ``m.s-1``; ``1`` for a ratio."""
    parts = [n if e == 1 else f"{n}{e}" for n, e in zip(_DIM_NAMES, dim, strict=True) if e]
    return ".".join(parts) or "1"
