"""The reference exchange's matching engine: order books with price-time priority.

Pure and synchronous (no gRPC, no asyncio) so that it can be tested exhaustively
and driven directly by the gateway's tests. One :class:`MatchingEngine` holds a
book per symbol and a net position per (account, symbol).

Rules, in short:

* LIMIT orders are GTC (the rest rests), IOC (the rest expires) or FOK (fills
  completely at once or expires without trading). MARKET orders are IOC (or
  FOK) and never rest; against an empty book they expire.
* Trades execute at the resting (maker) order's price; within a price level,
  first in, first out.
* Every state change is published as an :class:`ExecutionReport` with a
  strictly increasing sequence number: NEW when an order is accepted, TRADE for
  the taker and the maker of every fill, then CANCELED, EXPIRED or AMENDED.
* No self-trade prevention: two orders of one account may match each other.
  The gateway in front of the exchange does STP; the engine stays simple.
* Reduce-only orders must reduce the account's position when placed, and
  their quantity is capped at the position size at that moment. Several
  reduce-only orders may together exceed the position; as fills shrink it, the
  resting ones are trimmed (AMENDED) or dropped (EXPIRED) so that the position
  never flips.
* Only open orders are kept. Filled, cancelled and expired orders leave every
  lookup table, so memory follows the open orders, not the history.

Arithmetic runs in an exact decimal context: a sum that would need rounding
raises instead of silently losing digits. Quantities and prices are never
floats.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import ParamSpec, TypeVar

__all__ = [
    "ErrorCode",
    "ExchangeError",
    "ExecType",
    "ExecutionReport",
    "Fill",
    "MatchingEngine",
    "Order",
    "OrderResult",
    "OrderStatus",
    "OrderType",
    "Side",
    "TimeInForce",
]


# Only additions and subtractions happen here; with this precision they are
# exact, and Inexact is trapped so that a rounding would raise, never pass.
_EXACT = Context(prec=200, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(enum.StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class ExecType(enum.StrEnum):
    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    AMENDED = "AMENDED"


class ErrorCode(enum.StrEnum):
    """Why the engine refused a request; the gRPC layer maps each to a status code."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    REDUCE_ONLY_REJECTED = "REDUCE_ONLY_REJECTED"


class ExchangeError(Exception):
    """A refused request. Nothing changed in the engine when this is raised."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True)
class Order:
    """An order's state. The engine hands out copies; changing one changes nothing."""

    order_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: Decimal | None
    quantity: Decimal
    filled_quantity: Decimal
    status: OrderStatus
    reduce_only: bool
    created_at: datetime

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    @property
    def remaining_quantity(self) -> Decimal:
        """Quantity still working: ``quantity - filled`` while open, zero once done."""
        if not self.is_open:
            return Decimal(0)
        with localcontext(_EXACT):
            return self.quantity - self.filled_quantity

    def copy(self) -> Order:
        return dataclasses.replace(self)


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: str
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The order after a place or amend, and the fills it took as the taker."""

    order: Order
    fills: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """One published state change; ``order`` is the order as it was right after it."""

    sequence: int
    exec_type: ExecType
    order: Order
    time: datetime
    trade_id: str = ""
    last_price: Decimal | None = None
    last_quantity: Decimal | None = None
    maker: bool = False


Listener = Callable[[ExecutionReport], None]
Clock = Callable[[], datetime]

ORDER_ID_PREFIX = "X-"
TRADE_ID_PREFIX = "T-"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exact(method: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(_EXACT):
            return method(*args, **kwargs)

    return wrapper


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _signed(side: Side, quantity: Decimal) -> Decimal:
    return quantity if side is Side.BUY else -quantity


def _reducible(side: Side, position: Decimal) -> Decimal:
    """How much an order on ``side`` can trade before it would flip ``position``."""
    if side is Side.SELL:
        return max(position, Decimal(0))
    return max(-position, Decimal(0))


class _BookSide:
    """One side of a book: price levels, each a FIFO queue of resting orders."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self._levels: dict[Decimal, OrderedDict[str, Order]] = {}
        self._prices: list[Decimal] = []  # ascending

    def __bool__(self) -> bool:
        return bool(self._prices)

    def best_price(self) -> Decimal | None:
        if not self._prices:
            return None
        return self._prices[-1] if self.side is Side.BUY else self._prices[0]

    def _prices_best_first(self) -> Iterator[Decimal]:
        return reversed(self._prices) if self.side is Side.BUY else iter(self._prices)

    def add(self, order: Order) -> None:
        assert order.price is not None
        level = self._levels.get(order.price)
        if level is None:
            level = self._levels[order.price] = OrderedDict()
            bisect.insort(self._prices, order.price)
        level[order.order_id] = order

    def remove(self, order: Order) -> None:
        assert order.price is not None
        level = self._levels[order.price]
        del level[order.order_id]
        if not level:
            del self._levels[order.price]
            del self._prices[bisect.bisect_left(self._prices, order.price)]

    def crossing(self, limit: Decimal | None) -> Iterator[Order]:
        """Resting orders a taker with price ``limit`` (None: market) can trade with, best first."""
        for price in self._prices_best_first():
            if limit is not None and (price > limit if self.side is Side.SELL else price < limit):
                return
            yield from self._levels[price].values()

    def depth(self) -> list[tuple[Decimal, Decimal]]:
        return [
            (price, sum((o.remaining_quantity for o in self._levels[price].values()), Decimal(0)))
            for price in self._prices_best_first()
        ]

    def queue(self, price: Decimal) -> list[str]:
        level = self._levels.get(price)
        return list(level) if level is not None else []


