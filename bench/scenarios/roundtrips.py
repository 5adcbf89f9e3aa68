"""Scenario ``roundtrips``: Redis round trips per decision, as Redis itself counts them.

For each case, N decisions run inside a counting window (``INFO
commandstats`` deltas, split by client and script with ``SLOWLOG``; see
``bench/lib/redis_probe.py``). A flag refusal must cost 0 round trips; a full
decision exactly 1 once the counter step is present (0 before). A bare
EVALSHA is counted too, as a control of the method itself: it must come out
at exactly 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from bench import counters_hook
from bench.lib.context import Context, Result, result
from bench.lib.inproc import PLACE, open_gatekeeper
from bench.lib.orders import (
    BENCH_SYMBOLS,
    active_accounts,
    flag_accounts,
    flagged_accounts,
    order_pool,
)
from bench.lib.redis_probe import RoundTripProbe
from gateway.embedded_redis import EmbeddedRedis

TITLE = "Redis round trips per decision (counted by Redis: INFO commandstats, SLOWLOG)"
POOL = 256
CONCURRENCY = 16
SETTLE_S = 0.3


def run(ctx: Context) -> Result:
    redis = EmbeddedRedis(ctx.dir("roundtrips") / "redis").start()
    try:
        return uvloop.run(_run(ctx, redis.url))
    finally:
        redis.stop()


async def _run(ctx: Context, url: str) -> Result:
    count = ctx.pick(2_000, 200)
    flagged = flagged_accounts(POOL)
    await flag_accounts(url, flagged)
    refused = order_pool(flagged, BENCH_SYMBOLS, POOL)
    accepted = order_pool(active_accounts(POOL), BENCH_SYMBOLS, POOL)
    full_expected = counters_hook.expected_full_decision_round_trips()

    cases: list[dict[str, Any]] = []
    async with open_gatekeeper(url, ctx.policy) as keeper:
        screen = keeper.engine.screen
        trivial = keeper.redis.register_script("return 1")
        await trivial()  # connection opened and named, script cached: outside the window

        async def refuse(i: int) -> object:
            return await screen(PLACE, refused[i % POOL])

        async def accept(i: int) -> object:
            return await screen(PLACE, accepted[i % POOL])

        async def evalsha(_: int) -> object:
            return await trivial()

        plan: list[tuple[str, str, Callable[[int], Awaitable[object]], int, int]] = [
            ("flag_refusal", "order refused by an account flag", refuse, 1, 0),
            ("full_decision", "order that passes every check (and whatever the gateway writes "
             "for it in the background)", accept, 1, full_expected),
            ("full_decision_concurrent", f"the same, {CONCURRENCY} decisions in flight",
             accept, CONCURRENCY, full_expected),
            ("evalsha_control", "bare EVALSHA of `return 1` (control: must be 1)",
             evalsha, 1, 1),
        ]  # fmt: skip
        for name, description, call, concurrency, expected in plan:
            # Warm up at the same concurrency, so no connection is opened inside the window;
            # let whatever the gateway writes in the background settle on both sides of it.
            await _drive(call, concurrency, concurrency * 4)
            await asyncio.sleep(SETTLE_S)
            probe = RoundTripProbe(url)
            try:
                await probe.start()
                await _drive(call, concurrency, count)
                await asyncio.sleep(SETTLE_S)
                counted = await probe.stop(count)
            finally:
                await probe.close()
            per = counted["round_trips_per_operation"]
            cases.append(
                {
                    "name": name,
                    "description": description,
                    "concurrency": concurrency,
                    "expected_round_trips": expected,
                    "round_trips_per_decision": per,
                    "matches": per == expected and counted["complete"],
                    **counted,
                }
            )

    out = result(
        TITLE,
        [],
        cases=cases,
        counters_present=counters_hook.counters_present(),
        table={
            "columns": [
                "case", "decisions", "round trips / decision", "expected",
                "gateway's commands", "commands run inside scripts",
                "commandstats delta (all clients)",
            ],
            "rows": [
                [
                    c["name"], c["operations"], c["round_trips_per_decision"],
                    c["expected_round_trips"], _counts(c["round_trips_by_command"]),
                    sum(c["commands_in_scripts"].values()), _counts(c["commandstats_delta"]),
                ]
                for c in cases
            ],
        },
    )  # fmt: skip
    incomplete = [c["name"] for c in cases if not c["complete"]]
    if incomplete:
        out["status"] = "error"
        out["errors"] = [f"commandstats and slowlog disagree for {incomplete}"]
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"


async def _drive(call: Callable[[int], Awaitable[object]], concurrency: int, count: int) -> None:
    if concurrency == 1:
        for i in range(count):
            await call(i)
        return

    async def lane(start: int) -> None:
        for i in range(start, count, concurrency):
            await call(i)

    await asyncio.gather(*(lane(k) for k in range(concurrency)))
