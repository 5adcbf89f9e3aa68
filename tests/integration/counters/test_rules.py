"""Each rule at its boundary, on a real Redis, with the script's clock pinned by the test."""

from __future__ import annotations

import grpc
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.counters.gate import LIMIT_KEY, NAME_KEY, REMAINING_KEY, WINDOW_KEY, CounterGate
from gateway.counters.keys import counting_subject, day_key, rate_key
from gateway.counters.limits import DEFAULT_SCOPE, CounterPolicy, LimitKind, Scope, ScopeRef
from gateway.counters.resolve import LimitResolver
from gateway.counters.store import RedisCounterStore
from gateway.model import Action
from gateway.reasons import Reason
from gateway.snapshot import Snapshot
from gateway.store.commands import RedisPyCommands
from gateway.validation import OrderCall
from tests.integration.counters.conftest import EPOCH_US, SYMBOLS, Harness, admitted, denied

DAY_MS = 86_400_000
PERP = ScopeRef(Scope.PRODUCT, "perpetual")
BTC = ScopeRef(Scope.SYMBOL, "BTC-USDT")


async def test_order_rate_boundary_retry_and_metadata(harness: Harness) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "3/1s,5/10s"}})
    remaining = []
    for _ in range(3):
        verdict = admitted(await harness.place())
        remaining.append(dict(verdict.metadata)[REMAINING_KEY])
        harness.clock.advance_ms(100)
    assert remaining == ["2", "1", "0"]
    assert dict(verdict.metadata)[NAME_KEY] == "order_rate"
    assert (dict(verdict.metadata)[WINDOW_KEY], dict(verdict.metadata)[LIMIT_KEY]) == ("1s", "3")

    refusal = denied(await harness.place())  # at 300 ms: the first admission leaves at 1000 ms
    assert refusal.reason is Reason.ORDER_RATE_EXCEEDED
    assert refusal.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.retry_after_ms == 700
    assert {k: refusal.metadata[k] for k in ("limit", "window", "count", "max")} == {
        "limit": "order_rate", "window": "1s", "count": "3", "max": "3"}  # fmt: skip
    assert refusal.metadata["subject"] == "acct:alice"
    assert refusal.metadata["source"] == "policy:default"

    harness.clock.advance_ms(699)
    assert denied(await harness.place()).retry_after_ms == 1
    harness.clock.advance_ms(1)
    verdict = admitted(await harness.place())
    assert dict(verdict.metadata)[REMAINING_KEY] == "0"
    # Amends count as orders. At 2 s the 1 s window holds one call, the 10 s window four.
    harness.clock.advance_ms(1000)
    verdict = admitted(await harness.amend(qty="2"))
    assert (
        dict(verdict.metadata)[WINDOW_KEY] == "10s" and dict(verdict.metadata)[REMAINING_KEY] == "0"
    )
    harness.clock.advance_ms(1000)
    refusal = denied(await harness.amend(qty="2"))
    assert (refusal.reason, refusal.metadata["window"]) == (Reason.ORDER_RATE_EXCEEDED, "10s")
    assert refusal.retry_after_ms == 10_000 - 3000  # the first order, placed at 0, leaves at 10 s


async def test_accounts_have_their_own_budgets(harness: Harness) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "1/1s"}})
    admitted(await harness.place("alice"))
    admitted(await harness.place("bob"))
    denied(await harness.place("alice"))


async def test_cancels_have_their_own_budget(harness: Harness) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "1/1s", "cancel_rate": "2/1s"}})
    admitted(await harness.place())
    denied(await harness.place())
    admitted(await harness.cancel())  # orders used up, cancels not
    admitted(await harness.cancel())
    refusal = denied(await harness.cancel())
    assert refusal.reason is Reason.CANCEL_RATE_EXCEEDED
    assert refusal.metadata["limit"] == "cancel_rate" and refusal.retry_after_ms == 1000


async def test_large_orders_at_the_threshold_and_their_cancels(harness: Harness) -> None:
    harness.set_limits(
        {
            DEFAULT_SCOPE: {"order_rate": "100/1s", "cancel_rate": "100/1s"},
            BTC: {
                "large_notional": "1000",
                "large_order_rate": "1/1s",
                "large_cancel_rate": "1/1s",
            },
        }
    )
    admitted(await harness.place(qty="9.99"))  # 999: not large
    admitted(await harness.place(qty="10", client_order_id="big-1"))  # 1000: large
    refusal = denied(await harness.place(qty="20"))
    assert refusal.reason is Reason.LARGE_ORDER_RATE_EXCEEDED
    assert refusal.metadata["limit"] == "large_order_rate"
    admitted(await harness.place(qty="1"))  # small orders still pass
    admitted(await harness.place(symbol="ETH-USDT", qty="1000"))  # no threshold on ETH
    admitted(await harness.place(price=None, qty="1000"))  # market order, no reference price

    harness.clock.advance_ms(1000)
    admitted(await harness.place(qty="50", accept_as="X-big-2"))
    # Cancels of remembered large orders count against the large cancel cap.
    admitted(await harness.cancel(client_order_id="big-1"))
    refusal = denied(await harness.cancel(order_id="X-big-2"))
    assert refusal.reason is Reason.LARGE_ORDER_RATE_EXCEEDED
    assert refusal.metadata["limit"] == "large_cancel_rate"
    admitted(await harness.cancel(order_id="X-small"))  # unknown orders are not large


