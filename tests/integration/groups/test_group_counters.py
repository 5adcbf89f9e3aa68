"""Counters count per group once accounts are linked: one budget, one slot, both gateways."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.counters.gate import CounterGate
from gateway.counters.keys import counting_subject
from gateway.counters.limits import DEFAULT_SCOPE, CounterPolicy, Scope, ScopeRef
from gateway.counters.resolve import LimitResolver
from gateway.counters.store import RedisCounterStore
from gateway.model import FlagKind
from gateway.reasons import Reason
from gateway.snapshot import Snapshot
from gateway.store.commands import RedisPyCommands
from gateway.store.redis_client import hot_client
from tests.integration.counters.conftest import SYMBOLS, Clock, Harness, admitted, denied


def grouped_harness(redis: Redis, clock: Clock) -> Harness:
    snapshot = Snapshot(SYMBOLS)
    gate = CounterGate(
        RedisCounterStore(RedisPyCommands(redis), clock_us=clock),
        LimitResolver(snapshot, CounterPolicy()),
        subject_of=lambda a: counting_subject(a, snapshot.groups.group_of(a)),
        clock=lambda: clock.now_ms,
    )
    return Harness(redis, clock, gate, snapshot)


def link(harness: Harness, account: str, group: str, version: int = 1) -> None:
    harness.snapshot.apply(FlagKind.GROUP_MEMBER, account, {"group": group}, version)


@pytest.fixture
async def two(redis_url: str) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two gateways' gates on one Redis, one clock."""
    clock = Clock()
    redis_a, redis_b = hot_client(redis_url), hot_client(redis_url)
    a, b = grouped_harness(redis_a, clock), grouped_harness(redis_b, clock)
    try:
        yield a, b
    finally:
        for h in (a, b):
            await h.gate.close()
            await h.redis.aclose()


async def test_linked_accounts_share_every_counter(two: tuple[Harness, Harness]) -> None:
    a, b = two
    for h in (a, b):
        h.set_limits(
            {
                DEFAULT_SCOPE: {"order_rate": "3/1m", "cancel_rate": "2/1m"},
                ScopeRef(Scope.PRODUCT, "spot"): {"daily_open": "4"},
            }
        )
        link(h, "alice", "g1")
        link(h, "bob", "g1")
    # Split across accounts and gateways, the group still gets three orders a minute.
    admitted(await a.place("alice"))
    admitted(await b.place("bob"))
    admitted(await a.place("bob", "ETH-USDT"))
    refusal = denied(await b.place("alice"))
    assert refusal.reason is Reason.ORDER_RATE_EXCEEDED
    assert refusal.metadata["subject"] == "grp:g1" and refusal.metadata["count"] == "3"
    # An unlinked account has its own budget.
    admitted(await a.place("carol"))
    # Cancels too.
    admitted(await a.cancel("alice"))
    admitted(await b.cancel("bob"))
    assert denied(await a.cancel("bob")).reason is Reason.CANCEL_RATE_EXCEEDED


async def test_daily_position_limit_is_per_group(two: tuple[Harness, Harness]) -> None:
    a, b = two
    for h in (a, b):
        h.set_limits({ScopeRef(Scope.PRODUCT, "spot"): {"daily_open": "2"}})
        link(h, "alice", "g1")
        link(h, "bob", "g1")
    admitted(await a.place("alice"))
    admitted(await b.place("bob", "ETH-USDT"))
    refusal = denied(await a.place("bob"))
    assert refusal.reason is Reason.DAILY_POSITION_LIMIT
    assert refusal.metadata["counted"] == "product:spot"
    admitted(await a.place("bob", reduce_only=True))  # reduce-only orders never open


async def test_group_keys_share_one_slot_and_unlinking_restores_own_counters(
    two: tuple[Harness, Harness],
) -> None:
    a, _ = two
    a.set_limits({DEFAULT_SCOPE: {"order_rate": "1/1m"}})
    admitted(await a.place("alice"))  # before linking: alice's own counter
    link(a, "alice", "g1")
    link(a, "bob", "g1")
    admitted(await a.place("alice"))  # the group's counter starts afresh
    assert denied(await a.place("bob")).metadata["subject"] == "grp:g1"
    keys = [k async for k in a.redis.scan_iter("pt:{grp:g1}:*")]
    assert keys and len({key_slot(k.encode()) for k in keys}) == 1
    a.snapshot.apply(FlagKind.GROUP_MEMBER, "alice", None, 2)
    # Back on her own counter, which still holds her order from before the link.
    assert denied(await a.place("alice")).metadata["subject"] == "acct:alice"


async def test_the_cancel_ratio_is_the_groups(two: tuple[Harness, Harness]) -> None:
    a, b = two
    for h in (a, b):
        h.set_limits({DEFAULT_SCOPE: {"cancel_ratio": "min_orders=2,max_ratio=0.5"}})
        link(h, "alice", "g1")
        link(h, "bob", "g1")
    admitted(await a.place("alice"))
    admitted(await b.place("alice"))
    admitted(await b.cancel("bob"))  # 1 cancel for the group's 2 orders: 0.5
    refusal = denied(await a.cancel("bob"))
    assert refusal.reason is Reason.CANCEL_RATIO_EXCEEDED
    assert (refusal.metadata["cancels"], refusal.metadata["orders"]) == ("1", "2")
    admitted(await a.cancel("carol"))  # carol's own day: no orders, below min_orders
