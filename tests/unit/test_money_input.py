"""Money parsing (fen): one rule, the shapes' Fen type, used by every route that takes an amount."""

import pytest

from payapi.contract.errors import ApiError
from payapi.contract.shapes import Body, Codec, Fen
from payapi.infra.config import Settings


def fen(value, minimum, maximum):
    """What a body field of type Fen.between(minimum, maximum) makes of value."""

    class Probe(Body):
        amount: Fen.between(minimum, maximum)

    return Codec(Settings()).convert({"amount": value}, Probe).amount


@pytest.mark.parametrize("value, expected", [(1000, 1000), ("1000", 1000), ("0100", 100), ("0" * 5000 + "7", 7)])
def test_integers_and_digit_strings_are_fen(value, expected):
    amount = fen(value, 1, 10_000)
    assert amount == expected and type(amount) is int


@pytest.mark.parametrize(
    "value",
    [
        10.5,
        1000.0,
        "10.5",
        "-1",
        "+1",
        " 100",
        "100 ",
        "1e3",
        "",
        True,
        False,
        None,
        [100],
        {"a": 1},
        "１００",
        "0x10",
        "1_000",
        "9" * 20,
    ],
)
def test_anything_else_is_refused_with_904(value):
    with pytest.raises(ApiError) as refused:
        fen(value, 0, 10**18)
    assert refused.value.code == 904


@pytest.mark.parametrize("value", [99, "5000001", -5])
def test_amounts_outside_the_bounds_are_904(value):
    with pytest.raises(ApiError) as refused:
        fen(value, 100, 5_000_000)
    assert refused.value.code == 904


def test_bounds_named_by_a_setting_are_the_running_services():
    class Probe(Body):
        amount: Fen.between("withdraw_min", "withdraw_max")

    strict = Codec(Settings(withdraw_min=500, withdraw_max=600))
    assert strict.convert({"amount": "550"}, Probe).amount == 550
    with pytest.raises(ApiError):
        strict.convert({"amount": 1000}, Probe)
    assert Codec(Settings()).convert({"amount": 1000}, Probe).amount == 1000
