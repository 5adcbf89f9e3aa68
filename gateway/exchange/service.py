"""gRPC face of the reference exchange: ``pretrade.v1.OrderEntry`` and ``ExecutionFeed``.

The exchange validates every request itself, as a real venue would: the
gateway in front of it is not trusted to have done so. Malformed input is
INVALID_ARGUMENT with a message that names the field; engine refusals map to
NOT_FOUND, ALREADY_EXISTS and FAILED_PRECONDITION.

Execution streams are live: a subscriber sees the reports published after it
subscribed (initial metadata is sent once the subscription is in place, so a
client can await it before acting). Each subscriber has a bounded queue; one
that falls further behind than the bound is disconnected with
RESOURCE_EXHAUSTED instead of letting the queue grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc
from gateway.decimals import DecimalFormatError, format_decimal, parse_positive_decimal
from gateway.exchange.book import (
    ErrorCode,
    ExchangeError,
    ExecType,
    ExecutionReport,
    Fill,
    MatchingEngine,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

__all__ = [
    "DEFAULT_STREAM_QUEUE_SIZE",
    "MAX_ID_LENGTH",
    "ExchangeServer",
    "ReferenceExchange",
    "add_to_server",
    "serve_exchange",
    "start_exchange_server",
]

DEFAULT_STREAM_QUEUE_SIZE = 10_000
MAX_ID_LENGTH = 128

_Context = grpc.aio.ServicerContext[Any, Any]
_T = TypeVar("_T")

_STATUS_CODES = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.REDUCE_ONLY_REJECTED: grpc.StatusCode.FAILED_PRECONDITION,
}

_SIDES: dict[int, Side] = {pb.SIDE_BUY: Side.BUY, pb.SIDE_SELL: Side.SELL}
_ORDER_TYPES: dict[int, OrderType] = {
    pb.ORDER_TYPE_LIMIT: OrderType.LIMIT,
    pb.ORDER_TYPE_MARKET: OrderType.MARKET,
}
_TIMES_IN_FORCE: dict[int, TimeInForce | None] = {
    pb.TIME_IN_FORCE_UNSPECIFIED: None,
    pb.TIME_IN_FORCE_GTC: TimeInForce.GTC,
    pb.TIME_IN_FORCE_IOC: TimeInForce.IOC,
    pb.TIME_IN_FORCE_FOK: TimeInForce.FOK,
}
_PB_SIDES = {Side.BUY: pb.SIDE_BUY, Side.SELL: pb.SIDE_SELL}
_PB_ORDER_TYPES = {OrderType.LIMIT: pb.ORDER_TYPE_LIMIT, OrderType.MARKET: pb.ORDER_TYPE_MARKET}
_PB_STATUSES = {
    OrderStatus.NEW: pb.ORDER_STATUS_NEW,
    OrderStatus.PARTIALLY_FILLED: pb.ORDER_STATUS_PARTIALLY_FILLED,
    OrderStatus.FILLED: pb.ORDER_STATUS_FILLED,
    OrderStatus.CANCELED: pb.ORDER_STATUS_CANCELED,
    OrderStatus.EXPIRED: pb.ORDER_STATUS_EXPIRED,
}
_PB_EXEC_TYPES = {
    ExecType.NEW: pb.EXEC_TYPE_NEW,
    ExecType.TRADE: pb.EXEC_TYPE_TRADE,
    ExecType.CANCELED: pb.EXEC_TYPE_CANCELED,
    ExecType.EXPIRED: pb.EXEC_TYPE_EXPIRED,
    ExecType.AMENDED: pb.EXEC_TYPE_AMENDED,
}


class _InvalidRequestError(Exception):
    pass


@dataclass(eq=False)
class _Subscriber:
    account_id: str
    symbol: str
    queue: asyncio.Queue[pb.ExecutionReport]
    overflowed: bool = False

    def wants(self, report: ExecutionReport) -> bool:
        return (not self.account_id or report.order.account_id == self.account_id) and (
            not self.symbol or report.order.symbol == self.symbol
        )


class ReferenceExchange(pb_grpc.OrderEntryServicer, pb_grpc.ExecutionFeedServicer):
    """The default upstream behind the gateway: a :class:`MatchingEngine` served over gRPC.

    ``engine`` is public so that tests and the gateway can inspect the books.
    Must run on one event loop: the engine is synchronous and not thread-safe.
    The requested leverage is accepted and ignored (the engine keeps positions,
    not margin).
    """

    def __init__(
        self,
        engine: MatchingEngine | None = None,
        *,
        stream_queue_size: int = DEFAULT_STREAM_QUEUE_SIZE,
    ) -> None:
        if stream_queue_size < 1:
            raise ValueError("stream_queue_size must be at least 1")
        self.engine = engine if engine is not None else MatchingEngine()
        self._stream_queue_size = stream_queue_size
        self._subscribers: set[_Subscriber] = set()
        self.engine.subscribe(self._publish)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    # -- OrderEntry ---------------------------------------------------------------

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: _Context
    ) -> pb.PlaceOrderResponse:
        try:
            order_type = _enum(
                "type", request.type, _ORDER_TYPES, "ORDER_TYPE_LIMIT or ORDER_TYPE_MARKET"
            )
            result = self.engine.place(
                account_id=_identifier("account_id", request.account_id, required=True),
                symbol=_identifier("symbol", request.symbol, required=True),
                side=_enum("side", request.side, _SIDES, "SIDE_BUY or SIDE_SELL"),
                order_type=order_type,
                quantity=_decimal("quantity", request.quantity),
                price=_limit_price(order_type, request.price),
                time_in_force=_enum(
                    "time_in_force", request.time_in_force, _TIMES_IN_FORCE, "a TIME_IN_FORCE_*"
                ),
                client_order_id=_identifier("client_order_id", request.client_order_id),
                reduce_only=request.reduce_only,
            )
        except _InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ExchangeError as error:
            await context.abort(_STATUS_CODES[error.code], error.message)
        order = result.order
        return pb.PlaceOrderResponse(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            status=_PB_STATUSES[order.status],
            filled_quantity=format_decimal(order.filled_quantity),
            remaining_quantity=format_decimal(order.remaining_quantity),
            fills=_pb_fills(result.fills),
        )

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: _Context
    ) -> pb.CancelOrderResponse:
        """A non-empty ``symbol`` must be the order's; another account's order is NOT_FOUND."""
        try:
            _check_order_reference(request.account_id, request.order_id, request.client_order_id)
            _identifier("symbol", request.symbol)
            order = self.engine.cancel(
                request.account_id,
                order_id=request.order_id,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
            )
        except _InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ExchangeError as error:
            await context.abort(_STATUS_CODES[error.code], error.message)
        return pb.CancelOrderResponse(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            status=_PB_STATUSES[order.status],
            filled_quantity=format_decimal(order.filled_quantity),
        )

    async def AmendOrder(
        self, request: pb.AmendOrderRequest, context: _Context
    ) -> pb.AmendOrderResponse:
        try:
            _check_order_reference(request.account_id, request.order_id, request.client_order_id)
            _identifier("symbol", request.symbol)
            if not request.quantity and not request.price:
                raise _InvalidRequestError("quantity or price is required")
            result = self.engine.amend(
                request.account_id,
                order_id=request.order_id,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                quantity=_decimal("quantity", request.quantity) if request.quantity else None,
                price=_decimal("price", request.price) if request.price else None,
            )
        except _InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ExchangeError as error:
            await context.abort(_STATUS_CODES[error.code], error.message)
        order = result.order
        return pb.AmendOrderResponse(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            status=_PB_STATUSES[order.status],
            quantity=format_decimal(order.quantity),
            price=_format_optional(order.price),
            filled_quantity=format_decimal(order.filled_quantity),
            fills=_pb_fills(result.fills),
        )

    # -- ExecutionFeed ------------------------------------------------------------

    async def StreamExecutions(
        self, request: pb.StreamExecutionsRequest, context: _Context
    ) -> AsyncIterator[pb.ExecutionReport]:
        """Live reports from now on; empty ``account_id``/``symbol`` match everything."""
        try:
            _identifier("account_id", request.account_id)
            _identifier("symbol", request.symbol)
        except _InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        subscriber = _Subscriber(
            account_id=request.account_id,
            symbol=request.symbol,
            queue=asyncio.Queue(maxsize=self._stream_queue_size),
        )
        self._subscribers.add(subscriber)
        try:
            await context.send_initial_metadata(())
            while True:
                report = await subscriber.queue.get()
                if subscriber.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"execution stream fell more than {self._stream_queue_size} "
                        "reports behind; resubscribe and reconcile with ListOpenOrders",
                    )
                yield report
        finally:
            self._subscribers.discard(subscriber)

    async def ListOpenOrders(
        self, request: pb.ListOpenOrdersRequest, context: _Context
    ) -> pb.ListOpenOrdersResponse:
        try:
            _identifier("account_id", request.account_id)
            _identifier("symbol", request.symbol)
        except _InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        orders = self.engine.open_orders(account_id=request.account_id, symbol=request.symbol)
        return pb.ListOpenOrdersResponse(orders=[_pb_order(order) for order in orders])

    # -- fan-out ------------------------------------------------------------------

    def _publish(self, report: ExecutionReport) -> None:
        message: pb.ExecutionReport | None = None
        for subscriber in list(self._subscribers):
            if not subscriber.wants(report):
                continue
            if message is None:
                message = _pb_report(report)
            try:
                subscriber.queue.put_nowait(message)
            except asyncio.QueueFull:
                # The queue is full, so the stream wakes up, sees the flag and ends.
                subscriber.overflowed = True
                self._subscribers.discard(subscriber)


def add_to_server(server: grpc.aio.Server, exchange: ReferenceExchange) -> None:
    """Register both of the exchange's services (OrderEntry, ExecutionFeed) on ``server``."""
    pb_grpc.add_OrderEntryServicer_to_server(exchange, server)
    pb_grpc.add_ExecutionFeedServicer_to_server(exchange, server)


