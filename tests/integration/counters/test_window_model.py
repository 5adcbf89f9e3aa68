"""The script's sliding windows against a simple reference model (hypothesis, real Redis).

Random call sequences at pinned times; at every call the script must agree
with the model on admit or refuse, on the remaining budget, and on the exact
delay until the call would pass. A refused call must leave every key as it
was. Both ways of keeping a window are checked: the sliding log (exact) and
the bucketed window (never above the limit in any window of its length,
refusing at most two buckets early).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.counters.limits import LimitKind, format_duration
from gateway.counters.plan import BUCKETS, Check, CounterPlan
from gateway.counters.store import RedisCounterStore
from gateway.store.commands import RedisPyCommands
from tests.integration.counters.conftest import EPOCH_US

SUBJECT = "acct:model"


def plan(windows: list[tuple[int, int]], bucketed: bool) -> CounterPlan:
    code, suffix = ("B", "b") if bucketed else ("W", "log")
    return CounterPlan(
        subject=SUBJECT,
        keys=tuple(f"pt:{{{SUBJECT}}}:rate:order_rate:{ms}:{suffix}" for _, ms in windows),
        ops=tuple((code, str(i + 1), str(lim), str(ms), "") for i, (lim, ms) in enumerate(windows)),
        checks=tuple(Check(LimitKind.ORDER_RATE, format_duration(ms), "t") for _, ms in windows),
        day_start_ms=0,
    )


@dataclass
class Model:
    windows: list[tuple[int, int]]
    bucketed: bool
    admitted_us: list[int] = field(default_factory=list)

    def decide(self, now_us: int) -> tuple[bool, dict[int, tuple[int, ...]]]:
        """(admitted, {op index: (remaining,)} or {op index: (count, limit, delay_ms)})."""
        failures: dict[int, tuple[int, ...]] = {}
        remaining: dict[int, tuple[int, ...]] = {}
        for index, (limit, window_ms) in enumerate(self.windows):
            if self.bucketed:
                count, delay = self._bucketed(now_us // 1000, limit, window_ms)
            else:
                count, delay = self._log(now_us, limit, window_ms)
            if count >= limit:
                failures[index] = (count, limit, delay)
            else:
                remaining[index] = (limit - count - 1,)
        if failures:
            return False, failures
        self.admitted_us.append(now_us)
        return True, remaining

    def _log(self, now_us: int, limit: int, window_ms: int) -> tuple[int, int]:
        live = sorted(t for t in self.admitted_us if t > now_us - window_ms * 1000)
        if len(live) < limit:
            return len(live), 0
        leaves_us = live[len(live) - limit] + window_ms * 1000
        return len(live), math.ceil((leaves_us - now_us) / 1000)

    def _bucketed(self, now_ms: int, limit: int, window_ms: int) -> tuple[int, int]:
        g = math.ceil(window_ms / BUCKETS)
        k = math.ceil(window_ms / g)
        live = sorted(b for t in self.admitted_us if (b := (t // 1000) // g) >= now_ms // g - k)
        if len(live) < limit:
            return len(live), 0
        bucket = live[len(live) - limit]
        return len(live), (bucket + k + 1) * g - now_ms


windows_st = st.lists(
    st.tuples(st.integers(1, 4), st.sampled_from([50, 100, 250, 1000, 3000])),
    min_size=1,
    max_size=3,
    unique_by=lambda w: w[1],
)
steps_st = st.lists(
    st.one_of(
        st.integers(0, 3000),  # bursts, microseconds apart
        st.integers(0, 60).map(lambda n: n * 50_000),  # whole 50 ms steps: exact boundaries
        st.integers(0, 3_500_000),
    ),
    min_size=1,
    max_size=40,
)


async def _run(url: str, windows: list[tuple[int, int]], bucketed: bool, start: int,
               steps: list[int]) -> None:  # fmt: skip
    redis = Redis.from_url(url, decode_responses=True)
    raw = Redis.from_url(url)
    try:
        await redis.flushall()
        clock = [EPOCH_US + start]
        store = RedisCounterStore(RedisPyCommands(redis), clock_us=lambda: clock[0])
        the_plan = plan(windows, bucketed)
        model = Model(windows, bucketed)
        for step in steps:
            clock[0] += step
            before = {k: await raw.dump(k) for k in the_plan.keys}
            reply = await store.consume(the_plan)
            admitted, expected = model.decide(clock[0])
            assert reply.accepted == admitted, (clock[0], reply, expected)
            if admitted:
                got = {o.index: (o.remaining,) for o in reply.outcomes}
            else:
                got = {o.index: (o.count, o.limit, o.delay_ms) for o in reply.outcomes}
                assert {k: await raw.dump(k) for k in the_plan.keys} == before
            assert got == expected
        # Whatever the model says: never more than the limit in any window.
        times = model.admitted_us
        for limit, window_ms in windows:
            for i, t in enumerate(times):
                assert sum(1 for u in times[: i + 1] if u > t - window_ms * 1000) <= limit
    finally:
        await redis.aclose()
        await raw.aclose()


SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(windows=windows_st, start=st.integers(0, 999_999), steps=steps_st)
def test_sliding_log_matches_the_model(
    redis_url: str, windows: list[tuple[int, int]], start: int, steps: list[int]
) -> None:
    asyncio.run(_run(redis_url, windows, False, start, steps))


@SETTINGS
@given(windows=windows_st, start=st.integers(0, 999_999), steps=steps_st)
def test_bucketed_window_matches_the_model(
    redis_url: str, windows: list[tuple[int, int]], start: int, steps: list[int]
) -> None:
    asyncio.run(_run(redis_url, windows, True, start, steps))


def test_a_saturated_sliding_log_admits_exactly_the_limit_per_window(redis_url: str) -> None:
    """Demand every millisecond for 5 windows: each window of 1 s gets exactly 10."""

    async def body() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        clock = [EPOCH_US]
        store = RedisCounterStore(RedisPyCommands(redis), clock_us=lambda: clock[0])
        the_plan = plan([(10, 1000)], bucketed=False)
        admitted = []
        for _ in range(5000):
            if (await store.consume(the_plan)).accepted:
                admitted.append(clock[0])
            clock[0] += 1000
        await redis.aclose()
        for k in range(5):
            lo = EPOCH_US + k * 1_000_000
            assert sum(1 for t in admitted if lo <= t < lo + 1_000_000) == 10

    asyncio.run(body())
