"""Order limits set through one gateway's admin port are enforced by another gateway process;
the reference-price feed follows the upstream across restarts."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.embedded_redis import free_port
from gateway.exchange import start_exchange_server
from gateway.exchange.book import OrderType, Side
from gateway.refprice import ExecutionPriceFollower, TradePrices
from tests.support.rpc import limit_order
from tests.support.servers import Clients, connect, gateway_process, running_gateway, test_settings

PERP = "BTC-USDT-PERP"


async def until(clients: Clients, request: Callable[[], Any], expected: str | None) -> None:
    """Place orders on ``clients`` until the outcome is ``expected`` (a reason, None: accepted)."""
    seen: str | None = "nothing"
    for _ in range(400):
        try:
            await clients.orders.PlaceOrder(request())
            seen = None
        except grpc.aio.AioRpcError as exc:
            from tests.support.rpc import refusal

            seen = refusal(exc).reason or exc.code().name
        if seen == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {expected}, still {seen}")


def perp(account: str, leverage: int) -> Callable[[], Any]:
    return lambda: limit_order(account, PERP, quantity="0.01", price="50000", leverage=leverage)


@pytest.mark.slow
async def test_limits_changed_on_one_gateway_are_enforced_by_another_process(
    redis_url: str, tmp_path: pathlib.Path
) -> None:
    with gateway_process(redis_url, tmp_path) as b:
        other = await connect(b.order_address, b.admin_address)
        async with running_gateway(test_settings(redis_url)) as (_, here):
            admin = here.admin
            change = {"reason": "volatility", "actor": "risk"}
            await until(other, perp("alice", 125), None)

            await admin.SetLeverageLimit(
                apb.SetLeverageLimitRequest(account_id="alice", max_leverage=5, **change)
            )
            await until(other, perp("alice", 6), "LEVERAGE_EXCEEDED")
            await until(other, perp("alice", 5), None)
            shown = await other.admin.GetAccount(apb.GetAccountRequest(account_id="alice"))
            assert shown.account.leverage_limit.max_leverage == 5

            await admin.SetLeverageLimit(
                apb.SetLeverageLimitRequest(symbol=PERP, max_leverage=3, **change)
            )
            await until(other, perp("bob", 4), "LEVERAGE_EXCEEDED")
            await admin.SetLeverageLimit(
                apb.SetLeverageLimitRequest(symbol=PERP, clear=True, **change)
            )
            await until(other, perp("bob", 4), None)

            await admin.SetReferencePrice(
                apb.SetReferencePriceRequest(symbol="BTC-USDT", price="100", **change)
            )
            await until(other, lambda: limit_order(price="110.01"), "PRICE_OUT_OF_BAND")
            symbol = await other.admin.GetSymbol(apb.GetSymbolRequest(symbol="BTC-USDT"))
            assert (symbol.symbol.reference_price.source, symbol.symbol.reference_price.price) == (
                "ops",
                "100",
            )

            mask = field_mask_pb2.FieldMask(paths=["tick_size", "program_trading_forbidden"])
            await admin.UpsertSymbol(
                apb.UpsertSymbolRequest(
                    spec=apb.SymbolSpec(
                        symbol="ETH-USDT", tick_size="1", program_trading_forbidden=True
                    ),
                    update_mask=mask,
                    **change,
                )
            )
            eth = limit_order(symbol="ETH-USDT", price="100.5")
            await until(other, lambda: eth, "PROGRAM_TRADING_FORBIDDEN")
            interactive = (("x-pretrade-channel", "interactive"),)
            try:
                await other.orders.PlaceOrder(eth, metadata=interactive)
            except grpc.aio.AioRpcError as exc:
                from tests.support.rpc import refusal

                assert refusal(exc).reason == "PRICE_TICK_INVALID"
            else:
                raise AssertionError("the new tick size was not enforced")
        await other.close()


async def test_price_feed_follows_the_upstream_across_restarts() -> None:
    prices = TradePrices()
    port = free_port()
    follower = ExecutionPriceFollower(f"127.0.0.1:{port}", prices)
    follower.start()  # nothing listens there yet: it retries
    try:
        for price in ("100", "101.5"):
            server = await start_exchange_server(f"127.0.0.1:{port}")
            engine = server.exchange.engine
            try:
                # The feed is live-only: trade until the follower (reconnecting) sees one.
                for _ in range(300):
                    for side, account in ((Side.SELL, "bob"), (Side.BUY, "carol")):
                        engine.place(
                            account_id=account, symbol="SOL-USDT", side=side,
                            order_type=OrderType.LIMIT, quantity=Decimal(1), price=Decimal(price),
                        )  # fmt: skip
                    await asyncio.sleep(0.02)
                    seen = prices.get("SOL-USDT")
                    if seen is not None and seen[0] == Decimal(price):
                        break
                else:
                    raise AssertionError(f"the follower never saw a trade at {price}")
            finally:
                await server.server.stop(0)
        assert follower.trades_seen >= 2
    finally:
        await follower.stop()