@dataclass(frozen=True)
class ExchangeServer:
    """A started standalone exchange server and the port it is bound to."""

    server: grpc.aio.Server
    exchange: ReferenceExchange
    port: int


async def start_exchange_server(
    listen: str, *, exchange: ReferenceExchange | None = None
) -> ExchangeServer:
    """Start a reference exchange listening on ``listen`` (``host:port``; port 0 picks one)."""
    exchange = exchange if exchange is not None else ReferenceExchange()
    server = grpc.aio.server()
    add_to_server(server, exchange)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {listen}: {error}") from error
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return ExchangeServer(server=server, exchange=exchange, port=port)


async def serve_exchange(listen: str) -> grpc.aio.Server:
    """Start a standalone reference exchange on ``listen`` and return the running server."""
    return (await start_exchange_server(listen)).server


# -- request validation -----------------------------------------------------------


def _identifier(name: str, value: str, *, required: bool = False) -> str:
    if required and not value:
        raise _InvalidRequestError(f"{name}: is required")
    if len(value) > MAX_ID_LENGTH:
        raise _InvalidRequestError(f"{name}: at most {MAX_ID_LENGTH} characters")
    return value


def _decimal(name: str, text: str) -> Decimal:
    if not text:
        raise _InvalidRequestError(f"{name}: is required")
    try:
        return parse_positive_decimal(text)
    except DecimalFormatError as error:
        raise _InvalidRequestError(f"{name}: {error}") from None