async def test_market_orders_use_the_reference_price_when_known(harness: Harness) -> None:
    harness.set_limits({BTC: {"large_notional": "1000", "large_order_rate": "1/1s"}})
    harness.gate.reference_price = lambda symbol: __import__("decimal").Decimal(100)
    admitted(await harness.place(price=None, qty="10"))
    assert denied(await harness.place(price=None, qty="10")).metadata["limit"] == "large_order_rate"


async def test_daily_open_limit_reduce_only_and_rollover(harness: Harness) -> None:
    # Day starts at 08:00 UTC; the pinned clock starts at 22:13:20 UTC.
    harness.set_limits({PERP: {"daily_open": "2"}}, day_start_ms=8 * 3_600_000)
    for _ in range(2):
        admitted(await harness.place(symbol="BTC-PERP"))
    admitted(await harness.place(symbol="BTC-PERP", reduce_only=True))
    admitted(await harness.place(symbol="BTC-USDT"))  # spot has no daily limit
    refusal = denied(await harness.place(symbol="BTC-PERP"))
    assert refusal.reason is Reason.DAILY_POSITION_LIMIT
    assert refusal.metadata["counted"] == "product:perpetual"
    assert (refusal.metadata["count"], refusal.metadata["max"]) == ("2", "2")
    until_rollover = (8 * 3_600_000 - harness.clock.now_ms % DAY_MS) % DAY_MS
    assert refusal.retry_after_ms == until_rollover
    harness.clock.advance_ms(until_rollover - 1)
    denied(await harness.place(symbol="BTC-PERP"))
    harness.clock.advance_ms(1)
    verdict = admitted(await harness.place(symbol="BTC-PERP"))
    assert dict(verdict.metadata)[REMAINING_KEY] == "1"


async def test_daily_open_per_symbol_counts_apart_from_its_product(harness: Harness) -> None:
    harness.set_limits(
        {
            DEFAULT_SCOPE: {"daily_open": "1"},
            ScopeRef(Scope.SYMBOL, "ETH-USDT"): {"daily_open": "2"},
        }
    )
    admitted(await harness.place(symbol="BTC-USDT"))
    denied(await harness.place(symbol="BTC-USDT"))
    admitted(await harness.place(symbol="ETH-USDT"))
    admitted(await harness.place(symbol="ETH-USDT"))
    assert denied(await harness.place(symbol="ETH-USDT")).metadata["counted"] == "symbol:ETH-USDT"


async def test_cancel_ratio(harness: Harness) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"cancel_ratio": "min_orders=4,max_ratio=0.5"}})
    for _ in range(3):
        admitted(await harness.place())
    for _ in range(4):  # under min_orders: no ratio yet
        admitted(await harness.cancel())
    harness.clock.advance_ms(DAY_MS)  # a new day: tallies start again
    for _ in range(4):
        admitted(await harness.place())
    admitted(await harness.cancel())  # 1/4
    admitted(await harness.cancel())  # 2/4 = 0.5, not above
    refusal = denied(await harness.cancel())  # 3/4 > 0.5
    assert refusal.reason is Reason.CANCEL_RATIO_EXCEEDED
    assert {k: refusal.metadata[k] for k in ("cancels", "orders", "max_ratio", "min_orders")} == {
        "cancels": "2", "orders": "4", "max_ratio": "0.5", "min_orders": "4"}  # fmt: skip
    assert refusal.retry_after_ms == DAY_MS - harness.clock.now_ms % DAY_MS
    admitted(await harness.place())
    admitted(await harness.place())
    admitted(await harness.cancel())  # 3/6 = 0.5


