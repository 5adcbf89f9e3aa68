"""Strict decimal strings, as exchanges take them on the wire.

Quantities and prices arrive as strings. ``Decimal(text)`` alone would accept
``NaN``, ``Infinity``, ``1e999999`` and megabyte-long digit runs, so the text
is matched against a plain fixed-point grammar first and only then converted.
No float ever touches a price or a quantity.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

MAX_INTEGER_DIGITS = 18
MAX_FRACTION_DIGITS = 18

_PLAIN_DECIMAL = re.compile(
    rf"(?:0|[1-9][0-9]{{0,{MAX_INTEGER_DIGITS - 1}}})(?:\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?"
)
_MAX_TEXT = MAX_INTEGER_DIGITS + 1 + MAX_FRACTION_DIGITS


class DecimalFormatError(ValueError):
    """The text is not a plain, non-negative, bounded decimal."""


_plain = _PLAIN_DECIMAL.fullmatch
_NOT_PLAIN = (
    f"must be a plain decimal such as 0.5 or 100 "
    f"(at most {MAX_INTEGER_DIGITS} integer and {MAX_FRACTION_DIGITS} fraction digits)"
)


def parse_decimal(text: str) -> Decimal:
    """Parse a non-negative fixed-point decimal string (``"0.001"``, ``"64250"``).

    Refuses signs, exponents, ``NaN``/``Infinity``, leading zeros, whitespace,
    and more than 18 integer or 18 fraction digits.
    """
    if len(text) > _MAX_TEXT or _plain(text) is None:
        raise DecimalFormatError(_NOT_PLAIN)
    return Decimal(text)


def parse_positive_decimal(text: str) -> Decimal:
    """Like :func:`parse_decimal`, and the value must be greater than zero."""
    # parse_decimal inlined: this runs twice for every order placed.
    if len(text) > _MAX_TEXT or _plain(text) is None:
        raise DecimalFormatError(_NOT_PLAIN)
    value = Decimal(text)
    if not value:  # the grammar has no sign: zero is the only value not above zero
        raise DecimalFormatError("must be greater than zero")
    return value


def format_decimal(value: Decimal) -> str:
    """Render without exponent and without trailing zeros (``Decimal("1.50") -> "1.5"``)."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


#: Exact arithmetic on parsed values: operands have at most 36 digits, so products and
#: remainders fit in 100 digits and never round; if one ever would, Inexact is raised
#: rather than a wrong decision taken silently.
EXACT = Context(prec=100, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether ``value`` is a whole multiple of ``step`` (``0.3`` of ``0.1``: yes, exactly)."""
    return EXACT.remainder(value, step) == 0