def _enum(name: str, value: int, known: dict[int, _T], expected: str) -> _T:
    if value not in known:
        raise _InvalidRequestError(f"{name}: must be {expected}, not {value}")
    return known[value]


def _limit_price(order_type: OrderType, text: str) -> Decimal | None:
    if order_type is OrderType.LIMIT:
        return _decimal("price", text)
    if text:
        raise _InvalidRequestError("price: must be empty for ORDER_TYPE_MARKET")
    return None


def _check_order_reference(account_id: str, order_id: str, client_order_id: str) -> None:
    _identifier("account_id", account_id, required=True)
    _identifier("order_id", order_id)
    _identifier("client_order_id", client_order_id)
    if not order_id and not client_order_id:
        raise _InvalidRequestError("order_id: order_id or client_order_id is required")


# -- conversions ------------------------------------------------------------------


def _format_optional(value: Decimal | None) -> str:
    return format_decimal(value) if value is not None else ""


def _timestamp(moment: datetime) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def _pb_fills(fills: tuple[Fill, ...]) -> list[pb.Fill]:
    return [
        pb.Fill(
            trade_id=fill.trade_id,
            price=format_decimal(fill.price),
            quantity=format_decimal(fill.quantity),
        )
        for fill in fills
    ]


def _pb_order(order: Order) -> pb.Order:
    return pb.Order(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        account_id=order.account_id,
        symbol=order.symbol,
        side=_PB_SIDES[order.side],
        type=_PB_ORDER_TYPES[order.order_type],
        price=_format_optional(order.price),
        quantity=format_decimal(order.quantity),
        filled_quantity=format_decimal(order.filled_quantity),
        status=_PB_STATUSES[order.status],
        reduce_only=order.reduce_only,
        created_at=_timestamp(order.created_at),
    )


def _pb_report(report: ExecutionReport) -> pb.ExecutionReport:
    return pb.ExecutionReport(
        sequence=report.sequence,
        exec_type=_PB_EXEC_TYPES[report.exec_type],
        order=_pb_order(report.order),
        trade_id=report.trade_id,
        last_price=_format_optional(report.last_price),
        last_quantity=_format_optional(report.last_quantity),
        maker=report.maker,
        time=_timestamp(report.time),
    )
