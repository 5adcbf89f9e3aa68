"""The reference exchange: the default upstream the gateway guards.

An in-memory matching engine (:mod:`gateway.exchange.book`) served over the
``pretrade.v1`` OrderEntry and ExecutionFeed contract
(:mod:`gateway.exchange.service`), so the gateway can run and be tested end to
end without a real venue.
"""

from gateway.exchange.book import (
    ErrorCode,
    ExchangeError,
    ExecType,
    ExecutionReport,
    Fill,
    MatchingEngine,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from gateway.exchange.service import (
    ExchangeServer,
    ReferenceExchange,
    add_to_server,
    serve_exchange,
    start_exchange_server,
)

__all__ = [
    "ErrorCode",
    "ExchangeError",
    "ExchangeServer",
    "ExecType",
    "ExecutionReport",
    "Fill",
    "MatchingEngine",
    "Order",
    "OrderResult",
    "OrderStatus",
    "OrderType",
    "ReferenceExchange",
    "Side",
    "TimeInForce",
    "add_to_server",
    "serve_exchange",
    "start_exchange_server",
]
