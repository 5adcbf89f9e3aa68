"""The reference exchange over a real in-process grpc.aio server on an ephemeral port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import grpc
import pytest

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc
from gateway.exchange import (
    OrderType,
    ReferenceExchange,
    Side,
    add_to_server,
    serve_exchange,
    start_exchange_server,
)

SYMBOL = "BTC-USD"


@dataclass
class Client:
    exchange: ReferenceExchange
    orders: pb_grpc.OrderEntryAsyncStub
    feed: pb_grpc.ExecutionFeedAsyncStub

    async def limit(
        self,
        account: str,
        side: pb.Side.ValueType,
        quantity: str,
        price: str,
        **fields: object,
    ) -> pb.PlaceOrderResponse:
        request = pb.PlaceOrderRequest(
            account_id=account,
            symbol=SYMBOL,
            side=side,
            type=pb.ORDER_TYPE_LIMIT,
            quantity=quantity,
            price=price,
            **fields,  # type: ignore[arg-type]
        )
        return await self.orders.PlaceOrder(request)


async def connect(exchange: ReferenceExchange) -> AsyncIterator[Client]:
    running = await start_exchange_server("127.0.0.1:0", exchange=exchange)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Client(
            exchange=exchange,
            orders=pb_grpc.OrderEntryStub(channel),
            feed=pb_grpc.ExecutionFeedStub(channel),
        )
    await running.server.stop(None)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async for connected in connect(ReferenceExchange()):
        yield connected


async def next_report(
    stream: grpc.aio.UnaryStreamCall[pb.StreamExecutionsRequest, pb.ExecutionReport],
) -> pb.ExecutionReport:
    report = await asyncio.wait_for(stream.read(), timeout=5)
    assert isinstance(report, pb.ExecutionReport)
    return report


async def expect_error(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call  # type: ignore[misc]
    assert excinfo.value.code() == code, excinfo.value.details()
    return excinfo.value.details() or ""


# -- order entry ----------------------------------------------------------------------


async def test_place_rests_and_matches(client: Client) -> None:
    maker = await client.limit("m", pb.SIDE_SELL, "1.50", "100.0", client_order_id="m-1")
    assert maker.status == pb.ORDER_STATUS_NEW
    assert maker.client_order_id == "m-1"
    assert (maker.filled_quantity, maker.remaining_quantity) == ("0", "1.5")

    taker = await client.limit("t", pb.SIDE_BUY, "2", "101")

    assert taker.status == pb.ORDER_STATUS_PARTIALLY_FILLED
    assert (taker.filled_quantity, taker.remaining_quantity) == ("1.5", "0.5")
    assert [(f.price, f.quantity) for f in taker.fills] == [("100", "1.5")]
    assert taker.fills[0].trade_id.startswith("T-")
    assert client.exchange.engine.position("t", SYMBOL) == Decimal("1.5")
    assert client.exchange.engine.last_trade_price(SYMBOL) == Decimal("100")


async def test_market_and_ioc_orders_expire_their_rest(client: Client) -> None:
    market = await client.orders.PlaceOrder(
        pb.PlaceOrderRequest(
            account_id="t", symbol=SYMBOL, side=pb.SIDE_BUY, type=pb.ORDER_TYPE_MARKET, quantity="1"
        )
    )
    ioc = await client.limit("t", pb.SIDE_BUY, "1", "100", time_in_force=pb.TIME_IN_FORCE_IOC)

    assert market.status == pb.ORDER_STATUS_EXPIRED
    assert ioc.status == pb.ORDER_STATUS_EXPIRED
    assert ioc.remaining_quantity == "0"


async def test_cancel_by_order_id_and_client_order_id(client: Client) -> None:
    first = await client.limit("a", pb.SIDE_BUY, "1", "100")
    await client.limit("a", pb.SIDE_BUY, "1", "99", client_order_id="c-2")

    by_id = await client.orders.CancelOrder(
        pb.CancelOrderRequest(account_id="a", symbol=SYMBOL, order_id=first.order_id)
    )
    by_client_id = await client.orders.CancelOrder(
        pb.CancelOrderRequest(account_id="a", client_order_id="c-2")
    )

    assert (by_id.order_id, by_id.status, by_id.filled_quantity) == (
        first.order_id,
        pb.ORDER_STATUS_CANCELED,
        "0",
    )
    assert by_client_id.client_order_id == "c-2"
    assert client.exchange.engine.open_orders() == []


async def test_cancel_unknown_or_foreign_order_is_not_found(client: Client) -> None:
    order = await client.limit("a", pb.SIDE_BUY, "1", "100")

    unknown = await expect_error(
        client.orders.CancelOrder(pb.CancelOrderRequest(account_id="a", order_id="X-999")),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        client.orders.CancelOrder(pb.CancelOrderRequest(account_id="b", order_id=order.order_id)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "X-999" in unknown


async def test_amend_keeps_or_loses_priority_and_can_cross(client: Client) -> None:
    resting = await client.limit("a", pb.SIDE_BUY, "3", "99", client_order_id="c")
    await client.limit("m", pb.SIDE_SELL, "1", "100")

    smaller = await client.orders.AmendOrder(
        pb.AmendOrderRequest(account_id="a", order_id=resting.order_id, quantity="2")
    )
    assert (smaller.quantity, smaller.price, smaller.status) == ("2", "99", pb.ORDER_STATUS_NEW)

    crossed = await client.orders.AmendOrder(
        pb.AmendOrderRequest(account_id="a", client_order_id="c", price="100.5")
    )
    assert crossed.order_id == resting.order_id
    assert crossed.status == pb.ORDER_STATUS_PARTIALLY_FILLED
    assert (crossed.price, crossed.filled_quantity) == ("100.5", "1")
    assert [(f.price, f.quantity) for f in crossed.fills] == [("100", "1")]

    details = await expect_error(
        client.orders.AmendOrder(
            pb.AmendOrderRequest(account_id="a", order_id=resting.order_id, quantity="1")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "quantity" in details


async def test_engine_refusals_map_to_status_codes(client: Client) -> None:
    await client.limit("a", pb.SIDE_BUY, "1", "100", client_order_id="dup")

    await expect_error(
        client.limit("a", pb.SIDE_BUY, "1", "100", client_order_id="dup"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await expect_error(
        client.limit("a", pb.SIDE_SELL, "1", "100", reduce_only=True),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await expect_error(
        client.orders.AmendOrder(pb.AmendOrderRequest(account_id="a", order_id="X-9", price="1")),
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"quantity": "NaN"}, "quantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": "1e5"}, "quantity"),
        ({"quantity": ""}, "quantity"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": " 1"}, "quantity"),
        ({"quantity": "Infinity"}, "quantity"),
        ({"price": ""}, "price"),
        ({"price": "0"}, "price"),
        ({"price": "1,5"}, "price"),
        ({"type": pb.ORDER_TYPE_MARKET}, "price"),
        ({"type": pb.ORDER_TYPE_UNSPECIFIED}, "type"),
        ({"side": pb.SIDE_UNSPECIFIED}, "side"),
        ({"side": 7}, "side"),
        ({"time_in_force": 9}, "time_in_force"),
        ({"account_id": ""}, "account_id"),
        ({"symbol": ""}, "symbol"),
        ({"client_order_id": "x" * 129}, "client_order_id"),
        ({"type": pb.ORDER_TYPE_MARKET, "price": "", "time_in_force": pb.TIME_IN_FORCE_GTC}, "GTC"),
    ],
)
async def test_malformed_place_is_invalid_argument_naming_the_field(
    client: Client, fields: dict[str, object], field: str
) -> None:
    values: dict[str, object] = {
        "account_id": "a",
        "symbol": SYMBOL,
        "side": pb.SIDE_BUY,
        "type": pb.ORDER_TYPE_LIMIT,
        "quantity": "1",
        "price": "100",
    }
    values.update(fields)

    details = await expect_error(
        client.orders.PlaceOrder(pb.PlaceOrderRequest(**values)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
    )

    assert field in details
    assert client.exchange.engine.sequence == 0


@pytest.mark.parametrize(
    "request_",
    [
        pb.CancelOrderRequest(account_id="a"),
        pb.CancelOrderRequest(order_id="X-1"),
        pb.AmendOrderRequest(account_id="a", order_id="X-1"),
        pb.AmendOrderRequest(account_id="a", order_id="X-1", quantity="NaN"),
        pb.AmendOrderRequest(account_id="a", order_id="X-1", price="-1"),
        pb.AmendOrderRequest(account_id="a", order_id="X-1", price="1e5"),
    ],
)
async def test_malformed_cancel_and_amend_are_invalid_argument(
    client: Client, request_: pb.CancelOrderRequest | pb.AmendOrderRequest
) -> None:
    await client.limit("a", pb.SIDE_BUY, "1", "100")
    if isinstance(request_, pb.CancelOrderRequest):
        await expect_error(client.orders.CancelOrder(request_), grpc.StatusCode.INVALID_ARGUMENT)
    else:
        await expect_error(client.orders.AmendOrder(request_), grpc.StatusCode.INVALID_ARGUMENT)


# -- execution feed -------------------------------------------------------------------


async def test_stream_receives_new_and_trade_reports(client: Client) -> None:
    stream = client.feed.StreamExecutions(pb.StreamExecutionsRequest())
    await stream.initial_metadata()  # sent once the subscription is in place

    maker = await client.limit("m", pb.SIDE_SELL, "1", "100")
    taker = await client.limit("t", pb.SIDE_BUY, "1", "100")
    reports = [await next_report(stream) for _ in range(4)]
    stream.cancel()

    summary = [(r.exec_type, r.order.order_id, r.maker) for r in reports]
    assert summary == [
        (pb.EXEC_TYPE_NEW, maker.order_id, False),
        (pb.EXEC_TYPE_NEW, taker.order_id, False),
        (pb.EXEC_TYPE_TRADE, taker.order_id, False),
        (pb.EXEC_TYPE_TRADE, maker.order_id, True),
    ]
    trade = reports[3]
    assert (trade.last_price, trade.last_quantity, trade.order.status) == (
        "100",
        "1",
        pb.ORDER_STATUS_FILLED,
    )
    assert trade.trade_id == taker.fills[0].trade_id
    assert trade.time.seconds > 0
    assert trade.order.created_at.seconds > 0
    sequences = [r.sequence for r in reports]
    assert sequences == sorted(set(sequences))


async def test_stream_filters_by_account_and_symbol(client: Client) -> None:
    stream = client.feed.StreamExecutions(pb.StreamExecutionsRequest(account_id="a", symbol=SYMBOL))
    await stream.initial_metadata()

    await client.limit("b", pb.SIDE_BUY, "1", "100")
    await client.orders.PlaceOrder(
        pb.PlaceOrderRequest(
            account_id="a",
            symbol="ETH-USD",
            side=pb.SIDE_BUY,
            type=pb.ORDER_TYPE_LIMIT,
            quantity="1",
            price="10",
        )
    )
    wanted = await client.limit("a", pb.SIDE_BUY, "1", "99")
    report = await next_report(stream)
    stream.cancel()

    assert (report.order.order_id, report.order.account_id) == (wanted.order_id, "a")


async def test_slow_subscriber_is_disconnected_with_resource_exhausted() -> None:
    exchange = ReferenceExchange(stream_queue_size=2)
    async for client in connect(exchange):
        stream = client.feed.StreamExecutions(pb.StreamExecutionsRequest())
        await stream.initial_metadata()
        assert exchange.subscriber_count == 1

        for price in ("90", "91", "92", "93"):  # published faster than the stream drains
            exchange.engine.place(
                account_id="a",
                symbol=SYMBOL,
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                quantity=Decimal("1"),
                price=Decimal(price),
            )

        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            async for _ in stream:
                pass
        assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert exchange.subscriber_count == 0


async def test_cancelled_stream_unsubscribes(client: Client) -> None:
    stream = client.feed.StreamExecutions(pb.StreamExecutionsRequest())
    await stream.initial_metadata()
    assert client.exchange.subscriber_count == 1

    stream.cancel()
    for _ in range(100):
        if client.exchange.subscriber_count == 0:
            break
        await asyncio.sleep(0.01)
    assert client.exchange.subscriber_count == 0


async def test_list_open_orders_with_filters(client: Client) -> None:
    first = await client.limit("a", pb.SIDE_BUY, "1", "100", client_order_id="c")
    await client.limit("b", pb.SIDE_SELL, "2", "105")
    await client.limit("a", pb.SIDE_SELL, "1", "104")
    await client.limit("c", pb.SIDE_BUY, "1", "104")  # fills the last one: no longer open

    everything = await client.feed.ListOpenOrders(pb.ListOpenOrdersRequest())
    mine = await client.feed.ListOpenOrders(pb.ListOpenOrdersRequest(account_id="a"))
    other_symbol = await client.feed.ListOpenOrders(pb.ListOpenOrdersRequest(symbol="ETH-USD"))

    assert len(everything.orders) == 2
    assert [o.order_id for o in mine.orders] == [first.order_id]
    order = mine.orders[0]
    assert (order.account_id, order.symbol, order.side, order.type) == (
        "a",
        SYMBOL,
        pb.SIDE_BUY,
        pb.ORDER_TYPE_LIMIT,
    )
    assert (order.price, order.quantity, order.filled_quantity, order.status) == (
        "100",
        "1",
        "0",
        pb.ORDER_STATUS_NEW,
    )
    assert order.client_order_id == "c"
    assert other_symbol.orders == []


# -- servers --------------------------------------------------------------------------


async def test_add_to_server_registers_both_services() -> None:
    exchange = ReferenceExchange()
    server = grpc.aio.server()
    add_to_server(server, exchange)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            placed = await pb_grpc.OrderEntryStub(channel).PlaceOrder(
                pb.PlaceOrderRequest(
                    account_id="a",
                    symbol=SYMBOL,
                    side=pb.SIDE_BUY,
                    type=pb.ORDER_TYPE_LIMIT,
                    quantity="1",
                    price="1",
                )
            )
            listed = await pb_grpc.ExecutionFeedStub(channel).ListOpenOrders(
                pb.ListOpenOrdersRequest()
            )
    finally:
        await server.stop(None)

    assert [o.order_id for o in listed.orders] == [placed.order_id]


async def test_serve_exchange_starts_a_server() -> None:
    server = await serve_exchange("127.0.0.1:0")
    try:
        assert isinstance(server, grpc.aio.Server)
    finally:
        await server.stop(None)


async def test_start_exchange_server_reports_the_port_and_bind_errors() -> None:
    running = await start_exchange_server("127.0.0.1:0")
    try:
        assert running.port > 0
        assert running.exchange.engine.sequence == 0
    finally:
        await running.server.stop(None)

    with pytest.raises(OSError, match="cannot listen"):
        await start_exchange_server("not-an-address")
