"""Order sanity, price bands, leverage and program channel, end to end in both deployments.

Limits come from the shipped policy (limits/default.toml) and are changed through
the admin API; reference prices come from real trades on the exchange's feed or
from SetReferencePrice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from tests.e2e.conftest import Deployment
from tests.support.rpc import limit_order, refused

FP = grpc.StatusCode.FAILED_PRECONDITION
PD = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PERP = "BTC-USDT-PERP"
INTERACTIVE = (("x-pretrade-channel", "interactive"),)


async def outcome(call: Any) -> str | tuple[grpc.StatusCode, str]:
    """ "ok" or (code, reason) for a gateway refusal; an exchange refusal fails the test."""
    try:
        await call
    except grpc.aio.AioRpcError:
        r = await refused(call)
        assert r.domain == "pretrade.v1", f"refused by the exchange, not the gateway: {r}"
        return (r.code, r.reason)
    return "ok"


def market_order(account: str = "alice", symbol: str = PERP, **kw: Any) -> pb.PlaceOrderRequest:
    return limit_order(account, symbol, type=pb.ORDER_TYPE_MARKET, price="", **kw)


async def set_limits(d: Deployment, symbol: str, **fields: Any) -> apb.UpsertSymbolResponse:
    """Change only the given SymbolSpec fields (UpsertSymbol with an update mask)."""
    spec = apb.SymbolSpec(symbol=symbol, **fields)
    request = apb.UpsertSymbolRequest(
        spec=spec,
        reason="test",
        actor="ops",
        update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
    )
    return await d.clients.admin.UpsertSymbol(request)


async def get_symbol(d: Deployment, symbol: str) -> apb.Symbol:
    return (await d.clients.admin.GetSymbol(apb.GetSymbolRequest(symbol=symbol))).symbol


async def trade(d: Deployment, symbol: str, price: str, quantity: str = "1") -> None:
    """bob sells to carol at ``price``, then wait until the gateway has the trade's price."""
    orders = d.clients.orders
    await orders.PlaceOrder(
        limit_order("bob", symbol, side=pb.SIDE_SELL, quantity=quantity, price=price)
    )
    filled = await orders.PlaceOrder(limit_order("carol", symbol, quantity=quantity, price=price))
    assert filled.status == pb.ORDER_STATUS_FILLED
    await wait_for_reference(d, symbol, "upstream", price)


async def wait_for_reference(
    d: Deployment, symbol: str, source: str, price: str
) -> apb.ReferencePrice:
    for _ in range(250):
        reference = (await get_symbol(d, symbol)).reference_price
        if (reference.source, reference.price) == (source, price):
            return reference
        await asyncio.sleep(0.02)
    raise AssertionError(f"{symbol}: no {source} reference {price}; last {reference}")


async def pin(d: Deployment, symbol: str, price: str = "", clear: bool = False) -> None:
    request = apb.SetReferencePriceRequest(
        symbol=symbol, price=price, clear=clear, reason="bad prints", actor="ops"
    )
    await d.clients.admin.SetReferencePrice(request)


async def set_leverage(d: Deployment, **kw: Any) -> apb.SetLeverageLimitResponse:
    request = apb.SetLeverageLimitRequest(reason="volatility", actor="risk", **kw)
    return await d.clients.admin.SetLeverageLimit(request)


# -- size, tick, lot, notional ---------------------------------------------------


