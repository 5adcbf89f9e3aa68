"""Upstream failures reach the client unchanged, and a retry does not spend the budget twice.

Every test runs in both deployments, in front of a reference exchange whose
PlaceOrder can be made to fail or to answer late.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.keys import counting_subject, idempotency_key
from gateway.reliability.idempotency import FREE_RETRIES, REPLAY_KEY
from tests.support.faults import wait_for
from tests.support.load import set_limit
from tests.support.rpc import limit_order, refused
from tests.support.servers import Clients, running_gateway, running_interceptor, test_settings
from tests.support.upstream import FaultyExchange, running_upstream

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass
class Guarded:
    clients: Clients
    exchange: FaultyExchange
    redis: aioredis.Redis

    async def place(self, coid: str, **kw: Any) -> tuple[pb.PlaceOrderResponse, dict[str, str]]:
        call = self.clients.orders.PlaceOrder(limit_order("alice", client_order_id=coid), **kw)
        response = await call
        return response, dict(await call.trailing_metadata() or ())

    async def retry_record_gone(self, coid: str) -> None:
        key = idempotency_key(counting_subject("alice"), "alice", coid)
        await wait_for(lambda: self._absent(key), timeout_s=5)

    async def _absent(self, key: str) -> bool:
        return not await self.redis.exists(key)


@pytest.fixture(params=["proxy", "interceptor"])
async def guarded(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Guarded]:
    exchange = FaultyExchange()
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        if request.param == "proxy":
            async with running_upstream(exchange) as upstream:
                settings = test_settings(redis_url, upstream=upstream)
                async with running_gateway(settings) as (_, clients):
                    await set_limit(clients, apb.LIMIT_KIND_ORDER_RATE, "10/1m", "alice")
                    yield Guarded(clients, exchange, redis)
        else:
            async with running_interceptor(redis_url, exchange=exchange) as deployment:
                clients = deployment.clients
                await set_limit(clients, apb.LIMIT_KIND_ORDER_RATE, "10/1m", "alice")
                yield Guarded(clients, exchange, redis)
    finally:
        await redis.aclose()


async def test_upstream_failure_unchanged_and_retry_not_counted_again(guarded: Guarded) -> None:
    _, first = await guarded.place("A-1")
    assert first["x-ratelimit-remaining"] == "9"
    guarded.exchange.fail_next = [UNAVAILABLE]
    got = await refused(
        guarded.clients.orders.PlaceOrder(limit_order("alice", client_order_id="A-2"))
    )
    # The exchange's own answer, as it gave it: no gateway reason, its code and message.
    assert (got.code, got.reason, got.message) == (
        UNAVAILABLE, "", "injected upstream failure: UNAVAILABLE")  # fmt: skip
    response, trailers = await guarded.place("A-2")  # the client's retry
    assert response.status == pb.ORDER_STATUS_NEW
    assert trailers.get(REPLAY_KEY) == "1" and "x-ratelimit-remaining" not in trailers
    _, after = await guarded.place("A-3")
    assert after["x-ratelimit-remaining"] == "7"  # A-1, A-2 (once), A-3


async def test_answer_lost_to_the_client_deadline(guarded: Guarded) -> None:
    """The exchange placed the order but the client gave up first: its retry is let through
    uncounted and the exchange decides on the duplicate."""
    guarded.exchange.late_s = 1.0
    got = await refused(
        guarded.clients.orders.PlaceOrder(limit_order("alice", client_order_id="B-1"), timeout=0.3)
    )
    assert got.code is grpc.StatusCode.DEADLINE_EXCEEDED
    guarded.exchange.late_s = 0.0
    dup = await refused(
        guarded.clients.orders.PlaceOrder(limit_order("alice", client_order_id="B-1"))
    )
    assert (dup.code, dup.reason) == (grpc.StatusCode.ALREADY_EXISTS, "")
    _, after = await guarded.place("B-2")
    assert after["x-ratelimit-remaining"] == "8"  # B-1 once, B-2


async def test_after_a_definitive_answer_the_same_id_counts_again(guarded: Guarded) -> None:
    await guarded.place("C-1")
    await guarded.retry_record_gone("C-1")  # dropped once the exchange accepted it
    dup = await refused(
        guarded.clients.orders.PlaceOrder(limit_order("alice", client_order_id="C-1"))
    )
    assert dup.code is grpc.StatusCode.ALREADY_EXISTS  # counted: it is a new attempt
    await guarded.retry_record_gone("C-1")  # ALREADY_EXISTS is definitive too
    _, after = await guarded.place("C-2")
    assert after["x-ratelimit-remaining"] == "7"


async def test_free_retries_are_bounded(guarded: Guarded) -> None:
    guarded.exchange.fail_next = [UNAVAILABLE] * (FREE_RETRIES + 2)
    for _ in range(FREE_RETRIES + 2):
        got = await refused(
            guarded.clients.orders.PlaceOrder(limit_order("alice", client_order_id="D-1"))
        )
        assert got.code is UNAVAILABLE
    # The first attempt and the first retry past the free ones were counted.
    _, after = await guarded.place("D-2")
    assert after["x-ratelimit-remaining"] == "7"
    assert guarded.exchange.place_calls == FREE_RETRIES + 3


async def test_orders_without_a_client_order_id_are_each_counted(guarded: Guarded) -> None:
    guarded.exchange.fail_next = [UNAVAILABLE]
    await refused(guarded.clients.orders.PlaceOrder(limit_order("alice")))
    call = guarded.clients.orders.PlaceOrder(limit_order("alice"))
    await call
    trailers = dict(await call.trailing_metadata() or ())
    assert trailers["x-ratelimit-remaining"] == "8"
