"""Random order flow against the matching engine: the book's invariants always hold."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.exchange import (
    ExchangeError,
    ExecType,
    ExecutionReport,
    MatchingEngine,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

SYMBOLS = ("BTC-USD", "ETH-USD")
ACCOUNTS = ("a", "b")
PRICES = tuple(Decimal(p) for p in ("99", "99.5", "100", "100.5", "101"))
QUANTITIES = tuple(Decimal(q) for q in ("0.1", "0.5", "1", "1.5", "3"))


@dataclass(frozen=True)
class Place:
    account: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    price: Decimal
    tif: TimeInForce | None
    reduce_only: bool
    client_order_id: str


@dataclass(frozen=True)
class Cancel:
    pick: int
    by_client_id: bool


@dataclass(frozen=True)
class Amend:
    pick: int
    quantity: Decimal | None
    price: Decimal | None


places = st.builds(
    Place,
    account=st.sampled_from(ACCOUNTS),
    symbol=st.sampled_from(SYMBOLS[:1] * 4 + SYMBOLS[1:]),
    side=st.sampled_from(Side),
    order_type=st.sampled_from([OrderType.LIMIT] * 3 + [OrderType.MARKET]),
    quantity=st.sampled_from(QUANTITIES),
    price=st.sampled_from(PRICES),
    tif=st.sampled_from([None, None, None, TimeInForce.IOC, TimeInForce.FOK]),
    reduce_only=st.sampled_from([False, False, True]),
    client_order_id=st.sampled_from(["", "", "c1", "c2"]),
)
cancels = st.builds(Cancel, pick=st.integers(0, 50), by_client_id=st.booleans())
amends = st.builds(
    Amend,
    pick=st.integers(0, 50),
    quantity=st.none() | st.sampled_from(QUANTITIES),
    price=st.none() | st.sampled_from(PRICES),
)
# Mostly placements, so that books fill up and trade; then cancels, then amends.
action = st.tuples(st.integers(0, 9), places, cancels, amends).map(
    lambda t: t[1] if t[0] < 7 else t[2] if t[0] < 9 else t[3]
)
actions = st.lists(action, min_size=10, max_size=80)


class Ledger:
    """What the reports say happened, checked against the engine after every step."""

    def __init__(self, engine: MatchingEngine) -> None:
        self.engine = engine
        self.last_sequence = 0
        self.latest: dict[str, Order] = {}
        self.traded: dict[str, Decimal] = defaultdict(Decimal)
        self.positions: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self.bought: dict[str, Decimal] = defaultdict(Decimal)
        self.sold: dict[str, Decimal] = defaultdict(Decimal)
        self.trade_legs: dict[str, list[ExecutionReport]] = defaultdict(list)
        engine.subscribe(self.record)

    def record(self, report: ExecutionReport) -> None:
        assert report.sequence == self.last_sequence + 1
        self.last_sequence = report.sequence
        order = report.order
        self.latest[order.order_id] = order
        if report.exec_type is not ExecType.TRADE:
            return
        assert report.last_quantity is not None
        assert report.last_quantity > 0
        quantity = report.last_quantity
        self.traded[order.order_id] += quantity
        totals = self.bought if order.side is Side.BUY else self.sold
        totals[order.symbol] += quantity
        legs = self.trade_legs[report.trade_id]
        legs.append(report)
        assert len(legs) <= 2
        if len(legs) == 2:
            self.settle(legs)

    def settle(self, legs: list[ExecutionReport]) -> None:
        taker, maker = legs
        assert (taker.maker, maker.maker) == (False, True)
        assert taker.order.side is not maker.order.side
        assert taker.last_price == maker.last_price == maker.order.price
        before = dict(self.positions)
        for leg in legs:
            assert leg.last_quantity is not None
            key = (leg.order.account_id, leg.order.symbol)
            sign = 1 if leg.order.side is Side.BUY else -1
            self.positions[key] += sign * leg.last_quantity
        for leg in legs:
            if leg.order.reduce_only:
                key = (leg.order.account_id, leg.order.symbol)
                old, new = before.get(key, Decimal(0)), self.positions[key]
                assert old != 0
                assert (new >= 0) if old > 0 else (new <= 0), "reduce-only flipped a position"

    def check(self) -> None:
        engine = self.engine
        assert engine.sequence == self.last_sequence
        for symbol in SYMBOLS:
            bid, ask = engine.best_bid(symbol), engine.best_ask(symbol)
            assert bid is None or ask is None or bid < ask, f"crossed book {bid} >= {ask}"
            assert self.bought[symbol] == self.sold[symbol]
            assert sum(engine.position(a, symbol) for a in ACCOUNTS) == 0
            for account in ACCOUNTS:
                assert engine.position(account, symbol) == self.positions[(account, symbol)]
        open_ids = {order.order_id for order in engine.open_orders()}
        for order_id, order in self.latest.items():
            assert self.traded[order_id] == order.filled_quantity
            assert 0 <= order.filled_quantity <= order.quantity
            if order.status is OrderStatus.FILLED:
                assert order.filled_quantity == order.quantity
            if order.is_open:
                assert order.filled_quantity + order.remaining_quantity == order.quantity
                assert order_id in open_ids
                assert order.time_in_force is TimeInForce.GTC
                assert order.order_type is OrderType.LIMIT
            else:
                assert order_id not in open_ids
                assert engine.get_order(order_id) is None
        for order in engine.open_orders():
            assert order == self.latest[order.order_id]
            if order.reduce_only:
                position = engine.position(order.account_id, order.symbol)
                reducing = position < 0 if order.side is Side.BUY else position > 0
                assert reducing
                assert order.remaining_quantity <= abs(position)
        assert len(engine._orders) == len(open_ids)
        assert len(engine._client_ids) == sum(1 for o in engine.open_orders() if o.client_order_id)


def apply(engine: MatchingEngine, action: Place | Cancel | Amend) -> None:
    if isinstance(action, Place):
        market = action.order_type is OrderType.MARKET
        side = action.side
        position = engine.position(action.account, action.symbol)
        if action.reduce_only and position:
            # Mostly reducing, so that reduce-only orders rest and trade; when
            # flat they are still sent, and must be refused.
            side = Side.SELL if position > 0 else Side.BUY
        engine.place(
            account_id=action.account,
            symbol=action.symbol,
            side=side,
            order_type=action.order_type,
            quantity=action.quantity,
            price=None if market else action.price,
            time_in_force=action.tif,
            client_order_id=action.client_order_id,
            reduce_only=action.reduce_only,
        )
        return
    open_orders = engine.open_orders()
    if not open_orders:
        return
    target = open_orders[action.pick % len(open_orders)]
    reference = (
        {"client_order_id": target.client_order_id}
        if isinstance(action, Cancel) and action.by_client_id and target.client_order_id
        else {"order_id": target.order_id}
    )
    if isinstance(action, Cancel):
        canceled = engine.cancel(target.account_id, **reference)
        assert canceled.status is OrderStatus.CANCELED
        assert canceled.filled_quantity == target.filled_quantity
    else:
        engine.amend(target.account_id, **reference, quantity=action.quantity, price=action.price)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_random_order_flow_keeps_the_book_consistent(
    steps: list[Place | Cancel | Amend],
) -> None:
    engine = MatchingEngine()
    ledger = Ledger(engine)
    for action in steps:
        before = engine.sequence
        try:
            apply(engine, action)
        except ExchangeError:
            assert engine.sequence == before, "a refused request published reports"
        ledger.check()
