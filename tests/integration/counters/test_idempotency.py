"""The retry record in the counter script: a retry of an admitted place is not counted again."""

from __future__ import annotations

import asyncio

import grpc
from redis.asyncio import Redis

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.gate import CounterGate
from gateway.counters.keys import counting_subject, idempotency_key
from gateway.counters.limits import DEFAULT_SCOPE, CounterPolicy, LimitKind, parse_value
from gateway.counters.resolve import LimitResolver
from gateway.counters.store import RedisCounterStore
from gateway.embedded_redis import EmbeddedRedis
from gateway.model import Action
from gateway.reasons import Reason
from gateway.reliability.failure import FailurePolicy
from gateway.reliability.idempotency import FREE_RETRIES, REPLAY_KEY
from gateway.snapshot import Snapshot
from gateway.store.commands import RedisPyCommands
from gateway.store.redis_client import hot_client
from gateway.validation import OrderCall
from tests.integration.counters.conftest import SYMBOLS, Harness, admitted, denied
from tests.support.faults import pause, resume

WINDOW_MS = 30_000
KEY = idempotency_key(counting_subject("alice"), "alice", "c-1")


def remaining(verdict: object) -> str:
    return dict(admitted(verdict).metadata)["x-ratelimit-remaining"]  # type: ignore[arg-type]


async def test_a_retry_changes_nothing_but_its_record(harness: Harness) -> None:
    harness.gate.idempotency_window_ms = WINDOW_MS
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "3/1s", "daily_open": "10"}})
    assert remaining(await harness.place(client_order_id="c-1")) == "2"
    assert await harness.redis.get(KEY) == "0"
    assert 0 < await harness.redis.pttl(KEY) <= WINDOW_MS
    before = {k: v for k, v in (await harness.dump()).items() if k != KEY}
    for used in range(1, FREE_RETRIES + 1):
        retry = admitted(await harness.place(client_order_id="c-1"))
        assert retry.metadata == ((REPLAY_KEY, "1"),)
        assert await harness.redis.get(KEY) == str(used)
    after = {k: v for k, v in (await harness.dump()).items() if k != KEY}
    assert after == before
    # Past the free retries it is a new order again, counted and checked.
    assert remaining(await harness.place(client_order_id="c-1")) == "1"
    assert await harness.redis.get(KEY) == "0"


async def test_a_refused_place_leaves_no_record(harness: Harness) -> None:
    harness.gate.idempotency_window_ms = WINDOW_MS
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "1/1s"}})
    admitted(await harness.place(client_order_id="c-0"))
    assert denied(await harness.place(client_order_id="c-1")).reason is Reason.ORDER_RATE_EXCEEDED
    assert not await harness.redis.exists(KEY)
    assert denied(await harness.place(client_order_id="c-1")).reason is Reason.ORDER_RATE_EXCEEDED


async def test_the_record_ends_with_a_definitive_answer(harness: Harness) -> None:
    harness.gate.idempotency_window_ms = WINDOW_MS
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "5/1s"}})
    first = admitted(await harness.place(client_order_id="c-1"))
    first.failed(grpc.StatusCode.UNAVAILABLE)  # outcome unknown: the record stays
    await harness.gate.close()
    assert await harness.redis.exists(KEY)
    retry = admitted(await harness.place(client_order_id="c-1"))
    retry.failed(grpc.StatusCode.FAILED_PRECONDITION)  # the exchange said no: settled
    await harness.gate.close()
    assert not await harness.redis.exists(KEY)
    assert remaining(await harness.place(client_order_id="c-1")) == "3"


async def test_window_zero_is_off(harness: Harness) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "5/1s"}})
    assert remaining(await harness.place(client_order_id="c-1")) == "4"
    assert remaining(await harness.place(client_order_id="c-1")) == "3"
    assert not await harness.redis.exists(KEY)


async def test_a_place_that_timed_out_after_redis_counted_it(redis_server: EmbeddedRedis) -> None:
    """Redis stops with the script in its socket: the gateway gives up (STORE_UNAVAILABLE),
    Redis runs it once it is back. The client's retry is not counted a second time."""
    redis: Redis = hot_client(redis_server.url)  # type: ignore[assignment]
    policy = CounterPolicy(
        tables={DEFAULT_SCOPE: {LimitKind.ORDER_RATE: parse_value(LimitKind.ORDER_RATE, "5/1m")}}
    )
    gate = CounterGate(
        RedisCounterStore(RedisPyCommands(redis)),
        LimitResolver(Snapshot(SYMBOLS), policy),
        failure=FailurePolicy(deadline_ms=200),
        idempotency_window_ms=WINDOW_MS,
    )

    def order(coid: str) -> OrderCall:
        return OrderCall(Action.PLACE, "alice", "BTC-USDT", side=pb.SIDE_BUY, client_order_id=coid)

    try:
        assert remaining(await gate.admit(order("c-0"))) == "4"  # a pooled connection
        pause(redis_server)
        try:
            refusal = denied(await gate.admit(order("c-1")))
            assert refusal.reason is Reason.STORE_UNAVAILABLE
            assert refusal.metadata["cause"] == "timeout"
        finally:
            resume(redis_server)
        for _ in range(100):  # the script runs once Redis reads its socket again
            if await redis.exists(KEY):
                break
            await asyncio.sleep(0.02)
        retry = admitted(await gate.admit(order("c-1")))
        assert retry.metadata == ((REPLAY_KEY, "1"),)
        assert remaining(await gate.admit(order("c-2"))) == "2"
    finally:
        await gate.close()
        await redis.aclose()
