from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.decimals import (
    DecimalFormatError,
    format_decimal,
    parse_decimal,
    parse_positive_decimal,
)


@pytest.mark.parametrize(
    "text", ["0", "1", "0.5", "64250.25", "0.000000000000000001", "9" * 18 + "." + "9" * 18]
)
def test_accepts_plain_decimals(text: str) -> None:
    assert parse_decimal(text) == Decimal(text)


@pytest.mark.parametrize(
    "text",
    ["", " 1", "1 ", "+1", "-1", "01", "1.", ".5", "1e5", "1E5", "NaN", "nan", "Infinity", "inf", "0x1",
     "1,5", "1_000", "٣", "9" * 19, "0." + "1" * 19, "1" * 10_000],
)  # fmt: skip
def test_refuses_everything_else(text: str) -> None:
    with pytest.raises(DecimalFormatError):
        parse_decimal(text)


def test_positive_refuses_zero() -> None:
    with pytest.raises(DecimalFormatError, match="greater than zero"):
        parse_positive_decimal("0.000")


@given(
    st.decimals(
        min_value=0, max_value=Decimal("1e17"), places=18, allow_nan=False, allow_infinity=False
    )
)
def test_format_round_trips(value: Decimal) -> None:
    assert parse_decimal(format_decimal(value)) == value
