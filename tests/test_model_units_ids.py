"""UCUM units and identifiers of the information model (gateway.model)."""

from __future__ import annotations

import math

import pytest

from gateway.model import identifiers, units


@pytest.mark.parametrize(
    ("text", "code"),
    [("Cel", "Cel"), ("degC", "Cel"), ("mm/s", "mm/s"), ("m3/h", "m3/h"), ("kW", "kW"),
     ("bar", "bar"), ("L/min", "L/min"), ("l/min", "L/min"), ("A", "A"), ("parts", "{parts}"),
     ("{parts}/h", "{parts}/h"), ("kg.m/s2", "kg.m/s2"), ("rpm", "{rev}/min"), ("%", "%"),
     ("mbar", "mbar"), ("kWh", "kW.h"), ("in/s", "[in_i]/s"), ("1", "1"), ("/min", "/min"),
     ("m[H2O]", "m[H2O]"), ("um", "um"), ("[psi]", "[psi]")],
)  # fmt: skip
def test_common_units_and_aliases_parse_to_their_ucum_code(text: str, code: str) -> None:
    assert units.normalize(text) == code


@pytest.mark.parametrize(
    ("text", "needle"),
    [("foo", "unknown unit 'foo'"), ("mm/", "a unit is missing"), ("kCel", "special unit"),
     ("Cel2", "special unit"), ("Cel/s", "special unit"), ("m s", "no spaces"),
     ("(m", "')' expected"), ("degc", "did you mean 'degC'"), ("", "empty unit"),
     ("m" * 80, "at most 64")],
)  # fmt: skip
def test_bad_units_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(units.UnitError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        units.normalize(text)


def test_conversions_the_rule_packs_need() -> None:
    assert units.convert(1.0, "m/s", "mm/s") == pytest.approx(1000.0)
    assert units.convert(1.0, "in/s", "mm/s") == pytest.approx(25.4)
    assert units.convert(4.5, "mm/s", "[in_i]/s") == pytest.approx(4.5 / 25.4)
    assert units.convert(100.0, "Cel", "[degF]") == pytest.approx(212.0)
    assert units.convert(10.0, "Cel", "[degF]", delta=True) == pytest.approx(18.0)
    assert units.convert(0.0, "Cel", "K") == pytest.approx(273.15)
    assert units.convert(60.0, "L/min", "m3/h") == pytest.approx(3.6)
    assert units.convert(1.0, "bar", "[psi]") == pytest.approx(14.5037738)
    assert units.convert(1.0, "kW.h", "J") == pytest.approx(3.6e6)
    with pytest.raises(units.UnitError, match="different quantities"):
        units.converter("mm", "mm/s")
    assert math.isclose(units.convert(3000, "{rev}/min", "Hz"), 50.0)


@pytest.mark.parametrize(
    ("text", "scheme"),
    [("https://id.gs1.org/01/09506000134352/21/SN-42", "gs1"),
     ("https://id.gs1.org/01/9506000134352", "gs1"),
     ("https://example.com/dl/8004/0950600013435EXAMPLE", "gs1"),
     ("https://id.gs1.org/414/9506000000008", "gs1"),
     ("88.100.1/press-0042", "handle"), ("hdl:20.500.12345/abc", "handle"),
     ("https://hdl.handle.net/88.100.1/press-0042", "handle"),
     ("urn:oid:1.3.6.1.4.1.99999.1.42", "oid"), ("urn:uuid:123e4567-e89b-12d3-a456-426614174000", "uri"),
     ("https://example.com/assets/press1", "uri"), ("did:web:example.com", "uri")],
)  # fmt: skip
def test_identifier_schemes(text: str, scheme: str) -> None:
    assert identifiers.parse(text) == identifiers.Identifier(scheme, text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("https://id.gs1.org/01/09506000134353", "wrong check digit"),
     ("https://id.gs1.org/01/09506000134", "takes 14 digits"),
     ("https://id.gs1.org/01/09506000134352/21", "no value"),
     ("https://id.gs1.org/01/09506000134352/99/x", "not a GS1 key qualifier"),
     ("https://id.gs1.org/press1", "names a primary key"),
     ("hdl:press/0042", "numeric, dotted"), ("urn:oid:1.3.06.1", "without leading zeros"),
     ("urn:oid:3.1", "starts with 0, 1 or 2"), ("urn:oid:1.40", "at most 39"),
     ("press 1", "no spaces"), ("press1", "not a URI")],
)  # fmt: skip
def test_identifiers_of_a_known_scheme_with_bad_syntax_are_refused(text: str, needle: str) -> None:
    with pytest.raises(identifiers.IdentifierError, match=needle):
        identifiers.parse(text)
