"""Money parsing (fen): one rule, used by every route that takes an amount."""

import pytest

from payapi.errors import ApiError
from payapi.validate import fen


@pytest.mark.parametrize("value, expected", [(1000, 1000), ("1000", 1000), ("0100", 100), ("0" * 5000 + "7", 7)])
def test_integers_and_digit_strings_are_fen(value, expected):
    assert fen(value, "amount", 1, 10_000) == expected


@pytest.mark.parametrize(
    "value",
    [10.5, 1000.0, "10.5", "-1", "+1", " 100", "100 ", "1e3", "", True, False, None, [100], {"a": 1}, "１００", "0x10", "1_000", "9" * 20],
)
def test_anything_else_is_refused_with_904(value):
    with pytest.raises(ApiError) as refused:
        fen(value, "amount", 0, 10**18)
    assert refused.value.code == 904


@pytest.mark.parametrize("value", [99, "5000001", -5])
def test_amounts_outside_the_bounds_are_904(value):
    with pytest.raises(ApiError) as refused:
        fen(value, "amount", 100, 5_000_000)
    assert refused.value.code == 904