async def test_size_tick_lot_and_notional(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    before = deployment.exchange.engine.sequence
    r = await refused(orders.PlaceOrder(limit_order(quantity="0.000001")))
    assert (r.code, r.reason) == (FP, "ORDER_QTY_OUT_OF_RANGE")
    assert r.metadata["min_quantity"] == "0.00001" and "quantity" in r.bad_fields
    r = await refused(orders.PlaceOrder(limit_order(quantity="0.000015")))
    assert (r.reason, r.metadata["lot_size"]) == ("QTY_STEP_INVALID", "0.00001")
    r = await refused(orders.PlaceOrder(limit_order(price="100.001")))
    assert (r.reason, r.metadata["tick_size"], r.bad_fields.keys()) == (
        "PRICE_TICK_INVALID",
        "0.01",
        {"price"},
    )
    r = await refused(orders.PlaceOrder(limit_order(quantity="0.04999", price="100")))
    assert (r.reason, r.metadata["notional"], r.metadata["min_notional"]) == (
        "ORDER_NOTIONAL_OUT_OF_RANGE",
        "4.999",
        "5",
    )
    assert deployment.exchange.engine.sequence == before, "a refused order reached the exchange"
    assert await outcome(orders.PlaceOrder(limit_order(quantity="0.05", price="100"))) == "ok"
    resting = await orders.PlaceOrder(limit_order(quantity="0.1", price="100.01"))
    amend = pb.AmendOrderRequest(
        account_id="alice", symbol="BTC-USDT", order_id=resting.order_id, price="100.005"
    )
    assert await outcome(orders.AmendOrder(amend)) == (FP, "PRICE_TICK_INVALID")
    amend.price = "100.05"
    assert await outcome(orders.AmendOrder(amend)) == "ok"


async def test_limits_change_at_run_time(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    changed = await set_limits(deployment, "BTC-USDT", tick_size="0.5", min_quantity="")
    assert (changed.symbol.spec.tick_size, changed.symbol.spec.lot_size) == ("0.5", "0.00001")
    assert changed.symbol.spec.min_quantity == "" and changed.symbol.spec_source == "admin"
    assert await outcome(orders.PlaceOrder(limit_order(price="100.01"))) == (
        FP,
        "PRICE_TICK_INVALID",
    )
    assert await outcome(orders.PlaceOrder(limit_order(price="100.5"))) == "ok"
    # min_quantity was removed; the notional minimum still holds.
    assert await outcome(orders.PlaceOrder(limit_order(quantity="0.00001", price="500000"))) == "ok"


# -- price band and reference price ----------------------------------------------


async def test_band_edges_from_the_upstreams_trades(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    await trade(deployment, "BTC-USDT", "100")
    # BTC-USDT: buys within +10% / -80%, sells within +400% / -10% of the reference.
    cases = [
        (limit_order("alice", side=pb.SIDE_SELL, price="89.99"), (FP, "PRICE_OUT_OF_BAND")),
        (limit_order("alice", side=pb.SIDE_SELL, price="500.01"), (FP, "PRICE_OUT_OF_BAND")),
        (limit_order("alice", side=pb.SIDE_SELL, price="500"), "ok"),
        (limit_order("alice", price="110.01"), (FP, "PRICE_OUT_OF_BAND")),
        (limit_order("alice", price="110"), "ok"),
        (limit_order("alice", price="19.99"), (FP, "PRICE_OUT_OF_BAND")),
        (limit_order("alice", price="20"), "ok"),
    ]
    for request, expected in cases:
        assert await outcome(orders.PlaceOrder(request)) == expected, request
    r = await refused(orders.PlaceOrder(limit_order("alice", price="120")))
    assert r.metadata == {
        "limit": "price_band", "symbol": "BTC-USDT", "side": "BUY", "price": "120",
        "reference_price": "100", "reference_source": "upstream",
        "band_up_pct": "10", "band_high": "110", "band_down_pct": "80", "band_low": "20",
    }  # fmt: skip


async def test_ops_pin_overrides_the_upstream_until_cleared(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    await trade(deployment, "BTC-USDT", "100")
    await pin(deployment, "BTC-USDT", "200")
    shown = await get_symbol(deployment, "BTC-USDT")
    reference = shown.reference_price
    assert (reference.source, reference.price, reference.upstream_price) == ("ops", "200", "100")
    assert (reference.reason, reference.actor, reference.stale) == ("bad prints", "ops", False)
    assert await outcome(orders.PlaceOrder(limit_order(price="220"))) == "ok"
    r = await refused(orders.PlaceOrder(limit_order(price="220.01")))
    assert (r.reason, r.metadata["reference_source"]) == ("PRICE_OUT_OF_BAND", "ops")
    await pin(deployment, "BTC-USDT", clear=True)
    await wait_for_reference(deployment, "BTC-USDT", "upstream", "100")
    assert await outcome(orders.PlaceOrder(limit_order(price="110.01"))) == (
        FP,
        "PRICE_OUT_OF_BAND",
    )


async def test_market_orders_without_a_fresh_reference(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    # BTC-USDT-PERP refuses market orders without a fresh reference (refuse_market).
    r = await refused(orders.PlaceOrder(market_order(quantity="0.002")))
    assert (r.code, r.reason, r.metadata["state"]) == (FP, "REFERENCE_PRICE_UNAVAILABLE", "missing")
    await trade(deployment, PERP, "50000", quantity="0.002")
    assert await outcome(orders.PlaceOrder(market_order(quantity="0.002"))) == "ok"
    r = await refused(orders.PlaceOrder(market_order(quantity="0.001")))  # 50 < 100
    assert (r.reason, r.metadata["price_basis"]) == (
        "ORDER_NOTIONAL_OUT_OF_RANGE",
        "reference_upstream",
    )
    # The reference goes stale: market orders refused, reduce-only ones and limit orders pass.
    await set_limits(deployment, PERP, reference_max_age_ms=1)
    await asyncio.sleep(0.05)
    stale = (await get_symbol(deployment, PERP)).reference_price
    assert stale.stale and stale.max_age_ms == 1 and stale.age_ms >= 1
    r = await refused(orders.PlaceOrder(market_order(quantity="0.002")))
    assert (r.reason, r.metadata["state"]) == ("REFERENCE_PRICE_UNAVAILABLE", "stale")
    closing = market_order("carol", quantity="0.002", side=pb.SIDE_SELL, reduce_only=True)
    assert await outcome(orders.PlaceOrder(closing)) == "ok"
    assert await outcome(orders.PlaceOrder(limit_order("alice", PERP, price="90000"))) == "ok"
    # skip_band: market orders go on, priced at the stale reference.
    await set_limits(deployment, PERP, stale_reference=apb.STALE_REFERENCE_SKIP_BAND)
    assert await outcome(orders.PlaceOrder(market_order(quantity="0.002"))) == "ok"
    assert (await get_symbol(deployment, PERP)).reference_price.stale_reference == (
        apb.STALE_REFERENCE_SKIP_BAND
    )


# -- leverage -----------------------------------------------------------------------


async def test_leverage_brackets_and_overrides(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    await trade(deployment, PERP, "50000", quantity="0.002")  # carol is long 0.002

    def buy(account: str, quantity: str, leverage: int) -> Any:
        return orders.PlaceOrder(
            limit_order(account, PERP, quantity=quantity, price="50000", leverage=leverage)
        )

    assert await outcome(buy("alice", "1", 125)) == "ok"  # 50000: exactly the first cap
    r = await refused(buy("alice", "1.001", 125))
    assert (r.code, r.reason) == (FP, "LEVERAGE_EXCEEDED")
    assert (r.metadata["max_leverage"], r.metadata["bound_by"]) == ("100", "symbol_brackets")
    assert await outcome(buy("alice", "1.001", 100)) == "ok"

    changed = await set_leverage(deployment, account_id="alice", max_leverage=20)
    assert changed.limit.max_leverage == 20 and not changed.HasField("previous")
    account = await deployment.clients.admin.GetAccount(apb.GetAccountRequest(account_id="alice"))
    assert (account.account.leverage_limit.max_leverage, account.account.leverage_limit.actor) == (
        20,
        "risk",
    )
    r = await refused(buy("alice", "0.01", 21))
    assert (r.metadata["max_leverage"], r.metadata["bound_by"]) == ("20", "account_override")
    assert await outcome(buy("alice", "0.01", 20)) == "ok"
    assert await outcome(buy("bob", "0.01", 100)) == "ok"

    request = apb.SetLeverageLimitRequest(
        symbol=PERP, max_leverage=50, reason="volatility", actor="risk",
        brackets=[apb.LeverageBracket(notional_floor="0", notional_cap="1000", max_leverage=50),
                  apb.LeverageBracket(notional_floor="1000", max_leverage=10)],
    )  # fmt: skip
    request.ttl.FromSeconds(3600)
    await deployment.clients.admin.SetLeverageLimit(request)
    shown = await get_symbol(deployment, PERP)
    assert shown.leverage_override.max_leverage == 50 and shown.leverage_override.HasField(
        "expires_at"
    )
    assert [b.max_leverage for b in shown.leverage_override.brackets] == [50, 10]
    assert shown.spec.max_leverage == 125  # the symbol's own cap is unchanged
    r = await refused(buy("bob", "0.021", 11))  # 1050 notional
    assert (r.metadata["max_leverage"], r.metadata["bound_by"]) == (
        "10",
        "symbol_override_brackets",
    )
    assert await outcome(buy("bob", "0.02", 50)) == "ok"  # 1000: exactly at the cap

    # Reduce-only orders are never refused for leverage.
    await set_leverage(deployment, account_id="carol", max_leverage=1)
    closing = limit_order(
        "carol", PERP, side=pb.SIDE_SELL, quantity="0.002", price="50100",
        leverage=125, reduce_only=True,
    )  # fmt: skip
    assert await outcome(orders.PlaceOrder(closing)) == "ok"
    opening = limit_order("carol", PERP, side=pb.SIDE_SELL, quantity="0.002", price="50100",
                          leverage=2)  # fmt: skip
    assert await outcome(orders.PlaceOrder(opening)) == (FP, "LEVERAGE_EXCEEDED")

    cleared = await set_leverage(deployment, symbol=PERP, clear=True)
    assert not cleared.HasField("limit") and cleared.previous.max_leverage == 50
    await set_leverage(deployment, account_id="alice", clear=True)
    assert await outcome(buy("alice", "0.021", 125)) == "ok"


async def test_spot_takes_no_leverage(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    assert await outcome(orders.PlaceOrder(limit_order(leverage=2))) == (FP, "LEVERAGE_EXCEEDED")
    assert await outcome(orders.PlaceOrder(limit_order(leverage=1))) == "ok"


# -- program channel ----------------------------------------------------------------


async def test_program_trading_forbidden_on_a_symbol(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    await set_limits(deployment, "ETH-USDT", program_trading_forbidden=True)
    assert (await get_symbol(deployment, "ETH-USDT")).program_trading_forbidden
    r = await refused(orders.PlaceOrder(limit_order(symbol="ETH-USDT")))
    assert (r.code, r.reason) == (PD, "PROGRAM_TRADING_FORBIDDEN")
    assert r.metadata == {"limit": "program_trading", "symbol": "ETH-USDT", "product": "spot",
                          "scope": "symbol", "channel": "program"}  # fmt: skip
    program = (("x-pretrade-channel", "program"),)
    assert await outcome(orders.PlaceOrder(limit_order(symbol="ETH-USDT"), metadata=program)) == (
        PD,
        "PROGRAM_TRADING_FORBIDDEN",
    )
    placed = await orders.PlaceOrder(limit_order(symbol="ETH-USDT"), metadata=INTERACTIVE)
    amend = pb.AmendOrderRequest(
        account_id="alice", symbol="ETH-USDT", order_id=placed.order_id, price="99"
    )
    assert await outcome(orders.AmendOrder(amend)) == (PD, "PROGRAM_TRADING_FORBIDDEN")
    assert await outcome(orders.AmendOrder(amend, metadata=INTERACTIVE)) == "ok"
    cancel = pb.CancelOrderRequest(account_id="alice", symbol="ETH-USDT", order_id=placed.order_id)
    assert await outcome(orders.CancelOrder(cancel)) == "ok"  # cancels always pass
    assert await outcome(orders.PlaceOrder(limit_order(symbol="BTC-USDT"))) == "ok"
    bad = await refused(
        orders.PlaceOrder(limit_order(), metadata=(("x-pretrade-channel", "robot"),))
    )
    assert (bad.code, list(bad.bad_fields)) == (INVALID, ["x-pretrade-channel"])
    await set_limits(deployment, "ETH-USDT", program_trading_forbidden=False)
    assert await outcome(orders.PlaceOrder(limit_order(symbol="ETH-USDT"))) == "ok"


# -- admin input -------------------------------------------------------------------------


async def test_bad_admin_input_names_the_field_and_changes_nothing(
    deployment: Deployment,
) -> None:
    admin = deployment.clients.admin
    before = await get_symbol(deployment, PERP)

    async def bad(call: Any) -> tuple[grpc.StatusCode, set[str]]:
        r = await refused(call)
        return r.code, set(r.bad_fields)

    spec = apb.SymbolSpec(
        symbol=PERP, product="perpetual", base_asset="BTC", quote_asset="USDT",
        tick_size="0.1", lot_size="-1", min_notional="1e3",
        leverage_brackets=[apb.LeverageBracket(notional_floor="0", notional_cap="10", max_leverage=5),
                           apb.LeverageBracket(notional_floor="11", max_leverage=4)],
    )  # fmt: skip
    upsert = apb.UpsertSymbolRequest(spec=spec, reason="r", actor="a")
    assert await bad(admin.UpsertSymbol(upsert)) == (
        INVALID,
        {"spec.lot_size", "spec.min_notional", "spec.leverage_brackets[1].notional_floor"},
    )
    masked = apb.UpsertSymbolRequest(
        spec=apb.SymbolSpec(symbol=PERP), reason="r", actor="a",
        update_mask=field_mask_pb2.FieldMask(paths=["tick_size", "symbol"]),
    )  # fmt: skip
    assert await bad(admin.UpsertSymbol(masked)) == (INVALID, {"update_mask"})
    masked.update_mask.paths[:] = ["tick_size"]
    masked.spec.symbol = "NOPE-USDT"
    assert (await refused(admin.UpsertSymbol(masked))).code == grpc.StatusCode.NOT_FOUND
    assert await get_symbol(deployment, PERP) == before

    leverage = admin.SetLeverageLimit
    assert await bad(
        leverage(apb.SetLeverageLimitRequest(max_leverage=5, reason="r", actor="a"))
    ) == (
        INVALID,
        {"target"},
    )
    assert await bad(
        leverage(apb.SetLeverageLimitRequest(account_id="alice", reason="r", actor="a"))
    ) == (INVALID, {"max_leverage"})
    with_brackets = apb.SetLeverageLimitRequest(
        account_id="alice", max_leverage=5, reason="r", actor="a",
        brackets=[apb.LeverageBracket(notional_floor="0", max_leverage=5)],
    )  # fmt: skip
    assert await bad(leverage(with_brackets)) == (INVALID, {"brackets"})
    overlapping = apb.SetLeverageLimitRequest(
        symbol=PERP, reason="r", actor="a",
        brackets=[apb.LeverageBracket(notional_floor="0", notional_cap="10", max_leverage=5),
                  apb.LeverageBracket(notional_floor="5", notional_cap="20", max_leverage=6)],
    )  # fmt: skip
    assert await bad(leverage(overlapping)) == (
        INVALID,
        {"brackets[1].notional_floor"},
    )
    assert await bad(
        leverage(apb.SetLeverageLimitRequest(symbol=PERP, max_leverage=2000, reason="", actor="a"))
    ) == (INVALID, {"max_leverage", "reason"})
    clear_with_ttl = apb.SetLeverageLimitRequest(symbol=PERP, clear=True, reason="r", actor="a")
    clear_with_ttl.ttl.FromSeconds(5)
    assert await bad(leverage(clear_with_ttl)) == (INVALID, {"ttl"})
    unknown = apb.SetLeverageLimitRequest(symbol="NOPE-USDT", max_leverage=5, reason="r", actor="a")
    assert (await refused(leverage(unknown))).code == grpc.StatusCode.NOT_FOUND

    price = admin.SetReferencePrice
    assert await bad(
        price(apb.SetReferencePriceRequest(symbol=PERP, price="-5", reason="r", actor="a"))
    ) == (INVALID, {"price"})
    assert await bad(price(apb.SetReferencePriceRequest(symbol=PERP, reason="r", actor="a"))) == (
        INVALID,
        {"price"},
    )
    missing = apb.SetReferencePriceRequest(symbol="NOPE-USDT", price="1", reason="r", actor="a")
    assert (await refused(price(missing))).code == grpc.StatusCode.NOT_FOUND
    assert await get_symbol(deployment, PERP) == before


async def test_new_symbol_with_limits(deployment: Deployment) -> None:
    spec = apb.SymbolSpec(
        symbol="DOGE-USDT", product="spot", base_asset="DOGE", quote_asset="USDT",
        tick_size="0.00001", lot_size="1", min_notional="1", max_leverage=1,
        stale_reference=apb.STALE_REFERENCE_REFUSE_MARKET,
    )  # fmt: skip
    response = await deployment.clients.admin.UpsertSymbol(
        apb.UpsertSymbolRequest(spec=spec, reason="listing", actor="ops")
    )
    assert response.created and response.symbol.spec == spec
    orders = deployment.clients.orders
    doge = {"symbol": "DOGE-USDT", "price": "0.12345"}
    assert await outcome(orders.PlaceOrder(limit_order(quantity="10", **doge))) == "ok"
    assert await outcome(orders.PlaceOrder(limit_order(quantity="10.5", **doge))) == (
        FP,
        "QTY_STEP_INVALID",
    )
    assert await outcome(orders.PlaceOrder(limit_order(quantity="8", **doge))) == (
        FP,
        "ORDER_NOTIONAL_OUT_OF_RANGE",
    )
    market = market_order(symbol="DOGE-USDT", quantity="10")
    assert await outcome(orders.PlaceOrder(market)) == (FP, "REFERENCE_PRICE_UNAVAILABLE")


@pytest.mark.parametrize("channel", ["program", "interactive", None])
async def test_product_wide_program_ban(redis_url: str, tmp_path: Any, channel: str | None) -> None:
    """A [[product]] ban, with a policy of its own, in both deployments."""
    from tests.support.servers import POLICY, running_gateway, running_interceptor, test_settings

    text = (POLICY / "default.toml").read_text()
    banned = text.replace(
        'product = "perpetual"\nreference_max_age_ms = 30000',
        'product = "perpetual"\nreference_max_age_ms = 30000\nprogram_trading_forbidden = true',
    ).replace("program_trading_forbidden = false\n\n[[symbol]]", "\n[[symbol]]")
    assert banned.count("program_trading_forbidden = true") == 1
    (tmp_path / "default.toml").write_text(banned)
    metadata = (("x-pretrade-channel", channel),) if channel else ()
    request = limit_order(symbol=PERP, price="50000", quantity="0.01")
    expected = "ok" if channel == "interactive" else (PD, "PROGRAM_TRADING_FORBIDDEN")
    async with running_gateway(test_settings(redis_url, policy=tmp_path)) as (_, clients):
        assert await outcome(clients.orders.PlaceOrder(request, metadata=metadata)) == expected
        spot = limit_order(symbol="BTC-USDT")
        assert await outcome(clients.orders.PlaceOrder(spot, metadata=metadata)) == "ok"
    async with running_interceptor(redis_url, policy=tmp_path) as guarded:
        orders = guarded.clients.orders
        assert await outcome(orders.PlaceOrder(request, metadata=metadata)) == expected
