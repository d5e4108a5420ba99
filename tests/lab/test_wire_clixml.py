"""CLIXML encoding and decoding of the lab's PSRP server."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ipsec_deploy.lab.clixml import (
    ClixmlDecoder,
    ClixmlEncoder,
    ellipsize,
    escape_string,
    to_bytes,
    unescape_string,
)
from ipsec_deploy.lab.pipeline import PSObjectValue


def round_trip(value: object) -> object:
    return ClixmlDecoder().decode_text(to_bytes(ClixmlEncoder().encode(value), byte_order_mark=True))


@given(st.text())
def test_string_escape_round_trips(text: str) -> None:
    assert unescape_string(escape_string(text)) == text


def test_string_escape_matches_powershell() -> None:
    # The same text as in a recorded Windows reply: a literal "_x", a newline and a surrogate pair.
    assert escape_string("actual_x000A_string\nnewline: \U00010437") == (
        "actual_x005F_x000A_string_x000A_newline: _xD801__xDC37_"
    )


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
)
def test_plain_values_round_trip(value: object) -> None:
    assert round_trip(value) == value


def test_ps_object_round_trips_with_enum_value() -> None:
    enum = PSObjectValue(["Demo.Mode", "System.Enum", "System.ValueType", "System.Object"], to_string="Transport", value=1)
    rule = PSObjectValue(["Demo.Rule", "System.Object"], {"Mode": enum, "Name": "r1"}, to_string="r1")

    assert round_trip(rule) == rule


def test_repeated_type_names_use_tnref() -> None:
    element = ClixmlEncoder().encode([PSObjectValue(["Demo.Rule", "System.Object"]), PSObjectValue(["Demo.Rule", "System.Object"])])
    text = to_bytes(element).decode()

    assert text.count("<T>Demo.Rule</T>") == 1
    assert '<TNRef RefId="1" />' in text


def test_ellipsize_keeps_short_targets() -> None:
    assert ellipsize("10.0.0.1") == "10.0.0.1"
    assert ellipsize("Set-Item -Path WSMan:\\localhost\\Service\\AllowUnencrypted -Value $false") == (
        "Set-Item -Path ...d -Value $false"
    )