class _Book:
    def __init__(self) -> None:
        self.bids = _BookSide(Side.BUY)
        self.asks = _BookSide(Side.SELL)

    def __bool__(self) -> bool:
        return bool(self.bids) or bool(self.asks)

    def side(self, side: Side) -> _BookSide:
        return self.bids if side is Side.BUY else self.asks


class MatchingEngine:
    """In-memory order books for any number of symbols, with positions and a report stream.

    Not thread-safe: drive it from one thread (the exchange's event loop).
    Listeners added with :meth:`subscribe` receive every report once the
    operation that produced it has completed.
    """

    def __init__(self, *, clock: Clock = _utc_now) -> None:
        self._clock = clock
        self._books: dict[str, _Book] = {}
        self._orders: dict[str, Order] = {}  # resting orders by order id
        self._client_ids: dict[tuple[str, str], str] = {}  # (account, client id) -> order id
        self._reduce_only: dict[tuple[str, str], dict[str, Order]] = {}  # (account, symbol)
        self._positions: dict[tuple[str, str], Decimal] = {}
        self._last_trade_prices: dict[str, Decimal] = {}
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._sequence = 0
        self._pending: list[ExecutionReport] = []
        self._listeners: list[Listener] = []

    # -- queries ------------------------------------------------------------------

    def position(self, account_id: str, symbol: str) -> Decimal:
        """Net position: bought minus sold."""
        return self._positions.get((account_id, symbol), Decimal(0))

    def last_trade_price(self, symbol: str) -> Decimal | None:
        return self._last_trade_prices.get(symbol)

    @property
    def sequence(self) -> int:
        """Sequence number of the last published report (0 before the first)."""
        return self._sequence

    def get_order(self, order_id: str) -> Order | None:
        """An open order by exchange order id."""
        order = self._orders.get(order_id)
        return order.copy() if order is not None else None

    def open_orders(self, account_id: str = "", symbol: str = "") -> list[Order]:
        """Open orders in the order they were placed; empty filters match everything."""
        return [
            order.copy()
            for order in self._orders.values()
            if (not account_id or order.account_id == account_id)
            and (not symbol or order.symbol == symbol)
        ]

    def best_bid(self, symbol: str) -> Decimal | None:
        book = self._books.get(symbol)
        return book.bids.best_price() if book is not None else None

    def best_ask(self, symbol: str) -> Decimal | None:
        book = self._books.get(symbol)
        return book.asks.best_price() if book is not None else None

    @_exact
    def depth(self, symbol: str, side: Side) -> list[tuple[Decimal, Decimal]]:
        """(price, total remaining quantity) per level, best price first."""
        book = self._books.get(symbol)
        return book.side(side).depth() if book is not None else []

    def queue(self, symbol: str, side: Side, price: Decimal) -> list[str]:
        """Order ids resting at one price level, first in line first."""
        book = self._books.get(symbol)
        return book.side(side).queue(price) if book is not None else []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every future report; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- commands -----------------------------------------------------------------

    @_exact
    def place(
        self,
        *,
        account_id: str,
        symbol: str,
        side: Side,
        order_type: OrderType,
        quantity: Decimal,
        price: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        client_order_id: str = "",
        reduce_only: bool = False,
    ) -> OrderResult:
        """Accept an order, match it as the taker, then rest or expire what is left.

        ``time_in_force`` defaults to GTC for limit orders and IOC for market
        orders; a market order cannot be GTC.
        """
        if not account_id:
            raise ExchangeError(ErrorCode.INVALID_ARGUMENT, "account_id is required")
        if not symbol:
            raise ExchangeError(ErrorCode.INVALID_ARGUMENT, "symbol is required")
        _check_positive("quantity", quantity)
        if order_type is OrderType.LIMIT:
            if price is None:
                raise ExchangeError(ErrorCode.INVALID_ARGUMENT, "price is required for LIMIT")
            _check_positive("price", price)
            tif = time_in_force or TimeInForce.GTC
        else:
            if price is not None:
                raise ExchangeError(ErrorCode.INVALID_ARGUMENT, "price must be empty for MARKET")
            tif = time_in_force or TimeInForce.IOC
            if tif is TimeInForce.GTC:
                raise ExchangeError(
                    ErrorCode.INVALID_ARGUMENT, "time_in_force GTC is not allowed for MARKET"
                )
        if client_order_id and (account_id, client_order_id) in self._client_ids:
            raise ExchangeError(
                ErrorCode.ALREADY_EXISTS,
                f"client_order_id {client_order_id!r} is already used by an open order",
            )
        if reduce_only:
            allowed = _reducible(side, self.position(account_id, symbol))
            if allowed == 0:
                raise ExchangeError(
                    ErrorCode.REDUCE_ONLY_REJECTED,
                    f"reduce-only {side} would not reduce the {symbol} position",
                )
            quantity = min(quantity, allowed)

        now = self._clock()
        order = Order(
            order_id=f"{ORDER_ID_PREFIX}{next(self._order_ids)}",
            client_order_id=client_order_id,
            account_id=account_id,
            symbol=symbol,
            side=side,
            order_type=order_type,
            time_in_force=tif,
            price=price,
            quantity=quantity,
            filled_quantity=Decimal(0),
            status=OrderStatus.NEW,
            reduce_only=reduce_only,
            created_at=now,
        )
        self._report(ExecType.NEW, order, now)
        fills = self._take(order, now)
        if order.is_open:
            if tif is TimeInForce.GTC:
                self._rest(order)
            else:
                order.status = OrderStatus.EXPIRED
                self._report(ExecType.EXPIRED, order, now)
        return self._finish(OrderResult(order.copy(), fills))

    @_exact
    def cancel(
        self,
        account_id: str,
        *,
        order_id: str = "",
        client_order_id: str = "",
        symbol: str = "",
    ) -> Order:
        """Cancel an open order of ``account_id``; returns it as CANCELED.

        Another account's order is reported as not found, like an unknown one.
        """
        order = self._find(account_id, order_id, client_order_id, symbol)
        self._unrest(order)
        order.status = OrderStatus.CANCELED
        self._report(ExecType.CANCELED, order, self._clock())
        return self._finish(order.copy())

    @_exact
    def amend(
        self,
        account_id: str,
        *,
        order_id: str = "",
        client_order_id: str = "",
        symbol: str = "",
        quantity: Decimal | None = None,
        price: Decimal | None = None,
    ) -> OrderResult:
        """Change a resting limit order's total quantity and/or price.

        Lowering the quantity at the same price keeps the order's place in the
        queue. A new price or a larger quantity sends it to the back of its
        level; a new price that crosses the book trades at once as the taker.
        A reduce-only order's remaining quantity stays capped at the position.
        """
        if quantity is None and price is None:
            raise ExchangeError(ErrorCode.INVALID_ARGUMENT, "quantity or price is required")
        if quantity is not None:
            _check_positive("quantity", quantity)
        if price is not None:
            _check_positive("price", price)
        order = self._find(account_id, order_id, client_order_id, symbol)
        assert order.price is not None  # only limit orders rest
        new_quantity = order.quantity if quantity is None else quantity
        new_price = order.price if price is None else price
        if new_quantity <= order.filled_quantity:
            raise ExchangeError(
                ErrorCode.INVALID_ARGUMENT,
                f"quantity must exceed the filled quantity {order.filled_quantity}",
            )
        if order.reduce_only:
            position = self.position(order.account_id, order.symbol)
            new_quantity = min(
                new_quantity, order.filled_quantity + _reducible(order.side, position)
            )

        now = self._clock()
        fills: tuple[Fill, ...] = ()
        if new_price == order.price and new_quantity <= order.quantity:
            order.quantity = new_quantity
            self._report(ExecType.AMENDED, order, now)
        else:
            self._unrest(order)
            order.quantity, order.price = new_quantity, new_price
            self._report(ExecType.AMENDED, order, now)
            fills = self._take(order, now)
            if order.is_open:
                self._rest(order)
        return self._finish(OrderResult(order.copy(), fills))

    # -- internals ----------------------------------------------------------------

    def _find(self, account_id: str, order_id: str, client_order_id: str, symbol: str) -> Order:
        if not account_id:
            raise ExchangeError(ErrorCode.INVALID_ARGUMENT, "account_id is required")
        if not order_id and not client_order_id:
            raise ExchangeError(
                ErrorCode.INVALID_ARGUMENT, "order_id or client_order_id is required"
            )
        if not order_id:
            order_id = self._client_ids.get((account_id, client_order_id), "")
        order = self._orders.get(order_id)
        if (
            order is None
            or order.account_id != account_id
            or (client_order_id and order.client_order_id != client_order_id)
            or (symbol and order.symbol != symbol)
        ):
            name = f"order_id {order_id!r}" if order_id else f"client_order_id {client_order_id!r}"
            raise ExchangeError(
                ErrorCode.NOT_FOUND, f"no open order with {name} for account {account_id!r}"
            )
        return order

    def _take(self, taker: Order, now: datetime) -> tuple[Fill, ...]:
        """Match ``taker`` against the opposite side of its book (FOK: all or nothing)."""
        plan = self._plan(taker)
        planned = sum((quantity for _, quantity in plan), Decimal(0))
        if taker.time_in_force is TimeInForce.FOK and planned < taker.remaining_quantity:
            return ()
        fills = []
        touched: dict[str, None] = {taker.account_id: None}
        for maker, quantity in plan:
            fills.append(self._trade(taker, maker, quantity, now))
            touched[maker.account_id] = None
        if fills:
            for account_id in touched:
                self._trim_reduce_only(account_id, taker.symbol, now)
        return tuple(fills)

    def _plan(self, taker: Order) -> list[tuple[Order, Decimal]]:
        """Which resting orders ``taker`` trades with, and how much, without changing anything.

        Follows the positions the trades would produce, so that a resting
        reduce-only order is only planned for what it may still trade.
        """
        book = self._books.get(taker.symbol)
        if book is None:
            return []
        positions: dict[str, Decimal] = {}
        remaining = taker.remaining_quantity
        plan: list[tuple[Order, Decimal]] = []
        for maker in book.side(taker.side.opposite).crossing(taker.price):
            if remaining == 0:
                break
            quantity = min(remaining, maker.remaining_quantity)
            if maker.reduce_only:
                position = positions.get(
                    maker.account_id, self.position(maker.account_id, maker.symbol)
                )
                quantity = min(quantity, _reducible(maker.side, position))
                if quantity == 0:
                    continue
            plan.append((maker, quantity))
            remaining -= quantity
            for order in (maker, taker):
                position = positions.get(
                    order.account_id, self.position(order.account_id, order.symbol)
                )
                positions[order.account_id] = position + _signed(order.side, quantity)
        return plan

    def _trade(self, taker: Order, maker: Order, quantity: Decimal, now: datetime) -> Fill:
        assert maker.price is not None
        fill = Fill(f"{TRADE_ID_PREFIX}{next(self._trade_ids)}", maker.price, quantity)
        for order, is_maker in ((taker, False), (maker, True)):
            order.filled_quantity += quantity
            order.status = (
                OrderStatus.FILLED
                if order.filled_quantity == order.quantity
                else OrderStatus.PARTIALLY_FILLED
            )
            key = (order.account_id, order.symbol)
            position = self._positions.get(key, Decimal(0)) + _signed(order.side, quantity)
            if position:
                self._positions[key] = position
            else:
                self._positions.pop(key, None)
            self._report(
                ExecType.TRADE,
                order,
                now,
                trade_id=fill.trade_id,
                last_price=fill.price,
                last_quantity=quantity,
                maker=is_maker,
            )
        self._last_trade_prices[taker.symbol] = fill.price
        if not maker.is_open:
            self._unrest(maker)
        return fill

    def _trim_reduce_only(self, account_id: str, symbol: str, now: datetime) -> None:
        """Shrink or drop resting reduce-only orders that would now flip the position."""
        orders = self._reduce_only.get((account_id, symbol))
        if not orders:
            return
        position = self.position(account_id, symbol)
        for order in list(orders.values()):
            allowed = _reducible(order.side, position)
            if allowed == 0:
                self._unrest(order)
                order.status = OrderStatus.EXPIRED
                self._report(ExecType.EXPIRED, order, now)
            elif order.remaining_quantity > allowed:
                order.quantity = order.filled_quantity + allowed
                self._report(ExecType.AMENDED, order, now)

    def _rest(self, order: Order) -> None:
        self._books.setdefault(order.symbol, _Book()).side(order.side).add(order)
        self._orders[order.order_id] = order
        if order.client_order_id:
            self._client_ids[(order.account_id, order.client_order_id)] = order.order_id
        if order.reduce_only:
            key = (order.account_id, order.symbol)
            self._reduce_only.setdefault(key, {})[order.order_id] = order

    def _unrest(self, order: Order) -> None:
        book = self._books[order.symbol]
        book.side(order.side).remove(order)
        if not book:
            del self._books[order.symbol]
        del self._orders[order.order_id]
        if order.client_order_id:
            del self._client_ids[(order.account_id, order.client_order_id)]
        if order.reduce_only:
            key = (order.account_id, order.symbol)
            del self._reduce_only[key][order.order_id]
            if not self._reduce_only[key]:
                del self._reduce_only[key]

    def _report(
        self,
        exec_type: ExecType,
        order: Order,
        now: datetime,
        *,
        trade_id: str = "",
        last_price: Decimal | None = None,
        last_quantity: Decimal | None = None,
        maker: bool = False,
    ) -> None:
        self._sequence += 1
        self._pending.append(
            ExecutionReport(
                sequence=self._sequence,
                exec_type=exec_type,
                order=order.copy(),
                time=now,
                trade_id=trade_id,
                last_price=last_price,
                last_quantity=last_quantity,
                maker=maker,
            )
        )

    def _finish(self, result: _R) -> _R:
        """Publish the reports of the operation that just completed, then return its result."""
        reports, self._pending = self._pending, []
        for report in reports:
            for listener in list(self._listeners):
                listener(report)
        return result


def _check_positive(name: str, value: Decimal) -> None:
    if not value.is_finite() or value <= 0:
        raise ExchangeError(ErrorCode.INVALID_ARGUMENT, f"{name} must be a positive decimal")
