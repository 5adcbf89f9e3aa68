"""Behavioural limits end to end, in both deployments: refusals, budgets, resting time, admin."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.keys import counting_subject, order_record_key
from tests.e2e.conftest import Deployment
from tests.support.rpc import limit_order, refused

RE = grpc.StatusCode.RESOURCE_EXHAUSTED


def set_limit(kind: int, value: str, scope: int = apb.LIMIT_SCOPE_DEFAULT, key: str = "",
              ttl_ms: int | None = None) -> apb.SetLimitRequest:  # fmt: skip
    request = apb.SetLimitRequest(scope=scope, key=key, kind=kind, value=value,  # type: ignore[arg-type]
                                  reason="test", actor="risk-desk")  # fmt: skip
    if ttl_ms is not None:
        request.ttl.FromMilliseconds(ttl_ms)
    return request


async def call_with_trailers(call: Any) -> tuple[Any, dict[str, str]]:
    response = await call
    trailers = await call.trailing_metadata()
    return response, {k: v for k, v in (trailers or ()) if k.startswith("x-ratelimit")}


async def test_order_rate_over_grpc(deployment: Deployment) -> None:
    clients = deployment.clients
    await clients.admin.SetLimit(set_limit(apb.LIMIT_KIND_ORDER_RATE, "2/1m"))
    budgets = []
    for _ in range(2):
        response, trailers = await call_with_trailers(clients.orders.PlaceOrder(limit_order()))
        assert response.status == pb.ORDER_STATUS_NEW
        budgets.append(trailers)
    assert budgets == [
        {"x-ratelimit-remaining": "1", "x-ratelimit-limit": "2", "x-ratelimit-window": "1m",
         "x-ratelimit-name": "order_rate"},
        {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "2", "x-ratelimit-window": "1m",
         "x-ratelimit-name": "order_rate"},
    ]  # fmt: skip
    before = len(deployment.exchange.engine.open_orders("alice"))
    got = await refused(clients.orders.PlaceOrder(limit_order()))
    assert (got.code, got.reason, got.domain) == (RE, "ORDER_RATE_EXCEEDED", "pretrade.v1")
    assert {k: got.metadata[k] for k in ("limit", "window", "count", "max")} == {
        "limit": "order_rate", "window": "1m", "count": "2", "max": "2"}  # fmt: skip
    assert got.retry_delay_ms is not None and 0 < got.retry_delay_ms <= 60_000
    assert got.metadata["retry_after_ms"] == str(got.retry_delay_ms)
    assert len(deployment.exchange.engine.open_orders("alice")) == before  # never forwarded
    # Another account, and cancels, have budgets of their own.
    assert (await clients.orders.PlaceOrder(limit_order("bob"))).status == pb.ORDER_STATUS_NEW
    open_id = deployment.exchange.engine.open_orders("alice")[0].order_id
    cancel = pb.CancelOrderRequest(account_id="alice", symbol="BTC-USDT", order_id=open_id)
    response, trailers = await call_with_trailers(clients.orders.CancelOrder(cancel))
    assert response.status == pb.ORDER_STATUS_CANCELED and trailers == {}


async def test_flag_refusals_spend_no_counter(deployment: Deployment) -> None:
    clients = deployment.clients
    await clients.admin.SetLimit(set_limit(apb.LIMIT_KIND_ORDER_RATE, "1/1m"))
    await clients.admin.SetAccountState(apb.SetAccountStateRequest(
        account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="t", actor="ops"))  # fmt: skip
    for _ in range(3):
        assert (await refused(clients.orders.PlaceOrder(limit_order()))).reason == "ACCOUNT_FROZEN"
    await clients.admin.SetAccountState(apb.SetAccountStateRequest(
        account_id="alice", state=apb.ACCOUNT_STATE_ACTIVE, reason="t", actor="ops"))  # fmt: skip
    assert (await clients.orders.PlaceOrder(limit_order())).status == pb.ORDER_STATUS_NEW


async def test_min_resting_time_over_grpc(deployment: Deployment, redis_url: str) -> None:
    clients = deployment.clients
    await clients.admin.SetLimit(
        set_limit(apb.LIMIT_KIND_MIN_RESTING, "1m", apb.LIMIT_SCOPE_PRODUCT, "perpetual")
    )
    placed = await clients.orders.PlaceOrder(
        limit_order(symbol="BTC-USDT-PERP", client_order_id="c-1")
    )
    by_client = pb.CancelOrderRequest(
        account_id="alice", symbol="BTC-USDT-PERP", client_order_id="c-1"
    )
    got = await refused(clients.orders.CancelOrder(by_client))
    assert (got.code, got.reason) == (RE, "MIN_RESTING_TIME")
    assert got.retry_delay_ms is not None and 0 < got.retry_delay_ms <= 60_000
    assert got.metadata["window"] == "1m"
    amend = pb.AmendOrderRequest(account_id="alice", symbol="BTC-USDT-PERP",
                                 order_id=placed.order_id, price="99")  # fmt: skip
    # By exchange order id: remembered once the exchange has accepted the order, in
    # the background (docs/counters.md: the window before the record lands).
    record = order_record_key(counting_subject("alice"), "alice", order_id=placed.order_id)
    redis = aioredis.Redis.from_url(redis_url)
    for _ in range(200):  # bounded: 2 s
        if await redis.exists(record):
            break
        await asyncio.sleep(0.01)
    await redis.aclose()
    got = await refused(clients.orders.AmendOrder(amend))
    assert got.reason == "MIN_RESTING_TIME"
    # Ops shorten the resting time: the same calls pass at once.
    await clients.admin.SetLimit(
        set_limit(apb.LIMIT_KIND_MIN_RESTING, "1ms", apb.LIMIT_SCOPE_PRODUCT, "perpetual")
    )
    await asyncio.sleep(0.002)
    assert (await clients.orders.AmendOrder(amend)).price == "99"
    assert (await clients.orders.CancelOrder(by_client)).status == pb.ORDER_STATUS_CANCELED
    # Spot has no resting time.
    spot = await clients.orders.PlaceOrder(limit_order())
    cancel = pb.CancelOrderRequest(account_id="alice", symbol="BTC-USDT", order_id=spot.order_id)
    assert (await clients.orders.CancelOrder(cancel)).status == pb.ORDER_STATUS_CANCELED


async def test_admin_limits_lifecycle(deployment: Deployment) -> None:
    admin = deployment.clients.admin
    set_reply = await admin.SetLimit(set_limit(apb.LIMIT_KIND_ORDER_RATE, "100/10s, 5/1s",
                                               apb.LIMIT_SCOPE_ACCOUNT, "alice", ttl_ms=60_000))  # fmt: skip
    assert set_reply.limit.value == "5/1s,100/10s" and set_reply.previous_value == ""
    assert set_reply.limit.HasField("expires_at") and set_reply.limit.actor == "risk-desk"
    await admin.SetLimit(set_limit(apb.LIMIT_KIND_DAILY_OPEN, "3", apb.LIMIT_SCOPE_PRODUCT, "spot"))
    await admin.SetLimit(set_limit(apb.LIMIT_KIND_CANCEL_RATIO, "min_orders=10,max_ratio=0.9"))
    await deployment.clients.orders.PlaceOrder(limit_order())

    shown = await admin.GetEffectiveLimits(
        apb.GetEffectiveLimitsRequest(account_id="alice", symbol="BTC-USDT", include_usage=True)
    )
    assert shown.counting_subject == "acct:alice" and shown.day_start == "00:00:00"
    rows = {(apb.LimitKind.Name(x.kind), x.window): x for x in shown.limits}
    assert rows[("LIMIT_KIND_ORDER_RATE", "1s")].source == "admin:account:alice"
    assert rows[("LIMIT_KIND_ORDER_RATE", "1s")].current == 1
    assert rows[("LIMIT_KIND_DAILY_OPEN", "day")].value == "3"
    assert rows[("LIMIT_KIND_DAILY_OPEN", "day")].counted == "product:spot"
    assert rows[("LIMIT_KIND_DAILY_OPEN", "day")].current == 1
    assert rows[("LIMIT_KIND_CANCEL_RATIO", "day")].counted == "orders=1"
    bob = await admin.GetEffectiveLimits(
        apb.GetEffectiveLimitsRequest(account_id="bob", symbol="BTC-USDT")
    )
    assert "LIMIT_KIND_ORDER_RATE" not in {apb.LimitKind.Name(x.kind) for x in bob.limits}

    listed = await admin.ListLimitOverrides(apb.ListLimitOverridesRequest())
    assert [(apb.LimitScope.Name(o.scope), o.key, apb.LimitKind.Name(o.kind)) for o in listed.overrides] == [
        ("LIMIT_SCOPE_DEFAULT", "", "LIMIT_KIND_CANCEL_RATIO"),
        ("LIMIT_SCOPE_PRODUCT", "spot", "LIMIT_KIND_DAILY_OPEN"),
        ("LIMIT_SCOPE_ACCOUNT", "alice", "LIMIT_KIND_ORDER_RATE"),
    ]  # fmt: skip

    again = await admin.SetLimit(set_limit(apb.LIMIT_KIND_ORDER_RATE, "7/1s",
                                           apb.LIMIT_SCOPE_ACCOUNT, "alice"))  # fmt: skip
    assert again.previous_value == "5/1s,100/10s" and not again.limit.HasField("expires_at")
    removed = await admin.RemoveLimit(apb.RemoveLimitRequest(
        scope=apb.LIMIT_SCOPE_ACCOUNT, key="alice", kind=apb.LIMIT_KIND_ORDER_RATE,
        reason="done", actor="risk-desk"))  # fmt: skip
    assert removed.removed and removed.previous_value == "7/1s"
    removed = await admin.RemoveLimit(apb.RemoveLimitRequest(
        scope=apb.LIMIT_SCOPE_ACCOUNT, key="alice", kind=apb.LIMIT_KIND_ORDER_RATE,
        reason="done", actor="risk-desk"))  # fmt: skip
    assert not removed.removed


async def test_override_with_ttl_lapses(deployment: Deployment) -> None:
    clients = deployment.clients
    await clients.admin.SetLimit(set_limit(apb.LIMIT_KIND_ORDER_RATE, "1/1h", ttl_ms=300))
    await clients.orders.PlaceOrder(limit_order())
    assert (await refused(clients.orders.PlaceOrder(limit_order()))).reason == "ORDER_RATE_EXCEEDED"
    await asyncio.sleep(0.5)
    assert (await clients.orders.PlaceOrder(limit_order())).status == pb.ORDER_STATUS_NEW


@pytest.mark.parametrize(
    ("request_kw", "fields"),
    [
        ({"kind": apb.LIMIT_KIND_ORDER_RATE, "value": "10/1s"}, {"scope"}),
        ({"scope": apb.LIMIT_SCOPE_DEFAULT, "value": "10/1s"}, {"kind"}),
        ({"scope": apb.LIMIT_SCOPE_DEFAULT, "key": "x", "kind": apb.LIMIT_KIND_ORDER_RATE,
          "value": "10/1s"}, {"key"}),
        ({"scope": apb.LIMIT_SCOPE_ACCOUNT, "kind": apb.LIMIT_KIND_ORDER_RATE,
          "value": "10/1s"}, {"key"}),
        ({"scope": apb.LIMIT_SCOPE_DEFAULT, "kind": apb.LIMIT_KIND_ORDER_RATE,
          "value": "ten per second"}, {"value"}),
        ({"scope": apb.LIMIT_SCOPE_DEFAULT, "kind": apb.LIMIT_KIND_MIN_RESTING,
          "value": "10/1s"}, {"value"}),
        ({"scope": apb.LIMIT_SCOPE_DEFAULT, "kind": apb.LIMIT_KIND_ORDER_RATE, "value": "1/1s",
          "reason": "", "actor": ""}, {"reason", "actor"}),
    ],
)  # fmt: skip
async def test_set_limit_validation(
    deployment: Deployment, request_kw: dict[str, Any], fields: set[str]
) -> None:
    values: dict[str, Any] = {"reason": "r", "actor": "a", **request_kw}
    got = await refused(deployment.clients.admin.SetLimit(apb.SetLimitRequest(**values)))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and set(got.bad_fields) == fields
    listed = await deployment.clients.admin.ListLimitOverrides(apb.ListLimitOverridesRequest())
    assert list(listed.overrides) == []  # nothing half-applied


async def test_unknown_symbol_or_product(deployment: Deployment) -> None:
    admin = deployment.clients.admin
    for scope, key in ((apb.LIMIT_SCOPE_SYMBOL, "NOPE-USDT"), (apb.LIMIT_SCOPE_PRODUCT, "futures")):
        got = await refused(admin.SetLimit(set_limit(apb.LIMIT_KIND_DAILY_OPEN, "1", scope, key)))
        assert got.code == grpc.StatusCode.NOT_FOUND
    got = await refused(admin.GetEffectiveLimits(
        apb.GetEffectiveLimitsRequest(account_id="alice", symbol="NOPE-USDT")))  # fmt: skip
    assert got.code == grpc.StatusCode.NOT_FOUND


async def test_interceptor_adds_to_the_servicers_trailers(redis_url: str) -> None:
    """The exchange's own trailing metadata survives; ours is added to it."""
    from gateway import Gatekeeper, PreTradeInterceptor, load_policy
    from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc
    from tests.support.servers import POLICY

    class Servicer(pb_grpc.OrderEntryServicer):
        async def PlaceOrder(self, request: Any, context: Any) -> pb.PlaceOrderResponse:
            context.set_trailing_metadata((("x-exchange", "1"),))
            return pb.PlaceOrderResponse(order_id="E-1", status=pb.ORDER_STATUS_NEW)

    keeper = await Gatekeeper.open(redis_url, load_policy(POLICY), auth=False)
    server = aio.server(interceptors=[PreTradeInterceptor(keeper.engine)])
    pb_grpc.add_OrderEntryServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        from gateway.counters.limits import DEFAULT_SCOPE, CounterPolicy, LimitKind, parse_value

        keeper.counters.resolver.set_policy(CounterPolicy(tables={DEFAULT_SCOPE: {
            LimitKind.ORDER_RATE: parse_value(LimitKind.ORDER_RATE, "5/1s")}}))  # fmt: skip
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.OrderEntryStub(channel).PlaceOrder(limit_order())
            await call
            trailers = dict(await call.trailing_metadata())
        assert trailers["x-exchange"] == "1" and trailers["x-ratelimit-remaining"] == "4"
    finally:
        await server.stop(0)
        await keeper.close()


