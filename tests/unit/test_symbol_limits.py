"""Symbol limits: validation names every bad field; brackets are contiguous; storage round-trips."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateway.model import SymbolSpec
from gateway.symbol_limits import (
    LeverageBracket,
    LimitsError,
    ProductSpec,
    StaleReference,
    SymbolLimits,
    bracket_for,
    leverage_limit_from_values,
    limits_from_values,
    program_trading_ban,
    reference_max_age_ms,
    stale_reference,
)

D = Decimal
BRACKETS = [("0", "50000", 125), ("50000", "600000", 100), ("600000", "", 50)]


def errors(values: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(LimitsError) as info:
        limits_from_values(values)
    return dict(info.value.errors)


def test_nothing_declared_checks_nothing() -> None:
    limits = limits_from_values({})
    assert limits == SymbolLimits()
    assert not limits.has_band and not limits.uses_reference and limits.leverage.empty


def test_full_set_parses_exactly() -> None:
    limits = limits_from_values(
        {
            "tick_size": "0.01",
            "lot_size": "0.00001",
            "min_quantity": "0.00001",
            "max_quantity": "9000",
            "min_notional": "5",
            "max_notional": "9000000",
            "band_buy_up_pct": "10",
            "band_sell_down_pct": "2.5",
            "max_leverage": 125,
            "leverage_brackets": BRACKETS,
            "reference_max_age_ms": 30_000,
            "stale_reference": "skip_band",
            "program_trading_forbidden": True,
        }
    )
    assert limits.tick_size == D("0.01") and limits.band_sell_down_pct == D("2.5")
    assert limits.leverage_brackets[-1] == LeverageBracket(D("600000"), None, 50)
    assert limits.stale_reference is StaleReference.SKIP_BAND
    assert limits.uses_reference and limits.has_band


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"tick_size": 0.01}, "tick_size", "decimal string"),
        ({"tick_size": "0"}, "tick_size", "greater than zero"),
        ({"lot_size": "1e-3"}, "lot_size", "plain decimal"),
        ({"min_quantity": "NaN"}, "min_quantity", "plain decimal"),
        ({"min_quantity": "2", "max_quantity": "1"}, "min_quantity", "must not exceed"),
        ({"min_notional": "10", "max_notional": "9.99"}, "min_notional", "must not exceed"),
        ({"band_buy_down_pct": "100"}, "band_buy_down_pct", "below 100"),
        ({"band_sell_up_pct": "1000.01"}, "band_sell_up_pct", "at most 1000"),
        ({"max_leverage": 1001}, "max_leverage", "between 1 and 1000"),
        ({"max_leverage": "20"}, "max_leverage", "integer"),
        ({"reference_max_age_ms": -1}, "reference_max_age_ms", "between"),
        ({"stale_reference": "panic"}, "stale_reference", "refuse_market, skip_band"),
        ({"program_trading_forbidden": "yes"}, "program_trading_forbidden", "true or false"),
    ],
)
def test_bad_values_name_the_field(values: dict[str, Any], field: str, words: str) -> None:
    assert words in errors(values)[field]


def test_every_bad_field_is_reported_at_once() -> None:
    found = errors({"tick_size": "x", "lot_size": "-1", "max_leverage": 5000})
    assert set(found) == {"tick_size", "lot_size", "max_leverage"}


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([("1", "10", 5)], "leverage_brackets[0].notional_floor", "start at 0"),
        ([("0", "10", 5), ("11", "20", 4)], "leverage_brackets[1].notional_floor", "must be 10"),
        ([("0", "10", 5), ("9", "20", 4)], "leverage_brackets[1].notional_floor", "must be 10"),
        ([("0", "10", 5), ("10", "10", 4)], "leverage_brackets[1].notional_cap", "above"),
        ([("0", "", 5), ("10", "20", 4)], "leverage_brackets[0].notional_cap", "every row"),
        ([("0", "10", 5), ("10", "20", 6)], "leverage_brackets[1].max_leverage", "not exceed"),
        ([("0", "10", 0)], "leverage_brackets[0].max_leverage", "between 1 and"),
        ([("0", "10")], "leverage_brackets[0]", "must be"),
        ([("0", "ten", 5)], "leverage_brackets[0].notional_cap", "plain decimal"),
    ],
)
def test_brackets_are_contiguous_increasing_and_non_overlapping(
    rows: list[Any], field: str, words: str
) -> None:
    assert words in errors({"leverage_brackets": rows})[field]


def test_bracket_lookup_edges() -> None:
    brackets = limits_from_values({"leverage_brackets": BRACKETS}).leverage_brackets
    first, second, last = brackets
    assert bracket_for(brackets, D("0.000001")) is first
    assert bracket_for(brackets, D("50000")) is first  # exactly at the cap: still that row
    assert bracket_for(brackets, D("50000.000000000000000001")) is second
    assert bracket_for(brackets, D("600000")) is second
    assert bracket_for(brackets, D("600000.01")) is last
    assert bracket_for(brackets, D("999999999999999999")) is last  # no cap on the last row
    capped = limits_from_values({"leverage_brackets": [("0", "100", 5)]}).leverage_brackets
    assert bracket_for(capped, D("100")) is not None
    assert bracket_for(capped, D("100.000000000000000001")) is None


def test_run_time_leverage_limit() -> None:
    limit = leverage_limit_from_values(20, [("0", "1000", 20), ("1000", "", 10)])
    assert limit.max_leverage == 20 and len(limit.brackets) == 2
    with pytest.raises(LimitsError) as info:
        leverage_limit_from_values(0, [("5", "10", 3)], prefix="x.")
    assert "x.brackets[0].notional_floor" in dict(info.value.errors)


def test_fields_round_trip_through_redis_strings() -> None:
    limits = limits_from_values(
        {
            "tick_size": "0.10",
            "max_leverage": 20,
            "leverage_brackets": BRACKETS,
            "stale_reference": "refuse_market",
            "program_trading_forbidden": True,
            "reference_max_age_ms": 5000,
        }
    )
    fields = limits.to_fields()
    assert fields["tick_size"] == "0.1" and "lot_size" not in fields
    assert SymbolLimits.from_fields(fields) == limits
    spec = SymbolSpec("X", "spot", "A", "B", limits)
    assert SymbolSpec.from_fields(spec.to_fields()) == spec
    assert SymbolLimits.from_fields({}) == SymbolLimits()
    with pytest.raises(ValueError, match="leverage_brackets"):
        SymbolLimits.from_fields({"leverage_brackets": "0,10"})


def test_symbol_settings_override_the_product_which_overrides_the_default() -> None:
    bare = SymbolLimits()
    product = ProductSpec("perp", True, 30_000, StaleReference.SKIP_BAND)
    assert reference_max_age_ms(bare, None) == 60_000
    assert reference_max_age_ms(bare, product) == 30_000
    assert reference_max_age_ms(SymbolLimits(reference_max_age_ms=5), product) == 5
    assert stale_reference(bare, None) is StaleReference.REFUSE_MARKET
    assert stale_reference(bare, product) is StaleReference.SKIP_BAND
    own = SymbolLimits(stale_reference=StaleReference.REFUSE_MARKET)
    assert stale_reference(own, product) is StaleReference.REFUSE_MARKET
    assert program_trading_ban(bare, None) is None
    assert program_trading_ban(bare, product) == "product"
    assert program_trading_ban(SymbolLimits(program_trading_forbidden=True), None) == "symbol"
