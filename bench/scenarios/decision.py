"""Scenario ``decision``: what one decision costs in-process, with no gRPC.

A real Gatekeeper (snapshot loaded from a real Redis, follower running) on
uvloop, like the gateway's. Each row times ``await`` of one call, one sample
per call; repetitions are interleaved row by row. Every row goes to the real
Redis but the two ``accept_replayed`` rows, which answer the counter call with
a reply Redis gave to the same plan, to show the Python side of a full decision
alone: in a tight loop, and each call right after a real round trip (the state
a served call finds the CPU in). The rows that run scripts also report the
script's time inside Redis (``INFO commandstats``), and ``breakdown`` splits
the full decision's p50 into the round trip, the Python side and the rest.
"""

from __future__ import annotations

from typing import Any

import uvloop
from redis.asyncio import Redis

from bench import counters_hook
from bench.lib.context import Context, Result, result
from bench.lib.inproc import (
    PLACE,
    open_gatekeeper,
    settle,
    time_calls,
    time_calls_after,
    time_screen,
)
from bench.lib.orders import (
    BENCH_SYMBOLS,
    active_accounts,
    flag_accounts,
    flagged_accounts,
    order_pool,
)
from bench.lib.redis_probe import script_time
from bench.lib.stats import measurement, median_of, rep_from_ns, spectrum_from_ns
from gateway.embedded_redis import EmbeddedRedis
from gateway.reasons import Denial
from gateway.refusals import to_grpc_status

TITLE = "In-process decision cost (no gRPC)"
POOL = 1024
#: Rows whose scripts' time inside Redis is read (INFO commandstats) around each repetition.
SCRIPT_ROWS = frozenset({"accept", "evalsha_trivial"})


def run(ctx: Context) -> Result:
    redis = EmbeddedRedis(ctx.dir("decision") / "redis").start()
    try:
        return uvloop.run(_run(ctx, redis.url))
    finally:
        redis.stop()