async def test_market_orders_are_large_at_the_reference_price(deployment: Deployment) -> None:
    admin, orders = deployment.clients.admin, deployment.clients.orders
    sym = apb.LIMIT_SCOPE_SYMBOL
    await admin.SetLimit(set_limit(apb.LIMIT_KIND_LARGE_NOTIONAL, "1000", sym, "BTC-USDT"))
    await admin.SetLimit(set_limit(apb.LIMIT_KIND_LARGE_ORDER_RATE, "1/1m", sym, "BTC-USDT"))
    market = pb.PlaceOrderRequest(account_id="alice", symbol="BTC-USDT", side=pb.SIDE_BUY,
                                  type=pb.ORDER_TYPE_MARKET, quantity="10")  # fmt: skip
    # No reference price yet: market orders are never large.
    await orders.PlaceOrder(market)
    await orders.PlaceOrder(market)
    await admin.SetReferencePrice(apb.SetReferencePriceRequest(
        symbol="BTC-USDT", price="100", reason="test", actor="ops"))  # fmt: skip
    await orders.PlaceOrder(market)  # 10 x 100 = 1000: large
    got = await refused(orders.PlaceOrder(market))
    assert (got.reason, got.metadata["limit"]) == ("LARGE_ORDER_RATE_EXCEEDED", "large_order_rate")
    small = pb.PlaceOrderRequest(account_id="alice", symbol="BTC-USDT", side=pb.SIDE_BUY,
                                 type=pb.ORDER_TYPE_MARKET, quantity="9.99")  # fmt: skip
    await orders.PlaceOrder(small)
