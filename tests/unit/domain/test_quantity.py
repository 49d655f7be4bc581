from fractions import Fraction

import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.quantity import ceil_milli_value, ceil_value, format_integer, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Fraction(0)),
        ("1", Fraction(1)),
        ("+2", Fraction(2)),
        ("-3", Fraction(-3)),
        ("1.5", Fraction(3, 2)),
        ("1.", Fraction(1)),
        (".5", Fraction(1, 2)),
        ("100n", Fraction(100, 10**9)),
        ("250u", Fraction(250, 10**6)),
        ("500m", Fraction(1, 2)),
        ("2k", Fraction(2000)),
        ("3M", Fraction(3 * 10**6)),
        ("4G", Fraction(4 * 10**9)),
        ("5T", Fraction(5 * 10**12)),
        ("6P", Fraction(6 * 10**15)),
        ("7E", Fraction(7 * 10**18)),
        ("1Ki", Fraction(1024)),
        ("64Mi", Fraction(64 * 2**20)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1Ti", Fraction(2**40)),
        ("1Pi", Fraction(2**50)),
        ("1Ei", Fraction(2**60)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1e+3", Fraction(1000)),
        ("25e-2", Fraction(1, 4)),
        ("0.1m", Fraction(1, 10000)),
    ],
)
def test_parse_quantity(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


def test_plain_integers_are_accepted() -> None:
    assert parse_quantity(2) == 2


@pytest.mark.parametrize(
    "text",
    ["", " 1", "1 ", "abc", "1x", "1Kb", "1ki", "1e", "1e1.5", ".", "--1", "1..2", "1e99999", "\u0661"],
)
def test_invalid_quantities_name_the_value(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_quantity(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [1.5, None, True, b"1"])
def test_non_string_quantities_are_invalid(value: object) -> None:
    with pytest.raises(InvalidInput):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value", "milli"),
    [
        ("500m", 1, 500),
        ("1", 1, 1000),
        ("1500m", 2, 1500),
        ("0.1m", 1, 1),  # MilliValue rounds up too
        ("64Mi", 64 * 2**20, 64 * 2**20 * 1000),
        ("-1500m", -1, -1500),
    ],
)
def test_rounding_up(text: str, value: int, milli: int) -> None:
    quantity = parse_quantity(text)
    assert ceil_value(quantity) == value
    assert ceil_milli_value(quantity) == milli


@pytest.mark.parametrize(
    ("quantity", "text"), [(Fraction(1, 2), "1"), (Fraction(64), "64"), (3, "3"), (Fraction(0), "0")]
)
def test_format_integer(quantity: Fraction | int, text: str) -> None:
    assert format_integer(quantity) == text