async def test_min_resting_time(harness: Harness) -> None:
    harness.set_limits({PERP: {"min_resting": "500ms"}})
    admitted(await harness.place(symbol="BTC-PERP", client_order_id="c-1"))
    harness.clock.advance_ms(200)
    refusal = denied(await harness.cancel(symbol="BTC-PERP", client_order_id="c-1"))
    assert refusal.reason is Reason.MIN_RESTING_TIME
    assert refusal.retry_after_ms == 300
    assert (refusal.metadata["count"], refusal.metadata["window"]) == ("200", "500ms")
    harness.clock.advance_ms(299)
    assert (
        denied(await harness.cancel(symbol="BTC-PERP", client_order_id="c-1")).retry_after_ms == 1
    )
    harness.clock.advance_ms(1)
    admitted(await harness.cancel(symbol="BTC-PERP", client_order_id="c-1"))

    # By exchange order id: remembered once the upstream has accepted the order.
    admitted(await harness.place(symbol="BTC-PERP", accept_as="X-7"))
    refusal = denied(await harness.amend(symbol="BTC-PERP", order_id="X-7", price="101"))
    assert refusal.reason is Reason.MIN_RESTING_TIME and refusal.retry_after_ms == 500
    admitted(await harness.cancel(symbol="BTC-PERP", order_id="X-unknown"))  # never seen
    admitted(await harness.cancel(symbol="BTC-USDT", order_id="X-7"))  # spot: no resting time
    ttl = await harness.redis.pttl("pt:{acct:alice}:ord:alice:i:X-7")
    assert 0 < ttl <= 1500  # remembered only as long as needed


async def test_refused_call_changes_nothing(harness: Harness) -> None:
    harness.set_limits(
        {
            DEFAULT_SCOPE: {
                "order_rate": "5/1s,2/10s,2000/1d",
                "daily_open": "10",
                "cancel_ratio": "min_orders=1,max_ratio=1",
            }
        }
    )
    admitted(await harness.place(client_order_id="a"))
    admitted(await harness.place(client_order_id="b"))
    before = await harness.dump()
    harness.clock.advance_ms(10)
    refusal = denied(await harness.place(client_order_id="c"))  # 1 s and 1 d fine, 10 s full
    assert refusal.metadata["window"] == "10s"
    assert await harness.dump() == before

    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "100/1s", "daily_open": "2"}})
    before = await harness.dump()
    denied(await harness.place())  # the daily limit refuses: the rate windows stay untouched
    assert await harness.dump() == before


async def test_all_keys_of_a_call_share_one_slot_and_expire(harness: Harness) -> None:
    harness.set_limits(
        {
            DEFAULT_SCOPE: {
                "order_rate": "5/1s,2000/1d",
                "cancel_rate": "5/1s",
                "large_notional": "1",
                "large_order_rate": "5/1s",
                "large_cancel_rate": "5/1s",
                "daily_open": "10",
                "cancel_ratio": "min_orders=5,max_ratio=1",
                "min_resting": "1ms",
            }
        }
    )
    admitted(await harness.place(client_order_id="c1", accept_as="X-1"))
    harness.clock.advance_ms(5)
    admitted(await harness.cancel(order_id="X-1", client_order_id="c1"))
    keys = [key async for key in harness.redis.scan_iter("*")]
    assert len(keys) >= 7
    assert len({key_slot(key.encode()) for key in keys}) == 1
    for key in keys:
        assert await harness.redis.pttl(key) > 0, key


async def test_a_window_some_symbols_add_counts_only_their_calls(harness: Harness) -> None:
    """``1/1m`` on ETH-USDT only: BTC-USDT orders neither count in it nor trim it."""
    eth = ScopeRef(Scope.SYMBOL, "ETH-USDT")
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "2/10s"}, eth: {"order_rate": "1/1m"}})
    admitted(await harness.place(symbol="BTC-USDT"))
    admitted(await harness.place(symbol="BTC-USDT"))
    harness.clock.advance_ms(10_000)
    admitted(await harness.place(symbol="ETH-USDT"))  # the BTC orders are not in 1m
    harness.clock.advance_ms(15_000)
    admitted(await harness.place(symbol="BTC-USDT"))  # 10 s only: the ETH order stays in 1m
    harness.clock.advance_ms(5_000)
    refusal = denied(await harness.place(symbol="ETH-USDT"))
    assert refusal.metadata["window"] == "1m" and refusal.retry_after_ms == 40_000


