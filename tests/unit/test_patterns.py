"""The OpenAPI document's patterns (payapi/openapi.py) accept exactly what the service's own
decoder accepts: money strings, trimmed lengths, what Python counts as a space."""

import re

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payapi.contract import patterns
from payapi.contract.errors import ApiError
from payapi.contract.shapes import Body, Codec, Fen, Text
from payapi.infra.config import Settings


def decodes(field_type, value):
    """Whether a body field of field_type accepts value (the service's own decoder)."""

    class Probe(Body):
        v: field_type

    try:
        Codec(Settings()).convert({"v": value}, Probe)
    except ApiError:
        return False
    return True


def pattern_validator(pattern):
    return jsonschema_rs.Draft202012Validator({"type": "string", "pattern": pattern})


@pytest.mark.parametrize("low, high", [(1, 100), (100, 5_000_000), (1, 100_000_000)])
@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(value=st.from_regex(r"0{0,20}[0-9]{1,10}", fullmatch=True) | st.integers(0, 10**10).map(str) | st.text())
def test_money_string_pattern_is_what_the_service_accepts(low, high, value):
    expected = decodes(Fen.between(low, high), value)
    assert pattern_validator(patterns.digits_between(low, high)).is_valid(value) == expected


def test_trimming_pattern_knows_what_python_strips():
    everything = "".join(map(chr, range(0x110000)))
    assert set(re.findall(f"[{patterns.SPACE}]", everything)) == {c for c in everything if c.isspace()}


@pytest.mark.parametrize("min_len, max_len", [(1, 64), (0, 128), (1, 1), (1, 2)])
@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(
    value=st.text(
        st.sampled_from(" \t\n\x1c\x85\u3000\ufeff\u200bab名") | st.characters(exclude_categories=["Cs"]), max_size=140
    )
)
def test_trimmed_length_pattern_is_what_the_service_accepts(min_len, max_len, value):
    expected = decodes(Text.between(min_len, max_len), value)
    assert pattern_validator(patterns.trimmed_length(min_len, max_len)).is_valid(value) == expected
