"""Order sanity and leverage checks at their edges, on a snapshot with a pinned clock."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.engine import PreTradeEngine
from gateway.model import Action, Channel, FlagKind, SymbolSpec
from gateway.reasons import Denial, Reason
from gateway.snapshot import Snapshot
from gateway.symbol_limits import ProductSpec, StaleReference, limits_from_values
from gateway.validation import CHANNEL_METADATA_KEY, OrderCall, parse_channel

D = Decimal
NOW = 1_700_000_000_000
SYMBOL = "X-PERP"


class Venue:
    def __init__(self, product: ProductSpec | None = None, **limits: Any) -> None:
        spec = SymbolSpec(SYMBOL, "perp", "X", "USDT", limits_from_values(limits))
        products = {"perp": product} if product else {}
        self.snapshot = Snapshot({SYMBOL: spec}, products)
        self.engine = PreTradeEngine(self.snapshot, clock=lambda: NOW)
        self._version = 0

    def decide(self, call: OrderCall) -> Denial | None:
        return self.engine.check_local(call)

    def reason(self, call: OrderCall) -> str | None:
        denial = self.decide(call)
        return None if denial is None else denial.reason.value

    def trade(self, price: str, age_ms: int = 0) -> None:
        self.snapshot.trade_prices.observe(SYMBOL, D(price), NOW - age_ms)

    def ops(self, kind: FlagKind, key: str, expires_ms: int = 0, **fields: str) -> None:
        self._version += 1
        record = {"reason": "r", "actor": "ops", "updated_ms": str(NOW - 1000),
                  "expires_ms": str(expires_ms), "version": str(self._version), **fields}  # fmt: skip
        assert self.snapshot.apply(kind, key, record, self._version)


def place(
    quantity: str = "1",
    price: str | None = "100",
    *,
    side: int = pb.SIDE_BUY,
    leverage: int = 1,
    reduce_only: bool = False,
    channel: Channel = Channel.PROGRAM,
    account: str = "alice",
) -> OrderCall:
    return OrderCall(
        action=Action.PLACE,
        account_id=account,
        symbol=SYMBOL,
        side=side,
        order_type=pb.ORDER_TYPE_LIMIT if price is not None else pb.ORDER_TYPE_MARKET,
        quantity=D(quantity),
        price=None if price is None else D(price),
        leverage=leverage,
        reduce_only=reduce_only,
        channel=channel,
    )


def market(quantity: str = "1", **kw: Any) -> OrderCall:
    return place(quantity, None, **kw)


def amend(quantity: str | None = None, price: str | None = None) -> OrderCall:
    return OrderCall(
        action=Action.AMEND,
        account_id="alice",
        symbol=SYMBOL,
        quantity=None if quantity is None else D(quantity),
        price=None if price is None else D(price),
        order_id="O-1",
    )


def cancel(channel: Channel = Channel.PROGRAM) -> OrderCall:
    return OrderCall(Action.CANCEL, "alice", SYMBOL, order_id="O-1", channel=channel)


# -- quantity, lot and tick ------------------------------------------------------


def test_quantity_range_edges() -> None:
    venue = Venue(min_quantity="0.001", max_quantity="1000")
    assert venue.reason(place("0.001")) is None
    assert venue.reason(place("1000")) is None
    low = venue.decide(place("0.000999999999999999"))
    assert low is not None and low.reason is Reason.ORDER_QTY_OUT_OF_RANGE
    assert low.metadata == {"limit": "quantity", "symbol": SYMBOL, "min_quantity": "0.001",
                            "max_quantity": "1000", "quantity": "0.000999999999999999"}  # fmt: skip
    assert low.violations[0].field == "quantity"
    assert venue.reason(place("1000.000000000000000001")) == "ORDER_QTY_OUT_OF_RANGE"
    assert venue.reason(amend(quantity="1000.1")) == "ORDER_QTY_OUT_OF_RANGE"


@pytest.mark.parametrize(
    ("lot", "quantity", "ok"),
    [
        ("0.1", "0.3", True),  # 0.3 % 0.1 in binary floats is 0.09999999999999998
        ("0.1", "0.30000000000000001", False),
        ("0.003", "0.009", True),
        ("0.003", "0.01", False),
        ("0.00000001", "123.45678901", True),
        ("0.00000001", "123.456789015", False),
        ("0.000000000000000001", "999999999999999999.999999999999999999", True),
        ("7", "999999999999999999", True),  # 142857142857142857 x 7
        ("7", "999999999999999998", False),
        ("2.5", "7.5", True),
        ("2.5", "7.6", False),
    ],
)
def test_lot_size_multiples_are_exact(lot: str, quantity: str, ok: bool) -> None:
    venue = Venue(lot_size=lot)
    denial = venue.decide(place(quantity))
    assert (denial is None) is ok
    if denial is not None:
        assert denial.reason is Reason.QTY_STEP_INVALID
        assert denial.metadata["lot_size"] == lot
        assert denial.violations[0].field == "quantity"


@pytest.mark.parametrize(
    ("tick", "price", "ok"),
    [
        ("0.05", "64250.15", True),
        ("0.05", "64250.12", False),
        ("0.1", "0.3", True),
        ("0.01", "100.001", False),
        ("0.5", "64250", True),
        ("0.25", "1.75", True),
        ("0.000001", "0.000003", True),
    ],
)
def test_tick_size_multiples_are_exact(tick: str, price: str, ok: bool) -> None:
    venue = Venue(tick_size=tick)
    assert (venue.reason(place(price=price)) is None) is ok
    assert (venue.reason(amend(price=price)) is None) is ok
    if not ok:
        denial = venue.decide(place(price=price))
        assert denial is not None and denial.reason is Reason.PRICE_TICK_INVALID
        assert denial.violations[0].field == "price"


def test_cancels_pass_every_sanity_check() -> None:
    venue = Venue(
        tick_size="1", lot_size="1", min_quantity="5", min_notional="1000", max_leverage=1,
        band_buy_up_pct="1", product=ProductSpec("perp", program_trading_forbidden=True),
    )  # fmt: skip
    assert venue.reason(cancel()) is None


# -- notional -------------------------------------------------------------------


def test_notional_edges_for_limit_orders() -> None:
    venue = Venue(min_notional="100", max_notional="10000")
    assert venue.reason(place("1", "100")) is None
    assert venue.reason(place("100", "100")) is None
    low = venue.decide(place("0.999999", "100"))
    assert low is not None and low.reason is Reason.ORDER_NOTIONAL_OUT_OF_RANGE
    assert low.metadata["notional"] == "99.9999" and low.metadata["price_basis"] == "limit_price"
    assert venue.reason(place("100.01", "100")) == "ORDER_NOTIONAL_OUT_OF_RANGE"
    # Reduce-only orders may be tiny (closing dust), never too big.
    assert venue.reason(place("0.5", "100", reduce_only=True)) is None
    assert venue.reason(place("101", "100", reduce_only=True)) == "ORDER_NOTIONAL_OUT_OF_RANGE"
    # Amends: only when both the new quantity and the new price are known.
    assert venue.reason(amend(quantity="0.5")) is None
    assert venue.reason(amend(quantity="0.5", price="100")) == "ORDER_NOTIONAL_OUT_OF_RANGE"


def test_market_orders_are_priced_at_the_reference() -> None:
    venue = Venue(min_notional="100", max_notional="10000")
    venue.trade("200")
    assert venue.reason(market("0.5")) is None
    denial = venue.decide(market("0.49"))
    assert denial is not None and denial.reason is Reason.ORDER_NOTIONAL_OUT_OF_RANGE
    assert denial.metadata["price_basis"] == "reference_upstream"
    assert venue.reason(market("50.000001")) == "ORDER_NOTIONAL_OUT_OF_RANGE"


# -- reference price and staleness ------------------------------------------------


def test_stale_refuse_market_policy() -> None:
    venue = Venue(min_notional="10", reference_max_age_ms=1000, stale_reference="refuse_market")
    missing = venue.decide(market())
    assert missing is not None and missing.reason is Reason.REFERENCE_PRICE_UNAVAILABLE
    assert missing.metadata["state"] == "missing"
    venue.trade("100", age_ms=1000)  # exactly at the maximum age: still fresh
    assert venue.reason(market()) is None
    venue.trade("100", age_ms=1001)
    stale = venue.decide(market())
    assert stale is not None and stale.reason is Reason.REFERENCE_PRICE_UNAVAILABLE
    assert (stale.metadata["state"], stale.metadata["age_ms"]) == ("stale", "1001")
    assert venue.reason(market(reduce_only=True)) is None  # getting out stays possible
    assert venue.reason(place("1", "100")) is None  # limit orders go on (unbanded)


def test_stale_skip_band_policy_uses_the_last_price_or_none() -> None:
    venue = Venue(min_notional="10", reference_max_age_ms=1000, stale_reference="skip_band",
                  band_buy_up_pct="1")  # fmt: skip
    assert venue.reason(market("0.001")) is None  # no price at all: notional unchecked
    venue.trade("100", age_ms=5000)
    assert venue.reason(market("0.05")) == "ORDER_NOTIONAL_OUT_OF_RANGE"  # 5 at the stale 100
    assert venue.reason(place("1", "500")) is None  # band skipped


def test_product_decides_when_the_symbol_does_not() -> None:
    product = ProductSpec("perp", reference_max_age_ms=10, stale_reference=StaleReference.SKIP_BAND)
    venue = Venue(product=product, min_notional="10")
    venue.trade("100", age_ms=11)
    assert venue.reason(market()) is None
    strict = Venue(product=ProductSpec("perp", reference_max_age_ms=10), min_notional="10")
    strict.trade("100", age_ms=11)
    assert strict.reason(market()) == "REFERENCE_PRICE_UNAVAILABLE"


def test_symbols_without_reference_dependent_limits_take_market_orders() -> None:
    venue = Venue(tick_size="0.1", lot_size="0.1", max_leverage=10)
    assert venue.reason(market()) is None


def test_ops_pin_wins_over_trades_and_lapses() -> None:
    venue = Venue(band_buy_up_pct="5", reference_max_age_ms=1000)
    venue.trade("200")
    venue.ops(FlagKind.REFERENCE_PRICE, SYMBOL, expires_ms=NOW + 1, price="100")
    assert venue.reason(place(price="105")) is None
    denial = venue.decide(place(price="105.01"))
    assert denial is not None and denial.metadata["reference_source"] == "ops"
    # A pin is fresh while in force, however old.
    venue.ops(FlagKind.REFERENCE_PRICE, SYMBOL, expires_ms=0, price="100")
    venue.snapshot.trade_prices.observe(SYMBOL, D("200"), NOW - 10**9)
    assert venue.reason(place(price="105.01")) == "PRICE_OUT_OF_BAND"
    # Lapsed pin: back to the (fresh) upstream trade.
    venue.ops(FlagKind.REFERENCE_PRICE, SYMBOL, expires_ms=NOW, price="100")
    venue.trade("200")
    assert venue.reason(place(price="209")) is None


# -- price band -----------------------------------------------------------------


BAND = {"band_buy_up_pct": "5", "band_buy_down_pct": "20",
        "band_sell_up_pct": "30", "band_sell_down_pct": "2.5"}  # fmt: skip


@pytest.mark.parametrize(
    ("side", "price", "ok"),
    [
        (pb.SIDE_BUY, "105", True),
        (pb.SIDE_BUY, "105.000000000000000001", False),
        (pb.SIDE_BUY, "80", True),
        (pb.SIDE_BUY, "79.999999999999999999", False),
        (pb.SIDE_SELL, "130", True),
        (pb.SIDE_SELL, "130.01", False),
        (pb.SIDE_SELL, "97.5", True),
        (pb.SIDE_SELL, "97.49", False),
    ],
)
def test_band_edges_on_both_sides(side: int, price: str, ok: bool) -> None:
    venue = Venue(**BAND)
    venue.trade("100")
    assert (venue.reason(place(price=price, side=side)) is None) is ok


def test_band_refusal_carries_the_band() -> None:
    venue = Venue(**BAND)
    venue.trade("64000.5")
    denial = venue.decide(place(price="70000"))
    assert denial is not None and denial.reason is Reason.PRICE_OUT_OF_BAND
    assert denial.metadata == {
        "limit": "price_band", "symbol": SYMBOL, "side": "BUY", "price": "70000",
        "reference_price": "64000.5", "reference_source": "upstream",
        "band_up_pct": "5", "band_high": "67200.525",
        "band_down_pct": "20", "band_low": "51200.4",
    }  # fmt: skip


def test_amends_are_held_to_the_widest_band() -> None:
    venue = Venue(**BAND)
    venue.trade("100")
    assert venue.reason(amend(price="130")) is None  # a sell could go there
    assert venue.reason(amend(price="80")) is None  # a buy could go there
    assert venue.reason(amend(price="130.01")) == "PRICE_OUT_OF_BAND"
    assert venue.reason(amend(price="79.99")) == "PRICE_OUT_OF_BAND"
    one_sided = Venue(band_buy_up_pct="5")
    one_sided.trade("100")
    assert one_sided.reason(amend(price="1000")) is None  # sells have no upper band


def test_no_band_without_a_fresh_reference() -> None:
    venue = Venue(**BAND, reference_max_age_ms=100)
    assert venue.reason(place(price="1000")) is None
    venue.trade("100", age_ms=101)
    assert venue.reason(place(price="1000")) is None
    venue.trade("100", age_ms=100)
    assert venue.reason(place(price="1000")) == "PRICE_OUT_OF_BAND"


# -- program channel --------------------------------------------------------------


def test_program_orders_refused_where_forbidden() -> None:
    venue = Venue(program_trading_forbidden=True)
    denial = venue.decide(place())
    assert denial is not None and denial.reason is Reason.PROGRAM_TRADING_FORBIDDEN
    assert (denial.code.name, denial.metadata["scope"]) == ("PERMISSION_DENIED", "symbol")
    assert venue.reason(place(reduce_only=True)) == "PROGRAM_TRADING_FORBIDDEN"
    assert venue.reason(amend(price="1")) == "PROGRAM_TRADING_FORBIDDEN"
    assert venue.reason(cancel()) is None
    assert venue.reason(place(channel=Channel.INTERACTIVE)) is None
    by_product = Venue(product=ProductSpec("perp", program_trading_forbidden=True))
    product_denial = by_product.decide(place())
    assert product_denial is not None and product_denial.metadata["scope"] == "product"
    assert Venue().reason(place()) is None


def test_channel_metadata() -> None:
    assert parse_channel(None) is Channel.PROGRAM  # absent: fail safe
    assert parse_channel([("x-other", "1")]) is Channel.PROGRAM
    assert parse_channel([(CHANNEL_METADATA_KEY, "interactive")]) is Channel.INTERACTIVE
    assert parse_channel([(CHANNEL_METADATA_KEY, "Program")]) is Channel.PROGRAM
    assert parse_channel([(CHANNEL_METADATA_KEY, b"interactive")]) is Channel.INTERACTIVE
    for bad in ([(CHANNEL_METADATA_KEY, "robot")],
                [(CHANNEL_METADATA_KEY, "program"), (CHANNEL_METADATA_KEY, "interactive")]):  # fmt: skip
        denial = parse_channel(bad)
        assert isinstance(denial, Denial) and denial.reason is Reason.INVALID_REQUEST
        assert denial.violations[0].field == CHANNEL_METADATA_KEY


# -- leverage ---------------------------------------------------------------------


PERP = {
    "lot_size": "0.001",
    "max_leverage": 125,
    "leverage_brackets": [("0", "50000", 125), ("50000", "600000", 100), ("600000", "1000000", 20)],
}


@pytest.mark.parametrize(
    ("quantity", "price", "leverage", "ok"),
    [
        ("1", "50000", 125, True),  # exactly at the first cap
        ("1.001", "50000", 125, False),  # just above it: the next row
        ("1.001", "50000", 100, True),
        ("12", "50000", 100, True),  # 600000: the second row's cap
        ("12", "50000.1", 100, False),
        ("12", "50000.1", 20, True),
        ("20", "50000", 20, True),  # 1000000: the last cap
        ("20", "50000.1", 1, False),  # above every bracket: no leverage at all
    ],
)
def test_bracket_edges(quantity: str, price: str, leverage: int, ok: bool) -> None:
    venue = Venue(**PERP)
    assert (venue.reason(place(quantity, price, leverage=leverage)) is None) is ok


def test_leverage_refusal_names_the_cap() -> None:
    venue = Venue(**PERP)
    denial = venue.decide(place("1.001", "50000", leverage=125))
    assert denial is not None and denial.reason is Reason.LEVERAGE_EXCEEDED
    assert denial.code.name == "FAILED_PRECONDITION"
    assert denial.metadata == {
        "limit": "leverage", "symbol": SYMBOL, "account_id": "alice",
        "requested_leverage": "125", "max_leverage": "100", "bound_by": "symbol_brackets",
        "notional": "50050", "bracket_floor": "50000", "bracket_cap": "600000",
    }  # fmt: skip
    above = venue.decide(place("20", "50000.1", leverage=1))
    assert above is not None and above.metadata["max_leverage"] == "0"
    assert "above the highest leverage bracket" in above.message


def test_reduce_only_is_never_refused_for_leverage() -> None:
    venue = Venue(**PERP)
    venue.ops(FlagKind.ACCOUNT_LEVERAGE, "alice", value="2")
    assert venue.reason(place("20", "50000.1", leverage=125, reduce_only=True)) is None


def test_account_override_only_lowers() -> None:
    venue = Venue(**PERP)
    venue.ops(FlagKind.ACCOUNT_LEVERAGE, "alice", value="10")
    denial = venue.decide(place("1", "100", leverage=11))
    assert denial is not None and denial.metadata["bound_by"] == "account_override"
    assert venue.reason(place("1", "100", leverage=10)) is None
    assert venue.reason(place("1", "100", leverage=125, account="bob")) is None
    venue.ops(FlagKind.ACCOUNT_LEVERAGE, "alice", value="500")  # above the symbol's: no effect
    assert venue.reason(place("1", "100", leverage=126)) == "LEVERAGE_EXCEEDED"
    assert venue.reason(place("1.001", "50000", leverage=101)) == "LEVERAGE_EXCEEDED"
    venue.ops(FlagKind.ACCOUNT_LEVERAGE, "alice", value="3", expires_ms=NOW)  # lapsed
    assert venue.reason(place("1", "100", leverage=125)) is None


def test_symbol_override_only_lowers() -> None:
    venue = Venue(**PERP)
    venue.ops(FlagKind.SYMBOL_LEVERAGE, SYMBOL, max_leverage="50", brackets="0,1000,50;1000,,5")
    assert venue.reason(place("0.02", "50000", leverage=50)) is None  # 1000: the cap
    denial = venue.decide(place("0.021", "50000", leverage=6))
    assert denial is not None and denial.metadata["bound_by"] == "symbol_override_brackets"
    assert venue.reason(place("0.001", "100", leverage=51)) == "LEVERAGE_EXCEEDED"
    venue.ops(FlagKind.SYMBOL_LEVERAGE, SYMBOL, max_leverage="1000")
    assert venue.reason(place("1", "100", leverage=126)) == "LEVERAGE_EXCEEDED"


def test_market_orders_use_the_reference_notional_for_brackets() -> None:
    venue = Venue(**PERP, stale_reference="skip_band")
    # No price at all: the most conservative row applies.
    assert venue.reason(market("0.001", leverage=21)) == "LEVERAGE_EXCEEDED"
    venue.trade("50000")
    assert venue.reason(market("1", leverage=125)) is None
    assert venue.reason(market("1.001", leverage=125)) == "LEVERAGE_EXCEEDED"


def test_spot_rejects_any_leverage() -> None:
    venue = Venue(max_leverage=1)
    assert venue.reason(place(leverage=1)) is None
    assert venue.reason(place(leverage=2)) == "LEVERAGE_EXCEEDED"
    assert Venue().reason(place(leverage=1000)) is None  # nothing declared: not checked


def test_an_override_caps_where_the_symbol_declares_nothing() -> None:
    """Nothing declared and no override: no cap. An override set at run time caps at
    once, on its own, and stops capping when it lapses."""
    venue = Venue()
    assert venue.reason(place(leverage=100)) is None
    venue.ops(FlagKind.ACCOUNT_LEVERAGE, "alice", value="5")
    assert venue.reason(place(leverage=6)) == "LEVERAGE_EXCEEDED"
    assert venue.reason(place(leverage=6, account="bob")) is None
    venue.ops(FlagKind.ACCOUNT_LEVERAGE, "alice", value="5", expires_ms=NOW)  # lapsed
    assert venue.reason(place(leverage=6)) is None
    venue.ops(FlagKind.SYMBOL_LEVERAGE, SYMBOL, max_leverage="20")
    assert venue.reason(place(leverage=21, account="bob")) == "LEVERAGE_EXCEEDED"


def test_checks_run_in_order() -> None:
    venue = Venue(program_trading_forbidden=True, min_quantity="1", lot_size="1",
                  min_notional="1000", max_leverage=2, band_buy_up_pct="1")  # fmt: skip
    venue.trade("100")
    call = place("0.5", "500", leverage=3)
    assert venue.reason(call) == "PROGRAM_TRADING_FORBIDDEN"
    venue.snapshot.symbols[SYMBOL] = SymbolSpec(
        SYMBOL, "perp", "X", "USDT",
        limits_from_values({"min_quantity": "1", "lot_size": "1", "min_notional": "1000",
                            "max_leverage": 2, "band_buy_up_pct": "1"}),
    )  # fmt: skip
    order = ["ORDER_QTY_OUT_OF_RANGE", "QTY_STEP_INVALID", "ORDER_NOTIONAL_OUT_OF_RANGE",
             "PRICE_OUT_OF_BAND", "LEVERAGE_EXCEEDED"]  # fmt: skip
    calls = [place("0.5", "500", leverage=3), place("1.5", "500", leverage=3),
             place("1", "500", leverage=3), place("10", "500", leverage=3),
             place("10", "101", leverage=3)]  # fmt: skip
    assert [venue.reason(c) for c in calls] == order
