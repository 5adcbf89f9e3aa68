"""Malformed requests are refused with the bad field named, and never reach the exchange."""

from __future__ import annotations

import grpc
import pytest

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from tests.e2e.conftest import Deployment
from tests.support.rpc import limit_order, refused

HUGE = "9" * 10_000

BAD_PLACES = [
    ({"account_id": ""}, "account_id"),
    ({"account_id": "a{b}"}, "account_id"),
    ({"account_id": "x" * 65}, "account_id"),
    ({"account_id": HUGE}, "account_id"),
    ({"symbol": ""}, "symbol"),
    ({"symbol": "btc-usdt"}, "symbol"),
    ({"symbol": HUGE}, "symbol"),
    ({"quantity": ""}, "quantity"),
    ({"quantity": "NaN"}, "quantity"),
    ({"quantity": "-1"}, "quantity"),
    ({"quantity": "0"}, "quantity"),
    ({"quantity": "1e999999"}, "quantity"),
    ({"quantity": "Infinity"}, "quantity"),
    ({"quantity": " 1"}, "quantity"),
    ({"quantity": "0x10"}, "quantity"),
    ({"quantity": HUGE}, "quantity"),
    ({"quantity": "1." + "0" * 19}, "quantity"),
    ({"price": ""}, "price"),
    ({"price": "NaN"}, "price"),
    ({"price": "-100"}, "price"),
    ({"price": "1E+3"}, "price"),
    ({"side": pb.SIDE_UNSPECIFIED}, "side"),
    ({"side": 7}, "side"),
    ({"type": pb.ORDER_TYPE_UNSPECIFIED}, "type"),
    ({"type": pb.ORDER_TYPE_MARKET, "price": "100"}, "price"),
    ({"time_in_force": 9}, "time_in_force"),
    ({"leverage": 100_000}, "leverage"),
    ({"client_order_id": "has space"}, "client_order_id"),
    ({"client_order_id": "c" * 37}, "client_order_id"),
]


@pytest.mark.parametrize(("override", "field"), BAD_PLACES, ids=lambda v: str(v)[:40])
async def test_bad_place_names_the_field(
    deployment: Deployment, override: dict[str, object], field: str
) -> None:
    before = deployment.exchange.engine.sequence
    r = await refused(deployment.clients.orders.PlaceOrder(limit_order(**override)))
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT
    assert r.reason == "INVALID_REQUEST"
    assert field in r.bad_fields, r.bad_fields
    assert deployment.exchange.engine.sequence == before, "a malformed order reached the exchange"


async def test_every_bad_field_is_named_at_once(deployment: Deployment) -> None:
    request = pb.PlaceOrderRequest(account_id="", symbol="", quantity="NaN", price="-1")
    r = await refused(deployment.clients.orders.PlaceOrder(request))
    assert set(r.bad_fields) == {"account_id", "symbol", "side", "type", "quantity", "price"}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CancelOrderRequest(account_id="alice", symbol="BTC-USDT"), "order_id"),
        (pb.CancelOrderRequest(account_id="", symbol="BTC-USDT", order_id="X-1"), "account_id"),
        (pb.CancelOrderRequest(account_id="alice", symbol="BTC-USDT", order_id="X 1"), "order_id"),
    ],
)
async def test_bad_cancel(
    deployment: Deployment, request_: pb.CancelOrderRequest, field: str
) -> None:
    before = deployment.exchange.engine.sequence
    r = await refused(deployment.clients.orders.CancelOrder(request_))
    assert (r.code, field in r.bad_fields) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    assert deployment.exchange.engine.sequence == before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AmendOrderRequest(account_id="alice", symbol="BTC-USDT", order_id="X-1"), "quantity"),
        (
            pb.AmendOrderRequest(
                account_id="alice", symbol="BTC-USDT", order_id="X-1", price="NaN"
            ),
            "price",
        ),
        (
            pb.AmendOrderRequest(
                account_id="alice", symbol="BTC-USDT", order_id="X-1", quantity="-2"
            ),
            "quantity",
        ),
    ],
)
async def test_bad_amend(
    deployment: Deployment, request_: pb.AmendOrderRequest, field: str
) -> None:
    r = await refused(deployment.clients.orders.AmendOrder(request_))
    assert (r.code, field in r.bad_fields) == (grpc.StatusCode.INVALID_ARGUMENT, True)


async def test_valid_order_after_bad_ones_still_works(deployment: Deployment) -> None:
    await refused(deployment.clients.orders.PlaceOrder(limit_order(quantity="NaN")))
    # 18 fraction digits parse; the value itself must also fit BTC-USDT's lot size.
    accepted = await deployment.clients.orders.PlaceOrder(
        limit_order(quantity="1.000000000000000000")
    )
    assert accepted.status == pb.ORDER_STATUS_NEW


@pytest.mark.parametrize("service", ["OrderEntry", "Admin"])
async def test_bytes_that_are_not_a_request(deployment: Deployment, service: str) -> None:
    """Undecodable bytes are INVALID_ARGUMENT on both ports, in both deployments (not UNKNOWN)."""
    index = 0 if service == "OrderEntry" else 1
    channel = deployment.clients.channels[index]
    method = "PlaceOrder" if service == "OrderEntry" else "SetAccountState"
    call = channel.unary_unary(f"/pretrade.v1.{service}/{method}")
    r = await refused(call(b"\xff\xff\xff\xff", timeout=5))
    assert (r.code, list(r.bad_fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])
    assert deployment.exchange.engine.sequence == 0