async def _run(ctx: Context, url: str) -> Result:
    local_n = ctx.pick(50_000, 2_000)
    redis_n = ctx.pick(3_000, 200)
    flagged = flagged_accounts(POOL)
    await flag_accounts(url, flagged)

    refused = order_pool(flagged, BENCH_SYMBOLS, POOL)
    accepted = order_pool(active_accounts(POOL), BENCH_SYMBOLS, POOL)
    raw_refused = [r.SerializeToString() for r in refused]
    errors: list[str] = []

    async with open_gatekeeper(url, ctx.policy) as keeper:
        engine = keeper.engine
        screen = engine.screen
        trivial = keeper.redis.register_script("return 1")

        # The decisions must be what the rows say they are, before anything is timed.
        for request in refused:
            if not isinstance(await screen(PLACE, request), Denial):
                errors.append(f"flagged order not refused: {request.account_id}")
                break
        for request in accepted:
            denial = await screen(PLACE, request)
            if denial is not None:
                errors.append(f"order refused: {request.account_id}: {denial.reason}")
                break

        async def refusal_rendered(request: Any) -> Any:
            denial = await screen(PLACE, request)
            return to_grpc_status(denial)

        async def from_bytes(raw: bytes) -> Any:
            return await engine.screen_bytes(PLACE, raw)

        # "The same client": the connection the order path's counter call takes
        # (the auto-pipelined one for a single Redis), and redis-py's for reference.
        pipe = keeper.pipe

        async def evalsha(_: object) -> Any:
            if pipe is not None:
                return await pipe.evalsha(trivial.sha, "return 1", (), ())
            return await trivial()

        async def evalsha_redis_py(_: object) -> Any:
            return await trivial()

        # The Python side of an accepted order alone: the counter call answered at once
        # with a reply Redis gave to the same plan (every accepted order here has one
        # shape of plan). Only this row: every other row goes to Redis.
        store = engine.counters.store if engine.counters is not None else None
        commands = getattr(store, "commands", None)
        replay = _ReplayFirstReply(commands) if commands is not None else None

        async def accept_replayed(request: Any) -> Any:
            if replay is None:  # no counter step: nothing to replay
                return await screen(PLACE, request)
            store.commands = replay  # type: ignore[union-attr]
            try:
                return await screen(PLACE, request)
            finally:
                store.commands = commands  # type: ignore[union-attr]

        async def round_trip() -> Any:
            return await evalsha(None)

        async def ping(_: object) -> Any:
            if pipe is not None:
                return await pipe.execute("PING")
            return await keeper.redis.ping()

        plan: list[tuple[str, str, Any, list[Any], int]] = [
            ("flag_refusal", "screen() of an order refused by an account flag",
             None, refused, local_n),
            ("flag_refusal_from_bytes", "the same from wire bytes (the proxy's path: parse once)",
             from_bytes, raw_refused, local_n),
            ("flag_refusal_rendered", "the same plus building the rich gRPC status",
             refusal_rendered, refused, local_n),
            # With the counter step an accepted order is a Redis round trip: size it like one.
            ("accept", _accept_description(), None, accepted,
             redis_n if counters_hook.counters_present() else local_n),
            ("accept_replayed", "the same orders with the counter call answered in-process "
             "by a reply Redis gave to the same plan: the Python side alone",
             accept_replayed, accepted, local_n),
            ("accept_replayed_after_rtt", "the same, each call timed right after an untimed "
             "EVALSHA of `return 1` on the order path's connection: the Python side as a "
             "served call runs it, just back from the socket", accept_replayed, accepted,
             redis_n),
            ("evalsha_trivial", "one EVALSHA of `return 1`, same client (the order path's "
             "connection) and loop (1 round trip)", evalsha, [None], redis_n),
            ("evalsha_trivial_redis_py", "the same through redis-py's asyncio client",
             evalsha_redis_py, [None], redis_n),
            ("ping", "one PING, same client and loop", ping, [None], redis_n),
        ]  # fmt: skip
        reps: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in plan}
        pooled: dict[str, list[int]] = {name: [] for name, *_ in plan}
        observer = Redis.from_url(url)
        try:
            for rep in range(ctx.reps + 1):  # repetition 0 warms up and is dropped
                for name, _, call, pool, count in plan:
                    await settle(keeper)
                    n = count if rep else max(1, count // 10)
                    scripts_before = await script_time(observer) if name in SCRIPT_ROWS else None
                    if call is None:
                        samples, elapsed = await time_screen(screen, PLACE, pool, n)
                        failed = 0
                    elif name == "accept_replayed_after_rtt":
                        samples, elapsed, failed = await time_calls_after(call, round_trip, pool, n)
                    else:
                        samples, elapsed, failed = await time_calls(call, pool, n)
                    if not rep:
                        continue
                    figures = rep_from_ns(samples, elapsed, failed)
                    if scripts_before is not None:
                        calls, usec = await script_time(observer)
                        ran = calls - scripts_before[0]
                        if ran:
                            figures["redis_us_per_call"] = (usec - scripts_before[1]) / ran
                    reps[name].append(figures)
                    pooled[name].extend(samples)
        finally:
            await observer.aclose()

    rows = []
    for name, description, *_ in plan:
        extra: dict[str, Any] = {"unit": "us"}
        if name in SCRIPT_ROWS:
            extra["redis_us_per_call"] = median_of(reps[name], "redis_us_per_call")
        rows.append(
            measurement(name, description, reps[name], spectrum_from_ns(pooled[name]), **extra)
        )
    split = breakdown(rows)
    out = result(
        TITLE,
        rows,
        counters_present=counters_hook.counters_present(),
        loop="uvloop",
        pool_size=POOL,
        breakdown=split,
        notes=[breakdown_note(split)] if split else [],
    )
    out["errors"] = errors
    if errors:
        out["status"] = "error"
    return out


def breakdown(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """The full decision's p50 in parts, as measured in this run: one round trip (a
    trivial EVALSHA), the Python side (replayed, right after a round trip), and the
    rest: what the counter call costs beyond a trivial one (its script inside Redis,
    a larger request and reply). None when a figure is missing."""
    by_name = {row["name"]: row for row in rows}
    wanted = {
        "accept": ("accept", "p50_us"),
        "rtt": ("evalsha_trivial", "p50_us"),
        "python": ("accept_replayed_after_rtt", "p50_us"),
        "script": ("accept", "redis_us_per_call"),
        "trivial_script": ("evalsha_trivial", "redis_us_per_call"),
    }
    got: dict[str, float] = {}
    for part, (name, key) in wanted.items():
        value = by_name.get(name, {}).get(key)
        if value is None:
            return None
        got[part] = float(value)
    script = got["script"]
    return {
        "full_decision_us": got["accept"],
        "round_trip_us": got["rtt"],
        "python_side_us": got["python"],
        "counter_call_extra_us": got["accept"] - got["rtt"] - got["python"],
        "script_in_redis_us": script,
        "script_in_redis_beyond_trivial_us": script - got["trivial_script"],
        "scripts_per_redis_core_per_s": 1e6 / script if script > 0 else 0.0,
    }


def breakdown_note(split: dict[str, float]) -> str:
    return (
        f"Full decision p50 {split['full_decision_us']:.1f} us = one round trip "
        f"{split['round_trip_us']:.1f} us + the Python side after a round trip "
        f"{split['python_side_us']:.1f} us + the counter call beyond a trivial one "
        f"{split['counter_call_extra_us']:.1f} us. Its script runs "
        f"{split['script_in_redis_us']:.1f} us inside Redis (a trivial one "
        f"{split['script_in_redis_us'] - split['script_in_redis_beyond_trivial_us']:.1f} us): "
        f"one Redis core runs ~{split['scripts_per_redis_core_per_s']:,.0f} of them a second."
    )


def _accept_description() -> str:
    if counters_hook.counters_present():
        return "screen() of an order that passes every check, counter call included"
    return "screen() of an order that passes every check (local checks; counter step not present)"


class _ReplayFirstReply:
    """Answers every counter call with the reply Redis gave to the first one."""

    def __init__(self, commands: Any) -> None:
        self._commands = commands
        self._reply: Any = None

    async def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        if self._reply is None:
            self._reply = await self._commands.evalsha(*args, **kwargs)
        return self._reply
