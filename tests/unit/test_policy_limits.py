"""Limits in the policy files: the shipped values load; bad ones name file, line and key."""

from __future__ import annotations

import pathlib
from decimal import Decimal

import pytest

from gateway.policy import PolicyError, load_policy
from gateway.symbol_limits import StaleReference

ROOT = pathlib.Path(__file__).resolve().parents[2]

HEAD = '[[symbol]]\nsymbol = "X-PERP"\nproduct = "perp"\nbase_asset = "X"\nquote_asset = "USDT"\n'
BRACKETS = (
    "leverage_brackets = [\n"
    '  { notional_floor = "0", notional_cap = "100", max_leverage = 50 },\n'
    '  { notional_floor = "100", max_leverage = 10 },\n'
    "]\n"
)


def test_shipped_policy_declares_realistic_limits() -> None:
    policy = load_policy(ROOT / "limits")
    btc = policy.symbols["BTC-USDT"].limits
    assert (btc.tick_size, btc.lot_size, btc.max_leverage) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        1,
    )
    perp = policy.symbols["BTC-USDT-PERP"].limits
    assert perp.max_leverage == 125 and perp.leverage_brackets[0].max_leverage == 125
    assert perp.leverage_brackets[-1].max_leverage == 1
    assert policy.products["perpetual"].stale_reference is StaleReference.REFUSE_MARKET
    assert policy.products["spot"].stale_reference is StaleReference.SKIP_BAND
    for spec in policy.symbols.values():
        assert spec.limits.tick_size is not None and spec.limits.has_band


def test_limits_and_products_load(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[product]]\nproduct = "perp"\nprogram_trading_forbidden = true\n'
        'reference_max_age_ms = 5000\nstale_reference = "skip_band"\n\n'
        + HEAD
        + 'tick_size = "0.5"\nmax_leverage = 50\n'
        + BRACKETS
    )
    policy = load_policy(path)
    limits = policy.symbols["X-PERP"].limits
    assert limits.tick_size == Decimal("0.5") and limits.leverage_brackets[1].cap is None
    product = policy.products["perp"]
    assert product.program_trading_forbidden and product.reference_max_age_ms == 5000


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (HEAD + "tick_size = 0.01\n", 6, "symbol[0].tick_size: must be a decimal string"),
        (HEAD + 'lot_size = "-1"\n', 6, "symbol[0].lot_size"),
        (HEAD + 'min_quantity = "5"\nmax_quantity = "1"\n', 6, "must not exceed max_quantity"),
        (HEAD + 'band_sell_down_pct = "100"\n', 6, "below 100"),
        (HEAD + "max_leverage = 2000\n", 6, "symbol[0].max_leverage"),
        (HEAD + 'stale_reference = "never"\n', 6, "symbol[0].stale_reference"),
        (HEAD + BRACKETS.replace('"100", max_leverage = 10', '"101", max_leverage = 10'), 8,
         "symbol[0].leverage_brackets[1].notional_floor: must be 100"),
        (HEAD + BRACKETS.replace("max_leverage = 10", "max_leverage = 60"), 8,
         "leverage_brackets[1].max_leverage"),
        (HEAD + BRACKETS.replace("max_leverage = 10", "leverage = 10"), 8,
         "leverage_brackets[1].leverage: unknown key"),
        (HEAD + 'colour = "red"\n', 6, "symbol[0].colour: unknown key"),
        ('[[product]]\nproduct = "perp"\ncolour = 1\n', 3, "product[0].colour: unknown key"),
        ('[[product]]\nproduct = "Perp"\n', 2, "product[0].product"),
        ('[[product]]\nproduct = "perp"\nstale_reference = "x"\n', 3, "stale_reference"),
        ('[[product]]\nproduct = "p"\n[[product]]\nproduct = "p"\n', 4, "declared twice"),
        ('[[product]]\nproduct = "p"\nprogram_trading_forbidden = "no"\n', 3, "true or false"),
    ],
)  # fmt: skip
def test_bad_limits_name_file_line_and_key(
    tmp_path: pathlib.Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "venue.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.path, info.value.line) == (path, line)
    assert words in info.value.reason
