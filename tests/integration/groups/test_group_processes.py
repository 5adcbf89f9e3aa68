"""Linked accounts across gateway processes, and self-trade prevention after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import pytest
from grpc import aio

from gateway import Gatekeeper, load_policy
from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc
from gateway.engine import ORDER_METHODS
from gateway.exchange import start_exchange_server
from gateway.exchange.book import OrderType, Side
from gateway.exchange.service import ExchangeServer
from gateway.groups.store import GroupStore
from gateway.reasons import Denial
from gateway.store.redis_client import hot_client
from tests.support.rpc import limit_order, refused
from tests.support.servers import POLICY, Clients, connect, gateway_process

WHY = {"reason": "same funds", "actor": "ops"}
_T = TypeVar("_T")


@contextlib.asynccontextmanager
async def exchange() -> AsyncIterator[tuple[ExchangeServer, str]]:
    server = await start_exchange_server("127.0.0.1:0")
    try:
        yield server, f"127.0.0.1:{server.port}"
    finally:
        await server.server.stop(0.2)


@contextlib.asynccontextmanager
async def gateway(redis_url: str, tmp: pathlib.Path, upstream: str) -> AsyncIterator[Clients]:
    """A gateway process, started and stopped off the event loop: the exchange runs on it."""
    manager = gateway_process(redis_url, tmp, upstream=upstream)
    handle = await asyncio.to_thread(manager.__enter__)
    clients = await connect(handle.order_address, handle.admin_address)
    try:
        yield clients
    finally:
        await clients.close()
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def eventually(probe: Callable[[], Awaitable[_T]], done: Callable[[_T], bool]) -> _T:
    """Poll (bounded: 10 s) until ``done(probe())``: for what reaches another process."""
    for _ in range(500):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"never got there: {value}")


def sell(account: str, price: str) -> pb.PlaceOrderRequest:
    return limit_order(account, side=pb.SIDE_SELL, price=price)


def buy(account: str, price: str) -> pb.PlaceOrderRequest:
    return limit_order(account, side=pb.SIDE_BUY, price=price)


async def group_seen(c: Clients, account: str) -> apb.Group:
    try:
        return (await c.admin.GetGroup(apb.GetGroupRequest(account_id=account))).group
    except aio.AioRpcError:
        return apb.Group()


@pytest.mark.slow
async def test_two_gateway_processes_share_the_group(
    redis_url: str, tmp_path: pathlib.Path
) -> None:
    async with exchange() as (_, upstream), gateway(redis_url, tmp_path, upstream) as a, \
                   gateway(redis_url, tmp_path, upstream) as b:  # fmt: skip
        linked = await a.admin.LinkAccounts(
            apb.LinkAccountsRequest(account_ids=["alice", "bob"], **WHY)
        )
        group_id = linked.group.group_id
        await eventually(lambda: group_seen(b, "bob"), lambda g: g.group_id == group_id)

        # Counters: one budget for the group, whichever gateway and account.
        await a.admin.SetLimit(apb.SetLimitRequest(
            scope=apb.LIMIT_SCOPE_DEFAULT, kind=apb.LIMIT_KIND_ORDER_RATE,
            value="3/1m", **WHY))  # fmt: skip
        await eventually(
            lambda: b.admin.ListLimitOverrides(apb.ListLimitOverridesRequest()),
            lambda r: len(r.overrides) == 1,
        )
        await a.orders.PlaceOrder(buy("alice", "90"))
        await b.orders.PlaceOrder(buy("bob", "91"))
        await a.orders.PlaceOrder(buy("bob", "92"))
        r = await refused(b.orders.PlaceOrder(buy("alice", "93")))
        assert r.reason == "ORDER_RATE_EXCEEDED"
        assert r.metadata["subject"] == f"grp:{group_id}" and r.metadata["count"] == "3"
        await b.admin.RemoveLimit(apb.RemoveLimitRequest(
            scope=apb.LIMIT_SCOPE_DEFAULT, kind=apb.LIMIT_KIND_ORDER_RATE, **WHY))  # fmt: skip
        await eventually(
            lambda: a.admin.ListLimitOverrides(apb.ListLimitOverridesRequest()),
            lambda r: not r.overrides,
        )

        # Self-trade: an ask placed through one gateway reaches the other by the feed.
        ask = await a.orders.PlaceOrder(sell("alice", "100"))
        await eventually(lambda: group_seen(b, "bob"), lambda g: g.tracked_orders == 4)
        r = await refused(b.orders.PlaceOrder(buy("bob", "100")))
        assert (r.reason, r.metadata["conflicting_order_id"]) == ("SELF_TRADE", ask.order_id)

        # A group freeze set on one gateway stops every member on the other.
        await b.admin.SetAccountState(apb.SetAccountStateRequest(
            group_id=group_id, state=apb.ACCOUNT_STATE_FROZEN, **WHY))  # fmt: skip
        await eventually(
            lambda: group_seen(a, "alice"), lambda g: g.state == apb.ACCOUNT_STATE_FROZEN
        )
        r = await refused(a.orders.PlaceOrder(buy("alice", "80")))
        assert (r.reason, r.metadata["scope"]) == ("ACCOUNT_FROZEN", "group")


@pytest.mark.slow
async def test_self_trade_state_recovers_after_a_gateway_restart(
    redis_url: str, tmp_path: pathlib.Path
) -> None:
    async with exchange() as (venue, upstream):
        async with gateway(redis_url, tmp_path, upstream) as c:
            await c.admin.LinkAccounts(apb.LinkAccountsRequest(account_ids=["alice", "bob"], **WHY))
            kept = await c.orders.PlaceOrder(sell("alice", "100"))
            gone = await c.orders.PlaceOrder(sell("alice", "99"))
        # While no gateway runs, the 99 ask fills on the exchange directly.
        async with aio.insecure_channel(upstream) as channel:
            taker = await pb_grpc.OrderEntryStub(channel).PlaceOrder(buy("carol", "99"))
        assert taker.status == pb.ORDER_STATUS_FILLED
        assert venue.exchange.engine.get_order(gone.order_id) is None

        async with gateway(redis_url, tmp_path, upstream) as c:
            # Serving starts after the rebuild from the exchange's open orders: no waiting.
            group = await group_seen(c, "bob")
            assert group.tracked_orders == 1
            r = await refused(c.orders.PlaceOrder(buy("bob", "100")))
            assert (r.reason, r.metadata["conflicting_order_id"]) == ("SELF_TRADE", kept.order_id)
            # The filled one is not there any more: a bid at 99.5 passes.
            assert (await c.orders.PlaceOrder(buy("bob", "99.5"))).status == pb.ORDER_STATUS_NEW


async def test_interceptor_keeper_rebuilds_after_a_restart(redis_url: str) -> None:
    """The embedded deployment: a new Gatekeeper following the same exchange's feed."""
    place = ORDER_METHODS["/pretrade.v1.OrderEntry/PlaceOrder"]

    async def admit_bob(keeper: Gatekeeper) -> Denial | object:
        return await keeper.engine.admit(place, buy("bob", "100"))

    async with exchange() as (venue, upstream):
        store = GroupStore(hot_client(redis_url))
        for account in ("alice", "bob"):
            assert (await store.link(account, "g1", "same funds", "ops")).ok
        keeper = await Gatekeeper.open(redis_url, load_policy(POLICY), auth=False)
        try:
            keeper.follow_executions(upstream)
            resting = venue.exchange.engine.place(
                account_id="alice", symbol="BTC-USDT", side=Side.SELL,
                order_type=OrderType.LIMIT, quantity=Decimal(1), price=Decimal(100),
            )  # fmt: skip
            # Learnt from the feed alone (the order never went through this keeper).
            verdict = await eventually(lambda: admit_bob(keeper), lambda v: isinstance(v, Denial))
            assert isinstance(verdict, Denial) and verdict.reason == "SELF_TRADE"
        finally:
            await keeper.close()

        keeper = await Gatekeeper.open(redis_url, load_policy(POLICY), auth=False)
        try:
            feed = keeper.follow_executions(upstream)
            async with asyncio.timeout(10):
                await feed.connected.wait()
            assert keeper.own_orders.ready.is_set()
            verdict = await admit_bob(keeper)
            assert isinstance(verdict, Denial) and verdict.reason == "SELF_TRADE"
            assert verdict.metadata["conflicting_order_id"] == resting.order.order_id
        finally:
            await keeper.close()
