"""Scenario ``peer``: the limits library doing the same three counter checks per order.

What a Python user would reach for: ``limits`` with its async Redis storage,
moving-window and fixed-window strategies, three ``hit()`` calls per order
(the checks of ``bench/counters_hook.py``), one after the other (the usual
way) and gathered (its best case). Both of its Redis implementations are
timed: redis-py (the client the gateway uses, with hiredis) and coredis (the
library's default).

Side by side in the same run: a bare EVALSHA of a trivial script (one round
trip), and our side, ``counters_hook.our_side`` (pending until the counter
step exists). Round trips per order are counted by Redis, as in ``roundtrips``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter
from redis.asyncio import Redis

from bench import counters_hook
from bench.lib.context import Context, Result, result
from bench.lib.inproc import open_gatekeeper, settle, time_calls
from bench.lib.orders import BENCH_SYMBOLS, active_accounts, order_pool
from bench.lib.redis_probe import HOT_NAME, RoundTripProbe
from bench.lib.stats import measurement, rep_from_ns, spectrum_from_ns
from gateway.embedded_redis import EmbeddedRedis
from limits import RateLimitItem, parse

TITLE = "Against the limits library doing the same three checks per order"
POOL = 1024
PEER_NAME = "limits-peer"

OrderCheck = Callable[[Any], Awaitable[Any]]


def run(ctx: Context) -> Result:
    redis = EmbeddedRedis(ctx.dir("peer") / "redis").start()
    try:
        return uvloop.run(_run(ctx, redis.url))
    finally:
        redis.stop()


def _items() -> list[RateLimitItem]:
    return [
        parse(f"{check.limit} per {check.window_s} seconds") for check in counters_hook.THREE_CHECKS
    ]


def _sequential(limiter: RateLimiter, items: list[RateLimitItem]) -> OrderCheck:
    async def check(request: Any) -> bool:
        account = request.account_id
        for item in items:
            if not await limiter.hit(item, account):
                return False
        return True

    return check


def _gathered(limiter: RateLimiter, items: list[RateLimitItem]) -> OrderCheck:
    async def check(request: Any) -> bool:
        account = request.account_id
        return all(await asyncio.gather(*(limiter.hit(item, account) for item in items)))

    return check


async def _run(ctx: Context, url: str) -> Result:
    count = ctx.pick(1_000, 50)
    counted_orders = ctx.pick(200, 20)
    orders = order_pool(active_accounts(POOL), BENCH_SYMBOLS, POOL)
    host_port = url.split("//", 1)[1]
    items = _items()

    def storage(implementation: str, prefix: str) -> RedisStorage:
        # One key prefix per strategy: moving and fixed windows keep different types of key.
        return RedisStorage(
            f"async+redis://{host_port}",
            implementation=implementation,  # type: ignore[arg-type]
            key_prefix=prefix,
            client_name=PEER_NAME,
        )

    baseline = Redis.from_url(url, decode_responses=True, client_name=PEER_NAME)
    trivial = baseline.register_script("return 1")

    async def evalsha(_: Any) -> Any:
        return await trivial()

    plan: list[tuple[str, str, OrderCheck | None, str]] = [
        ("limits_moving_window", "limits moving window (redis-py), 3 hits one after another",
         _sequential(MovingWindowRateLimiter(storage("redispy", "MW")), items), PEER_NAME),
        ("limits_moving_window_gathered", "the same, 3 hits gathered",
         _gathered(MovingWindowRateLimiter(storage("redispy", "MWG")), items), PEER_NAME),
        ("limits_fixed_window", "limits fixed window (redis-py), 3 hits one after another",
         _sequential(FixedWindowRateLimiter(storage("redispy", "FW")), items), PEER_NAME),
        ("limits_fixed_window_gathered", "the same, 3 hits gathered",
         _gathered(FixedWindowRateLimiter(storage("redispy", "FWG")), items), PEER_NAME),
        ("limits_moving_window_coredis", "limits moving window (coredis, its default)",
         _sequential(MovingWindowRateLimiter(storage("coredis", "MWC")), items), PEER_NAME),
        ("limits_fixed_window_coredis", "limits fixed window (coredis, its default)",
         _sequential(FixedWindowRateLimiter(storage("coredis", "FWC")), items), PEER_NAME),
        ("evalsha_trivial", "one EVALSHA of `return 1` (redis-py): one round trip",
         evalsha, PEER_NAME),
    ]  # fmt: skip

    errors: list[str] = []
    async with open_gatekeeper(url, ctx.policy) as keeper:
        ours = counters_hook.our_side(keeper)
        plan.append(
            (
                "ours",
                "the gateway's full decision, counter call included (counters_hook.our_side)",
                ours,
                HOT_NAME,
            )
        )
        counted: dict[str, dict[str, Any]] = {}
        for name, _, check, client in plan:
            if check is None:
                continue
            outcome = await check(orders[0])
            if outcome is False or outcome not in (None, True, 1):
                errors.append(f"{name}: the first order was not accepted ({outcome!r})")
            probe = RoundTripProbe(url, client=client)
            try:
                await probe.start()
                for i in range(counted_orders):
                    await check(orders[i % POOL])
                counted[name] = await probe.stop(counted_orders)
            finally:
                await probe.close()

        reps: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in plan}
        pooled: dict[str, list[int]] = {name: [] for name, *_ in plan}
        for _ in range(ctx.reps):
            for name, _, check, _ in plan:
                if check is None:
                    continue
                await settle(keeper)
                samples, elapsed, failed = await time_calls(check, orders, count)
                reps[name].append(rep_from_ns(samples, elapsed, failed))
                pooled[name].extend(samples)

    await baseline.aclose()
    rows = []
    for name, description, check, _ in plan:
        if check is None:
            rows.append(
                {
                    "name": name,
                    "description": description + ": pending, needs the counter step",
                    "status": "pending",
                    "reps": [],
                }
            )
            continue
        per_order = counted[name]["round_trips_per_operation"]
        rows.append(
            measurement(
                name,
                description,
                reps[name],
                spectrum_from_ns(pooled[name]),
                round_trips_per_order=per_order,
                round_trip_counts=counted[name],
            )
        )

    limits_rows = [r for r in rows if r["name"].startswith("limits_") and r.get("p50_us")]
    fastest = min(limits_rows, key=lambda r: r["p50_us"]) if limits_rows else None
    ours_row = next((r for r in rows if r["name"] == "ours" and r.get("p50_us")), None)
    speedup = fastest["p50_us"] / ours_row["p50_us"] if fastest and ours_row else None
    out = result(
        TITLE,
        rows,
        checks=[vars(c) for c in counters_hook.THREE_CHECKS],
        fastest_limits=fastest["name"] if fastest else None,
        speedup_vs_fastest_limits=speedup,
        table={
            "columns": ["row", "round trips / order (counted by Redis)", "p50 us per order"],
            "rows": [[r["name"], r.get("round_trips_per_order"), r.get("p50_us")] for r in rows],
        },
    )
    failed_rows = [r["name"] for r in rows if r.get("errors")]
    errors += [f"{name}: calls raised" for name in failed_rows]
    out["errors"] = errors
    if errors:
        out["status"] = "error"
    return out