async def test_a_bucketed_window_sets_its_ttl_when_a_newer_bucket_starts(harness: Harness) -> None:
    """Its hash outlives its newest bucket by a bucket and a second; later calls in that
    bucket leave the TTL alone (here a planted one, longer than any the script sets)."""
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "2000/1d"}})
    key = rate_key(counting_subject("alice"), LimitKind.ORDER_RATE, DAY_MS, bucketed=True)
    g = DAY_MS // 500
    harness.clock.now_us = EPOCH_US - EPOCH_US % (g * 1000)  # the start of a bucket
    admitted(await harness.place())
    assert 0 < await harness.redis.pttl(key) <= (500 + 2) * g + 1000
    await harness.redis.pexpire(key, 10 * DAY_MS)
    harness.clock.advance_ms(g - 1)  # the same bucket
    admitted(await harness.place())
    assert await harness.redis.pttl(key) > 2 * DAY_MS
    harness.clock.advance_ms(1)  # the next one
    admitted(await harness.place())
    assert 0 < await harness.redis.pttl(key) <= (500 + 2) * g + 1000


async def test_a_day_hash_gets_its_ttl_when_its_day_starts(harness: Harness) -> None:
    """The day's hash lives until an hour past the end of its day: the TTL is set when the
    hash is made for the day, later calls that day leave it alone (here a planted one,
    longer than any the script sets), and the next day's hash gets its own."""
    harness.set_limits({DEFAULT_SCOPE: {"daily_open": "100"}})
    key = day_key(counting_subject("alice"))
    admitted(await harness.place())
    day_end_ms = DAY_MS - harness.clock.now_ms % DAY_MS
    assert day_end_ms < await harness.redis.pttl(key) <= day_end_ms + 3_600_000
    await harness.redis.pexpire(key, 10 * DAY_MS)
    harness.clock.advance_ms(1000)
    admitted(await harness.place())
    assert await harness.redis.pttl(key) > 2 * DAY_MS
    assert await harness.redis.hget(key, "open:p:spot") == "2"
    harness.clock.advance_ms(day_end_ms)  # the next day: the hash is made anew
    admitted(await harness.place())
    assert DAY_MS - 1000 < await harness.redis.pttl(key) <= DAY_MS - 1000 + 3_600_000
    assert await harness.redis.hget(key, "open:p:spot") == "1"


async def test_script_is_reloaded_after_a_flush(harness: Harness) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "2/1s"}})
    admitted(await harness.place())
    await harness.redis.script_flush()
    admitted(await harness.place())
    denied(await harness.place())


async def test_store_failure_refuses_orders_and_lets_cancels_through() -> None:
    from gateway.embedded_redis import free_port

    policy = CounterPolicy()
    snapshot = Snapshot(SYMBOLS)
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    gate = CounterGate(RedisCounterStore(RedisPyCommands(dead), clock_us=lambda: EPOCH_US),
                       LimitResolver(snapshot, policy))  # fmt: skip
    from gateway.counters.limits import LimitKind, parse_value

    gate.resolver.set_policy(CounterPolicy(tables={DEFAULT_SCOPE: {
        LimitKind.ORDER_RATE: parse_value(LimitKind.ORDER_RATE, "5/1s"),
        LimitKind.CANCEL_RATE: parse_value(LimitKind.CANCEL_RATE, "5/1s")}}))  # fmt: skip
    place = OrderCall(Action.PLACE, "alice", "BTC-USDT")
    refusal = denied(await gate.admit(place))
    assert refusal.reason is Reason.STORE_UNAVAILABLE
    assert refusal.code is grpc.StatusCode.UNAVAILABLE and refusal.retry_after_ms
    admitted(await gate.admit(OrderCall(Action.CANCEL, "alice", "BTC-USDT", order_id="X-1")))
    await dead.aclose()


@pytest.mark.parametrize("paused_ms", [2000])
async def test_slow_store_hits_the_timeout(harness: Harness, paused_ms: int) -> None:
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "5/1s"}}, timeout_ms=100)
    admitted(await harness.place())  # connection and script are in place
    admin = Redis(connection_pool=harness.redis.connection_pool)
    await admin.execute_command("CLIENT", "PAUSE", paused_ms, "ALL")
    try:
        assert denied(await harness.place()).reason is Reason.STORE_UNAVAILABLE
    finally:
        # The pause lapses on its own; nothing to undo from a paused client.
        pass


async def test_a_bucketed_window_refuses_after_the_clock_went_far_back(harness: Harness) -> None:
    """Buckets stored far ahead of now (the clock stepped back by 9000 buckets) still give
    a refusal with a delay, not a script error answered as store-unavailable."""
    harness.set_limits({DEFAULT_SCOPE: {"order_rate": "1001/1s"}})  # bucketed: 2 ms buckets
    admitted(await harness.place())
    harness.clock.advance_ms(-9000 * 2)
    for _ in range(1000):
        admitted(await harness.place())
    refusal = denied(await harness.place())
    assert refusal.reason is Reason.ORDER_RATE_EXCEEDED
    assert refusal.retry_after_ms is not None and refusal.retry_after_ms >= 9000 * 2
