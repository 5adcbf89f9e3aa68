"""Matching engine rules: priority, time in force, cancel, amend, positions, reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.exchange import (
    ErrorCode,
    ExchangeError,
    ExecType,
    ExecutionReport,
    MatchingEngine,
    OrderResult,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

SYMBOL = "BTC-USD"
BUY, SELL = Side.BUY, Side.SELL


D = Decimal


class Recorder:
    def __init__(self, engine: MatchingEngine) -> None:
        self.reports: list[ExecutionReport] = []
        engine.subscribe(self.reports.append)

    def kinds(self) -> list[tuple[ExecType, str]]:
        return [(r.exec_type, r.order.order_id) for r in self.reports]

    def clear(self) -> None:
        self.reports.clear()


@pytest.fixture
def engine() -> MatchingEngine:
    return MatchingEngine()


@pytest.fixture
def recorder(engine: MatchingEngine) -> Recorder:
    return Recorder(engine)


def limit(
    engine: MatchingEngine,
    account: str,
    side: Side,
    quantity: str,
    price: str,
    *,
    tif: TimeInForce | None = None,
    client_order_id: str = "",
    reduce_only: bool = False,
    symbol: str = SYMBOL,
) -> OrderResult:
    return engine.place(
        account_id=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=D(quantity),
        price=D(price),
        time_in_force=tif,
        client_order_id=client_order_id,
        reduce_only=reduce_only,
    )


def market(
    engine: MatchingEngine,
    account: str,
    side: Side,
    quantity: str,
    *,
    tif: TimeInForce | None = None,
    reduce_only: bool = False,
) -> OrderResult:
    return engine.place(
        account_id=account,
        symbol=SYMBOL,
        side=side,
        order_type=OrderType.MARKET,
        quantity=D(quantity),
        time_in_force=tif,
        reduce_only=reduce_only,
    )


def fills(result: OrderResult) -> list[tuple[Decimal, Decimal]]:
    return [(fill.price, fill.quantity) for fill in result.fills]


def error_code(excinfo: pytest.ExceptionInfo[ExchangeError]) -> ErrorCode:
    return excinfo.value.code


# -- resting and priority -------------------------------------------------------


def test_limit_order_rests_and_is_reported_new(engine: MatchingEngine, recorder: Recorder) -> None:
    result = limit(engine, "a", BUY, "1.5", "100", client_order_id="c1")

    assert result.order.status is OrderStatus.NEW
    assert result.order.remaining_quantity == D("1.5")
    assert result.fills == ()
    assert engine.best_bid(SYMBOL) == D("100")
    assert engine.best_ask(SYMBOL) is None
    assert [o.order_id for o in engine.open_orders()] == [result.order.order_id]
    assert recorder.kinds() == [(ExecType.NEW, result.order.order_id)]
    assert recorder.reports[0].order.client_order_id == "c1"


def test_order_and_trade_ids_increase(engine: MatchingEngine) -> None:
    first = limit(engine, "a", SELL, "1", "100")
    second = limit(engine, "a", SELL, "1", "100")
    taker = limit(engine, "b", BUY, "2", "100")

    assert [first.order.order_id, second.order.order_id, taker.order.order_id] == [
        "X-1",
        "X-2",
        "X-3",
    ]
    assert [fill.trade_id for fill in taker.fills] == ["T-1", "T-2"]


def test_better_price_matches_first_regardless_of_arrival(engine: MatchingEngine) -> None:
    limit(engine, "m1", SELL, "1", "101")
    limit(engine, "m2", SELL, "1", "100")
    limit(engine, "m3", SELL, "1", "102")

    result = limit(engine, "t", BUY, "2", "105")

    assert fills(result) == [(D("100"), D("1")), (D("101"), D("1"))]
    assert engine.depth(SYMBOL, SELL) == [(D("102"), D("1"))]


def test_fifo_within_a_price_level(engine: MatchingEngine) -> None:
    first = limit(engine, "m1", BUY, "1", "100").order.order_id
    second = limit(engine, "m2", BUY, "1", "100").order.order_id
    third = limit(engine, "m3", BUY, "1", "100").order.order_id
    assert engine.queue(SYMBOL, BUY, D("100")) == [first, second, third]

    limit(engine, "t", SELL, "1.5", "100")

    assert engine.get_order(first) is None
    remaining = engine.get_order(second)
    assert remaining is not None
    assert remaining.status is OrderStatus.PARTIALLY_FILLED
    assert remaining.filled_quantity == D("0.5")
    assert engine.queue(SYMBOL, BUY, D("100")) == [second, third]
    assert engine.position("m1", SYMBOL) == D("1")
    assert engine.position("m2", SYMBOL) == D("0.5")
    assert engine.position("m3", SYMBOL) == 0


def test_trades_execute_at_the_maker_price(engine: MatchingEngine, recorder: Recorder) -> None:
    limit(engine, "m", SELL, "1", "100")
    result = limit(engine, "t", BUY, "1", "110")

    assert fills(result) == [(D("100"), D("1"))]
    trades = [r for r in recorder.reports if r.exec_type is ExecType.TRADE]
    assert [(r.order.account_id, r.maker, r.last_price) for r in trades] == [
        ("t", False, D("100")),
        ("m", True, D("100")),
    ]
    assert trades[0].trade_id == trades[1].trade_id == result.fills[0].trade_id
    assert engine.last_trade_price(SYMBOL) == D("100")


def test_sell_taker_walks_bids_from_the_highest(engine: MatchingEngine) -> None:
    limit(engine, "m", BUY, "1", "98")
    limit(engine, "m", BUY, "1", "100")
    limit(engine, "m", BUY, "1", "99")

    result = limit(engine, "t", SELL, "2.5", "99")

    assert fills(result) == [(D("100"), D("1")), (D("99"), D("1"))]
    assert result.order.status is OrderStatus.PARTIALLY_FILLED
    assert engine.best_ask(SYMBOL) == D("99")
    assert engine.best_bid(SYMBOL) == D("98")
    assert engine.depth(SYMBOL, SELL) == [(D("99"), D("0.5"))]


def test_partial_fill_across_levels_rests_remainder_at_limit(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "1", "100")
    limit(engine, "m", SELL, "2", "101")
    limit(engine, "m", SELL, "5", "103")

    result = limit(engine, "t", BUY, "4", "102")

    assert fills(result) == [(D("100"), D("1")), (D("101"), D("2"))]
    assert result.order.filled_quantity == D("3")
    assert result.order.remaining_quantity == D("1")
    assert engine.depth(SYMBOL, BUY) == [(D("102"), D("1"))]
    assert engine.depth(SYMBOL, SELL) == [(D("103"), D("5"))]
    assert engine.last_trade_price(SYMBOL) == D("101")


def test_books_are_per_symbol(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "1", "100", symbol="ETH-USD")
    result = limit(engine, "t", BUY, "1", "100")

    assert result.fills == ()
    assert engine.best_ask("ETH-USD") == D("100")
    assert engine.best_bid(SYMBOL) == D("100")
    assert engine.last_trade_price("ETH-USD") is None


# -- time in force and market orders -----------------------------------------------


def test_ioc_fills_what_it_can_and_expires_the_rest(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    maker = limit(engine, "m", SELL, "1", "100").order.order_id
    recorder.clear()

    result = limit(engine, "t", BUY, "3", "100", tif=TimeInForce.IOC)

    assert result.order.status is OrderStatus.EXPIRED
    assert result.order.filled_quantity == D("1")
    assert result.order.remaining_quantity == 0
    taker = result.order.order_id
    assert recorder.kinds() == [
        (ExecType.NEW, taker),
        (ExecType.TRADE, taker),
        (ExecType.TRADE, maker),
        (ExecType.EXPIRED, taker),
    ]
    assert engine.open_orders() == []
    assert engine.best_bid(SYMBOL) is None


def test_ioc_without_liquidity_expires_untouched(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "1", "101")
    result = limit(engine, "t", BUY, "1", "100", tif=TimeInForce.IOC)

    assert result.order.status is OrderStatus.EXPIRED
    assert result.order.filled_quantity == 0
    assert engine.depth(SYMBOL, SELL) == [(D("101"), D("1"))]


def test_fok_without_enough_liquidity_expires_without_trading(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    limit(engine, "m", SELL, "1", "100")
    limit(engine, "m", SELL, "1", "101")
    limit(engine, "m", SELL, "5", "102")  # beyond the limit price: does not count
    recorder.clear()

    result = limit(engine, "t", BUY, "3", "101", tif=TimeInForce.FOK)

    assert result.order.status is OrderStatus.EXPIRED
    assert result.fills == ()
    assert [kind for kind, _ in recorder.kinds()] == [ExecType.NEW, ExecType.EXPIRED]
    assert engine.depth(SYMBOL, SELL) == [
        (D("100"), D("1")),
        (D("101"), D("1")),
        (D("102"), D("5")),
    ]
    assert engine.last_trade_price(SYMBOL) is None


def test_fok_with_enough_liquidity_fills_completely(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "1", "100")
    limit(engine, "m", SELL, "2", "101")

    result = limit(engine, "t", BUY, "2.5", "101", tif=TimeInForce.FOK)

    assert result.order.status is OrderStatus.FILLED
    assert fills(result) == [(D("100"), D("1")), (D("101"), D("1.5"))]
    assert engine.depth(SYMBOL, SELL) == [(D("101"), D("0.5"))]


def test_market_order_sweeps_levels_and_expires_the_rest(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "1", "100")
    limit(engine, "m", SELL, "1", "150")

    result = market(engine, "t", BUY, "3")

    assert fills(result) == [(D("100"), D("1")), (D("150"), D("1"))]
    assert result.order.status is OrderStatus.EXPIRED
    assert result.order.time_in_force is TimeInForce.IOC
    assert result.order.price is None
    assert engine.open_orders() == []


def test_market_order_fully_filled(engine: MatchingEngine) -> None:
    limit(engine, "m", BUY, "5", "100")
    result = market(engine, "t", SELL, "2")

    assert result.order.status is OrderStatus.FILLED
    assert engine.depth(SYMBOL, BUY) == [(D("100"), D("3"))]


def test_market_order_against_empty_book_expires(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    result = market(engine, "t", BUY, "1")

    assert result.order.status is OrderStatus.EXPIRED
    assert result.fills == ()
    assert [kind for kind, _ in recorder.kinds()] == [ExecType.NEW, ExecType.EXPIRED]


def test_market_fok_is_all_or_nothing(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "1", "100")

    assert market(engine, "t", BUY, "2", tif=TimeInForce.FOK).order.status is OrderStatus.EXPIRED
    assert engine.depth(SYMBOL, SELL) == [(D("100"), D("1"))]
    assert market(engine, "t", BUY, "1", tif=TimeInForce.FOK).order.status is OrderStatus.FILLED


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"quantity": D("0")}, "quantity"),
        ({"quantity": D("-1")}, "quantity"),
        ({"quantity": D("NaN")}, "quantity"),
        ({"quantity": D("Infinity")}, "quantity"),
        ({"price": None}, "price"),
        ({"price": D("0")}, "price"),
        ({"account_id": ""}, "account_id"),
        ({"symbol": ""}, "symbol"),
        ({"order_type": OrderType.MARKET}, "price"),
        ({"order_type": OrderType.MARKET, "price": None, "time_in_force": TimeInForce.GTC}, "GTC"),
    ],
)
def test_invalid_orders_are_rejected_without_side_effects(
    engine: MatchingEngine, recorder: Recorder, kwargs: dict[str, object], fragment: str
) -> None:
    request: dict[str, object] = {
        "account_id": "a",
        "symbol": SYMBOL,
        "side": BUY,
        "order_type": OrderType.LIMIT,
        "quantity": D("1"),
        "price": D("100"),
    }
    request.update(kwargs)
    with pytest.raises(ExchangeError) as excinfo:
        engine.place(**request)  # type: ignore[arg-type]

    assert error_code(excinfo) is ErrorCode.INVALID_ARGUMENT
    assert fragment in excinfo.value.message
    assert recorder.reports == []
    assert engine.sequence == 0
    assert limit(engine, "a", BUY, "1", "100").order.order_id == "X-1"


# -- cancel -----------------------------------------------------------------------


def test_cancel_by_order_id_reports_filled_quantity(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    order_id = limit(engine, "a", BUY, "3", "100").order.order_id
    limit(engine, "b", SELL, "1", "100")
    recorder.clear()

    canceled = engine.cancel("a", order_id=order_id)

    assert canceled.status is OrderStatus.CANCELED
    assert canceled.filled_quantity == D("1")
    assert canceled.remaining_quantity == 0
    assert recorder.kinds() == [(ExecType.CANCELED, order_id)]
    assert engine.get_order(order_id) is None
    assert engine.best_bid(SYMBOL) is None


def test_cancel_by_client_order_id(engine: MatchingEngine) -> None:
    limit(engine, "a", SELL, "1", "100", client_order_id="keep")
    order_id = limit(engine, "a", SELL, "1", "101", client_order_id="drop").order.order_id

    canceled = engine.cancel("a", client_order_id="drop", symbol=SYMBOL)

    assert canceled.order_id == order_id
    assert canceled.client_order_id == "drop"
    assert [o.client_order_id for o in engine.open_orders()] == ["keep"]


def test_cancel_by_another_account_is_not_found(engine: MatchingEngine) -> None:
    order_id = limit(engine, "a", BUY, "1", "100", client_order_id="c").order.order_id

    with pytest.raises(ExchangeError) as by_id:
        engine.cancel("intruder", order_id=order_id)
    with pytest.raises(ExchangeError) as by_client_id:
        engine.cancel("intruder", client_order_id="c")

    assert error_code(by_id) is ErrorCode.NOT_FOUND
    assert error_code(by_client_id) is ErrorCode.NOT_FOUND
    assert engine.get_order(order_id) is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"order_id": "X-999"},
        {"client_order_id": "nope"},
        {"order_id": "X-1", "symbol": "ETH-USD"},
        {"order_id": "X-1", "client_order_id": "other"},
    ],
)
def test_cancel_unknown_order_is_not_found(engine: MatchingEngine, kwargs: dict[str, str]) -> None:
    limit(engine, "a", BUY, "1", "100", client_order_id="c")

    with pytest.raises(ExchangeError) as excinfo:
        engine.cancel("a", **kwargs)

    assert error_code(excinfo) is ErrorCode.NOT_FOUND


def test_cancel_of_done_order_is_not_found(engine: MatchingEngine) -> None:
    filled = limit(engine, "a", BUY, "1", "100").order.order_id
    limit(engine, "b", SELL, "1", "100")
    canceled = limit(engine, "a", BUY, "1", "99").order.order_id
    engine.cancel("a", order_id=canceled)

    for order_id in (filled, canceled):
        with pytest.raises(ExchangeError) as excinfo:
            engine.cancel("a", order_id=order_id)
        assert error_code(excinfo) is ErrorCode.NOT_FOUND


def test_cancel_needs_an_order_reference(engine: MatchingEngine) -> None:
    with pytest.raises(ExchangeError) as excinfo:
        engine.cancel("a")
    assert error_code(excinfo) is ErrorCode.INVALID_ARGUMENT


# -- amend ------------------------------------------------------------------------


def test_amend_lower_quantity_keeps_priority(engine: MatchingEngine, recorder: Recorder) -> None:
    first = limit(engine, "a", BUY, "5", "100").order.order_id
    second = limit(engine, "b", BUY, "1", "100").order.order_id
    recorder.clear()

    result = engine.amend("a", order_id=first, quantity=D("2"))

    assert result.order.quantity == D("2")
    assert result.order.status is OrderStatus.NEW
    assert engine.queue(SYMBOL, BUY, D("100")) == [first, second]
    assert recorder.kinds() == [(ExecType.AMENDED, first)]
    taker = limit(engine, "t", SELL, "2", "100")
    assert engine.get_order(first) is None
    assert taker.order.status is OrderStatus.FILLED


def test_amend_higher_quantity_loses_priority(engine: MatchingEngine) -> None:
    first = limit(engine, "a", BUY, "1", "100").order.order_id
    second = limit(engine, "b", BUY, "1", "100").order.order_id

    engine.amend("a", order_id=first, quantity=D("2"))

    assert engine.queue(SYMBOL, BUY, D("100")) == [second, first]
    limit(engine, "t", SELL, "1", "100")
    assert engine.get_order(second) is None


def test_amend_price_loses_priority(engine: MatchingEngine) -> None:
    first = limit(engine, "a", SELL, "1", "100").order.order_id
    second = limit(engine, "b", SELL, "1", "100").order.order_id

    engine.amend("a", order_id=first, price=D("101"))
    assert engine.queue(SYMBOL, SELL, D("101")) == [first]
    engine.amend("a", order_id=first, price=D("100"))

    assert engine.queue(SYMBOL, SELL, D("100")) == [second, first]
    assert engine.queue(SYMBOL, SELL, D("101")) == []


def test_amend_keeps_filled_quantity_and_checks_it(engine: MatchingEngine) -> None:
    order_id = limit(engine, "a", BUY, "5", "100", client_order_id="c").order.order_id
    limit(engine, "b", SELL, "2", "100")

    for too_small in ("1", "2"):
        with pytest.raises(ExchangeError) as excinfo:
            engine.amend("a", client_order_id="c", quantity=D(too_small))
        assert error_code(excinfo) is ErrorCode.INVALID_ARGUMENT

    result = engine.amend("a", client_order_id="c", quantity=D("3"))
    assert result.order.order_id == order_id
    assert result.order.filled_quantity == D("2")
    assert result.order.remaining_quantity == D("1")
    assert result.order.status is OrderStatus.PARTIALLY_FILLED


def test_amend_to_a_crossing_price_trades_as_taker(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    maker = limit(engine, "m", SELL, "1", "101").order.order_id
    limit(engine, "m", SELL, "1", "103")
    order_id = limit(engine, "a", BUY, "3", "99").order.order_id
    recorder.clear()

    result = engine.amend("a", order_id=order_id, price=D("102"))

    assert fills(result) == [(D("101"), D("1"))]
    assert result.order.price == D("102")
    assert result.order.status is OrderStatus.PARTIALLY_FILLED
    assert recorder.kinds() == [
        (ExecType.AMENDED, order_id),
        (ExecType.TRADE, order_id),
        (ExecType.TRADE, maker),
    ]
    trades = [r for r in recorder.reports if r.exec_type is ExecType.TRADE]
    assert [r.maker for r in trades] == [False, True]
    assert engine.depth(SYMBOL, BUY) == [(D("102"), D("2"))]
    assert engine.best_ask(SYMBOL) == D("103")


def test_amend_that_fills_completely_leaves_the_book(engine: MatchingEngine) -> None:
    limit(engine, "m", SELL, "5", "101")
    order_id = limit(engine, "a", BUY, "2", "100", client_order_id="c").order.order_id

    result = engine.amend("a", order_id=order_id, price=D("101"))

    assert result.order.status is OrderStatus.FILLED
    assert engine.get_order(order_id) is None
    limit(engine, "a", BUY, "1", "90", client_order_id="c")  # the client id is free again


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, ErrorCode.INVALID_ARGUMENT),
        ({"quantity": D("0")}, ErrorCode.INVALID_ARGUMENT),
        ({"price": D("-1")}, ErrorCode.INVALID_ARGUMENT),
        ({"price": D("NaN")}, ErrorCode.INVALID_ARGUMENT),
    ],
)
def test_amend_rejects_bad_arguments(
    engine: MatchingEngine, kwargs: dict[str, Decimal], code: ErrorCode
) -> None:
    order_id = limit(engine, "a", BUY, "1", "100").order.order_id
    with pytest.raises(ExchangeError) as excinfo:
        engine.amend(
            "a", order_id=order_id, quantity=kwargs.get("quantity"), price=kwargs.get("price")
        )
    assert error_code(excinfo) is code


def test_amend_by_another_account_or_unknown_is_not_found(engine: MatchingEngine) -> None:
    order_id = limit(engine, "a", BUY, "1", "100").order.order_id
    for account, target in (("b", order_id), ("a", "X-404")):
        with pytest.raises(ExchangeError) as excinfo:
            engine.amend(account, order_id=target, quantity=D("0.5"))
        assert error_code(excinfo) is ErrorCode.NOT_FOUND
    order = engine.get_order(order_id)
    assert order is not None
    assert order.quantity == D("1")


# -- client order ids ---------------------------------------------------------------


def test_duplicate_client_order_id_among_open_orders(engine: MatchingEngine) -> None:
    limit(engine, "a", BUY, "1", "100", client_order_id="c")

    with pytest.raises(ExchangeError) as excinfo:
        limit(engine, "a", SELL, "1", "200", client_order_id="c")

    assert error_code(excinfo) is ErrorCode.ALREADY_EXISTS
    limit(engine, "b", BUY, "1", "100", client_order_id="c")  # other account: fine
    limit(engine, "a", BUY, "1", "100")  # empty client ids are never duplicates
    limit(engine, "a", BUY, "1", "100")


def test_client_order_id_is_free_after_cancel_or_non_resting_order(
    engine: MatchingEngine,
) -> None:
    order_id = limit(engine, "a", BUY, "1", "100", client_order_id="c").order.order_id
    engine.cancel("a", order_id=order_id)
    limit(engine, "a", BUY, "1", "100", client_order_id="c", tif=TimeInForce.IOC)
    limit(engine, "a", BUY, "1", "100", client_order_id="c")

    assert [o.client_order_id for o in engine.open_orders("a")] == ["c"]


# -- positions and reduce-only ----------------------------------------------------------


def test_positions_follow_fills(engine: MatchingEngine) -> None:
    limit(engine, "seller", SELL, "3", "100")
    limit(engine, "buyer", BUY, "2", "100")
    market(engine, "buyer", BUY, "0.5")

    assert engine.position("buyer", SYMBOL) == D("2.5")
    assert engine.position("seller", SYMBOL) == D("-2.5")
    assert engine.position("buyer", "ETH-USD") == 0


def test_same_account_orders_match_and_net_to_zero(engine: MatchingEngine) -> None:
    limit(engine, "a", SELL, "1", "100")
    result = limit(engine, "a", BUY, "1", "100")

    assert result.order.status is OrderStatus.FILLED
    assert engine.position("a", SYMBOL) == 0
    assert engine.last_trade_price(SYMBOL) == D("100")


def open_long(engine: MatchingEngine, account: str, quantity: str) -> None:
    limit(engine, "counterparty", SELL, quantity, "100")
    market(engine, account, BUY, quantity)
    assert engine.position(account, SYMBOL) == D(quantity)


def test_reduce_only_is_rejected_without_a_position_to_reduce(engine: MatchingEngine) -> None:
    with pytest.raises(ExchangeError) as flat:
        limit(engine, "a", SELL, "1", "100", reduce_only=True)
    open_long(engine, "a", "2")
    with pytest.raises(ExchangeError) as same_side:
        limit(engine, "a", BUY, "1", "100", reduce_only=True)

    assert error_code(flat) is ErrorCode.REDUCE_ONLY_REJECTED
    assert error_code(same_side) is ErrorCode.REDUCE_ONLY_REJECTED


def test_reduce_only_is_capped_at_the_position(engine: MatchingEngine) -> None:
    open_long(engine, "a", "2")

    result = limit(engine, "a", SELL, "5", "110", reduce_only=True)

    assert result.order.quantity == D("2")
    assert result.order.reduce_only is True
    market(engine, "b", BUY, "10")
    assert engine.position("a", SYMBOL) == 0


def test_reduce_only_market_order_closes_without_flipping(engine: MatchingEngine) -> None:
    open_long(engine, "a", "2")
    limit(engine, "b", BUY, "10", "90")

    result = market(engine, "a", SELL, "7", reduce_only=True)

    assert result.order.quantity == D("2")
    assert result.order.status is OrderStatus.FILLED
    assert engine.position("a", SYMBOL) == 0


def test_resting_reduce_only_orders_never_flip_the_position(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    open_long(engine, "a", "2")
    first = limit(engine, "a", SELL, "2", "110", reduce_only=True).order.order_id
    second = limit(engine, "a", SELL, "2", "111", reduce_only=True).order.order_id
    recorder.clear()

    result = market(engine, "b", BUY, "4")

    assert fills(result) == [(D("110"), D("2"))]
    assert engine.position("a", SYMBOL) == 0
    assert engine.open_orders("a") == []
    assert (ExecType.EXPIRED, second) in recorder.kinds()
    assert engine.get_order(first) is None


def test_reduce_only_order_shrinks_when_the_position_shrinks(
    engine: MatchingEngine, recorder: Recorder
) -> None:
    open_long(engine, "a", "3")
    order_id = limit(engine, "a", SELL, "3", "120", reduce_only=True).order.order_id
    limit(engine, "b", BUY, "1", "100")
    recorder.clear()

    market(engine, "a", SELL, "1")  # not reduce-only: the position goes to 2

    order = engine.get_order(order_id)
    assert order is not None
    assert order.quantity == D("2")
    assert (ExecType.AMENDED, order_id) in recorder.kinds()
    assert engine.queue(SYMBOL, SELL, D("120")) == [order_id]


def test_fok_counts_only_what_reduce_only_makers_may_trade(engine: MatchingEngine) -> None:
    open_long(engine, "a", "2")
    limit(engine, "a", SELL, "2", "110", reduce_only=True)
    limit(engine, "a", SELL, "2", "111", reduce_only=True)

    result = limit(engine, "b", BUY, "4", "111", tif=TimeInForce.FOK)

    assert result.order.status is OrderStatus.EXPIRED
    assert result.fills == ()
    assert engine.position("a", SYMBOL) == D("2")
    assert len(engine.open_orders("a")) == 2


def test_reduce_only_amend_is_capped_at_the_position(engine: MatchingEngine) -> None:
    open_long(engine, "a", "2")
    order_id = limit(engine, "a", SELL, "1", "110", reduce_only=True).order.order_id

    result = engine.amend("a", order_id=order_id, quantity=D("9"))

    assert result.order.quantity == D("2")


# -- reports, clock, memory ----------------------------------------------------------------


def test_reports_have_strictly_increasing_sequence_and_clock_time() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    ticks = iter(range(1000))
    engine = MatchingEngine(clock=lambda: start + timedelta(seconds=next(ticks)))
    recorder = Recorder(engine)

    limit(engine, "m", SELL, "1", "100")
    limit(engine, "m", SELL, "1", "101")
    order_id = limit(engine, "t", BUY, "3", "101").order.order_id
    engine.amend("t", order_id=order_id, quantity=D("2.5"))
    engine.cancel("t", order_id=order_id)
    market(engine, "t", SELL, "1")

    sequences = [r.sequence for r in recorder.reports]
    assert sequences == list(range(1, len(sequences) + 1))
    assert engine.sequence == sequences[-1]
    times = [r.time for r in recorder.reports]
    assert times == sorted(times)
    assert times[0] == start
    assert recorder.reports[0].order.created_at == start


def test_lookup_tables_are_emptied_when_orders_finish(engine: MatchingEngine) -> None:
    open_long(engine, "a", "1")
    limit(engine, "a", SELL, "1", "105", client_order_id="ro", reduce_only=True)
    limit(engine, "b", BUY, "1", "99", client_order_id="bid")
    limit(engine, "c", SELL, "1", "101", client_order_id="ask")
    market(engine, "d", BUY, "5")
    engine.cancel("b", client_order_id="bid")

    assert engine.open_orders() == []
    assert engine._orders == {}
    assert engine._client_ids == {}
    assert engine._reduce_only == {}
    assert engine._books == {}


def test_returned_orders_are_copies(engine: MatchingEngine) -> None:
    result = limit(engine, "a", BUY, "1", "100")
    result.order.quantity = D("1000")
    engine.open_orders()[0].price = D("1")

    order = engine.get_order(result.order.order_id)
    assert order is not None
    assert (order.quantity, order.price) == (D("1"), D("100"))


def test_unsubscribed_listener_hears_nothing(engine: MatchingEngine) -> None:
    heard: list[ExecutionReport] = []
    unsubscribe = engine.subscribe(heard.append)
    limit(engine, "a", BUY, "1", "100")
    unsubscribe()
    limit(engine, "a", BUY, "1", "100")

    assert len(heard) == 1


def test_arithmetic_is_exact_at_full_width(engine: MatchingEngine) -> None:
    big = "123456789012345678.123456789012345678"
    tiny = "0.000000000000000001"
    limit(engine, "m", SELL, big, "1")
    limit(engine, "m", SELL, tiny, "1")

    result = limit(engine, "t", BUY, "999999999999999999.999999999999999999", "1")

    # The default 28-digit context would round this 36-digit sum.
    total = D("123456789012345678.123456789012345679")
    assert result.order.filled_quantity == total
    assert engine.position("t", SYMBOL) == total
    rest = D("876543210987654321.87654321098765432")
    assert result.order.remaining_quantity == rest  # computed outside the engine, still exact
    assert engine.depth(SYMBOL, BUY) == [(D("1"), rest)]
