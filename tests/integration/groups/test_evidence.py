"""Evidence in Redis: accounts per device and IP, bounded and expiring; suspicions once per growth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.association import audit
from gateway.association.evidence import Evidence
from gateway.association.policy import MAX_TRACKED, AssociationPolicy
from gateway.association.recorder import QUEUE_MAX, EvidenceRecorder
from gateway.association.store import SUSPECTS_KEY, accounts_key, alert_key
from gateway.store.redis_client import hot_client

POLICY = AssociationPolicy(window_ms=3_600_000, max_accounts_per_device=2, max_accounts_per_ip=3)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = hot_client(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def events() -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    audit.add_audit_sink(lambda kind, fields: seen.append({"type": kind, **fields}))
    yield seen  # type: ignore[misc]
    audit._sinks.clear()


async def test_sightings_are_recorded_bounded_and_expire(redis: Redis) -> None:
    recorder = EvidenceRecorder(redis, POLICY)
    recorder.observe("alice", Evidence("dev-1", "203.0.113.7"))
    recorder.observe("alice", Evidence("dev-1", "203.0.113.7"))  # recorded once a minute at most
    recorder.observe("bob", Evidence("", "203.0.113.7"))
    assert await recorder.flush() == []
    assert recorder.recorded == 3
    assert await redis.zrange(accounts_key("device", "dev-1"), 0, -1) == ["alice"]
    assert sorted(await redis.zrange(accounts_key("ip", "203.0.113.7"), 0, -1)) == ["alice", "bob"]
    ttl = await redis.pttl(accounts_key("ip", "203.0.113.7"))
    assert 0 < ttl <= POLICY.window_ms


async def test_a_suspicion_is_raised_once_per_growth_whichever_gateway_flushes(
    redis_url: str, events: list[dict[str, Any]]
) -> None:
    clients = [hot_client(redis_url), hot_client(redis_url)]
    one, two = (EvidenceRecorder(c, POLICY) for c in clients)
    try:
        one.observe("a1", Evidence("dev-9"))
        two.observe("a2", Evidence("dev-9"))
        await one.flush()
        await two.flush()
        assert events == []  # two accounts on a device: allowed
        one.observe("a3", Evidence("dev-9"))
        raised = await one.flush()
        assert [(s.kind, s.value, s.count) for s in raised] == [("device", "dev-9", 3)]
        assert len(events) == 1
        event = events[0]
        assert (event["type"], event["evidence"], event["value"]) == (
            "SUSPECTED_ASSOCIATION",
            "device",
            "dev-9",
        )
        assert sorted(event["accounts"]) == ["a1", "a2", "a3"] and event["max_accounts"] == 2
        # Seen again from the other gateway: no new event; a fourth account: one more.
        two.observe("a1", Evidence("dev-9"))
        two.observe("a3", Evidence("dev-9"))
        await two.flush()
        assert len(events) == 1
        two.observe("a4", Evidence("dev-9"))
        await two.flush()
        assert len(events) == 2 and events[1]["count"] == 4
        suspects = await one.store.suspects(POLICY.window_ms)
        assert [(s.kind, s.value) for s in suspects] == [("device", "dev-9")]
        assert {a for a, _ in suspects[0].accounts} == {"a1", "a2", "a3", "a4"}
        assert await clients[0].zcard(SUSPECTS_KEY) == 1
        assert 0 < await clients[0].pttl(alert_key("device", "dev-9")) <= POLICY.window_ms
    finally:
        for c in clients:
            await c.aclose()


async def test_accounts_per_device_are_capped(redis: Redis) -> None:
    recorder = EvidenceRecorder(redis, POLICY)
    for n in range(MAX_TRACKED + 20):
        recorder.observe(f"acct-{n}", Evidence("shared"))
    await recorder.flush()
    assert await redis.zcard(accounts_key("device", "shared")) == MAX_TRACKED


async def test_a_kind_turned_off_is_not_recorded(redis: Redis) -> None:
    recorder = EvidenceRecorder(redis, AssociationPolicy(max_accounts_per_ip=0))
    recorder.observe("alice", Evidence("d", "10.0.0.1"))
    await recorder.flush()
    assert await redis.exists(accounts_key("ip", "10.0.0.1")) == 0
    assert await redis.exists(accounts_key("device", "d")) == 1


async def test_the_queue_is_bounded_and_failures_are_retried_later(redis_url: str) -> None:
    dead = hot_client("redis://127.0.0.1:1/0")
    recorder = EvidenceRecorder(dead, POLICY)
    for n in range(QUEUE_MAX + 5):
        recorder.observe(f"acct-{n}", Evidence("d"))
    assert len(recorder._queue) == QUEUE_MAX
    assert await recorder.flush() == []  # Redis unreachable: dropped, logged
    assert recorder.recorded == 0 and not recorder._queue
    # Not remembered as recorded: the next sighting is queued again.
    recorder.observe("acct-1", Evidence("d"))
    assert len(recorder._queue) == 1
    await dead.aclose()
