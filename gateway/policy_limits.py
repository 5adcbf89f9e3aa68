"""The order-limit keys of the policy's ``[[symbol]]`` tables, and the ``[[product]]`` tables.

Key names are the ``SymbolSpec`` proto field names. Decimals are strings
(``tick_size = "0.01"``): TOML floats are binary and inexact, so a number is
refused. Leverage brackets are an array of inline tables::

    leverage_brackets = [
      { notional_floor = "0",     notional_cap = "50000",  max_leverage = 125 },
      { notional_floor = "50000", notional_cap = "600000", max_leverage = 100 },
    ]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.symbol_limits import (
    LIMIT_FIELDS,
    MAX_REFERENCE_AGE_MS,
    LimitsError,
    ProductSpec,
    SymbolLimits,
    limits_from_values,
    parse_stale_reference,
)
from gateway.validation import PRODUCT_RE, PRODUCT_RULE

SYMBOL_LIMIT_KEYS = LIMIT_FIELDS
PRODUCT_KEYS = ("product", "program_trading_forbidden", "reference_max_age_ms", "stale_reference")
_BRACKET_KEYS = ("notional_floor", "notional_cap", "max_leverage")


def symbol_limits_from_table(entry: Mapping[str, Any]) -> SymbolLimits:
    """Limits from one ``[[symbol]]`` table; raises :class:`LimitsError` naming the key."""
    values = {name: entry[name] for name in LIMIT_FIELDS if name in entry}
    if "leverage_brackets" in entry:
        values["leverage_brackets"] = _bracket_rows(entry["leverage_brackets"])
    if "stale_reference" in entry and not isinstance(entry["stale_reference"], str):
        raise LimitsError([("stale_reference", "must be a string")])
    return limits_from_values(values)


def product_from_table(entry: Mapping[str, Any]) -> ProductSpec:
    for key in entry:
        if key not in PRODUCT_KEYS:
            raise LimitsError([(key, f"unknown key (allowed: {', '.join(PRODUCT_KEYS)})")])
    name = entry.get("product")
    if not isinstance(name, str) or not name:
        raise LimitsError([("product", "required string")])
    if PRODUCT_RE.fullmatch(name) is None:
        raise LimitsError([("product", PRODUCT_RULE)])
    forbidden = entry.get("program_trading_forbidden", False)
    if not isinstance(forbidden, bool):
        raise LimitsError([("program_trading_forbidden", "must be true or false")])
    max_age = entry.get("reference_max_age_ms", 0)
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise LimitsError([("reference_max_age_ms", "must be an integer")])
    if not 0 <= max_age <= MAX_REFERENCE_AGE_MS:
        raise LimitsError(
            [("reference_max_age_ms", f"must be between 1 and {MAX_REFERENCE_AGE_MS} (0: unset)")]
        )
    stale = entry.get("stale_reference", "")
    if not isinstance(stale, str):
        raise LimitsError([("stale_reference", "must be a string")])
    return ProductSpec(
        product=name,
        program_trading_forbidden=forbidden,
        reference_max_age_ms=max_age,
        stale_reference=parse_stale_reference(None, "stale_reference", stale),
    )


def _bracket_rows(raw: Any) -> list[tuple[Any, Any, Any]]:
    if not isinstance(raw, list):
        raise LimitsError([("leverage_brackets", "must be an array of inline tables")])
    rows: list[tuple[Any, Any, Any]] = []
    for index, row in enumerate(raw):
        where = f"leverage_brackets[{index}]"
        if not isinstance(row, dict):
            raise LimitsError([(where, "must be { notional_floor, notional_cap, max_leverage }")])
        for key in row:
            if key not in _BRACKET_KEYS:
                allowed = ", ".join(_BRACKET_KEYS)
                raise LimitsError([(f"{where}.{key}", f"unknown key (allowed: {allowed})")])
        rows.append(
            (row.get("notional_floor"), row.get("notional_cap", ""), row.get("max_leverage"))
        )
    return rows


def bracket_row_line(text: str, key_line: int | None, index: int) -> int | None:
    """Best-effort line of the ``index``-th bracket row after the ``leverage_brackets`` key."""
    if key_line is None:
        return None
    lines = text.splitlines()
    seen = -1
    for number in range(key_line, len(lines) + 1):
        if "notional_floor" in lines[number - 1].split("#", 1)[0]:
            seen += 1
            if seen == index:
                return number
    return key_line
