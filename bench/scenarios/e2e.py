"""Scenario ``e2e``: end to end over gRPC, from a separate client process.

Three servers, each its own process, all on uvloop, one Redis:

* ``bare``: the reference exchange alone (``pretrade-gateway exchange``);
* ``interceptor``: the same exchange servicer on its own server with
  ``PreTradeInterceptor`` (``bench/servers/interceptor.py``);
* ``proxy``: ``pretrade-gateway serve --upstream <bare>``: the gateway in
  front of the bare exchange, one more hop.

The client (``bench/loadgen.py``) sends accepted orders: sequentially, then
closed-loop at concurrency 1, 16, 64, 256, then open-loop at two fixed rates,
the same for all three: 50% and 80% of the best closed-loop throughput of the
slowest deployment, measured just before. Repetitions are interleaved over the
targets, so drift on a noisy machine spreads evenly.

The sequential rows run in short rounds (400 calls per target, nine rounds),
each round timing the three servers and one Redis round trip from the client
process (``redis_rtt``: an ``EVALSHA`` of a trivial script over the gateway's
Redis client) back to back, in an order that turns around every round. The
interceptor's added latency is the median over rounds of that round's
difference (interceptor p50 - bare p50), over the round trip's median p50
(``added_vs_rtt``): the difference of two blocks timed seconds apart, set
against a round trip timed with them, not minutes apart in another scenario.
"""

from __future__ import annotations

import statistics
from typing import Any

import uvloop

from bench.lib import deploy
from bench.lib.context import Context, Result, result
from bench.lib.loadgen_client import rows_from_phases, run_loadgen
from bench.lib.orders import flag_accounts, flagged_accounts
from bench.lib.procs import Procs
from gateway.embedded_redis import EmbeddedRedis

TITLE = "End to end over gRPC (client in a separate process)"
CONCURRENCY = (1, 16, 64, 256)
OPEN_FRACTIONS = (0.5, 0.8)
#: Rounds of the sequential rows per repetition of the run: short and many, since the
#: interceptor's added latency is a small difference of two large, noisy figures.
SEQUENTIAL_ROUNDS_PER_REP = 3
FLAGGED = 64


def run(ctx: Context) -> Result:
    scratch = ctx.dir("e2e")
    redis = EmbeddedRedis(scratch / "redis").start()
    try:
        uvloop.run(_seed(redis.url))
        with Procs(scratch) as group:
            return _run(ctx, redis.url, group)
    finally:
        redis.stop()


async def _seed(url: str) -> None:
    await flag_accounts(url, flagged_accounts(FLAGGED))


def _run(ctx: Context, redis_url: str, group: Procs) -> Result:
    reps = ctx.process_reps
    count = ctx.pick(400, 50)
    duration = ctx.pick(1.5, 0.3)
    bare = deploy.exchange(group, "bare")
    guarded = deploy.interceptor(group, redis_url, ctx.policy)
    proxy = deploy.gateway(group, redis_url, ctx.policy, "proxy", upstream=bare.address)
    targets = {
        "bare": bare.target(),
        "interceptor": guarded.target(),
        # The proxy's cost includes the exchange it forwards to.
        "proxy": {"address": proxy.address, "pids": [proxy.proc.pid, bare.proc.pid]},
    }
    mixes = {
        "accept": {"kind": "accept", "accounts": 1024},
        "refuse": {"kind": "refuse", "accounts": FLAGGED},
    }
    base: dict[str, Any] = {
        "targets": targets,
        "mixes": mixes,
        "warmup_s": ctx.pick(0.3, 0.1),
        "call_timeout_s": 5.0,
    }

    # Sequential: many short rounds, each target and the Redis round trip back to back,
    # in an order that turns around every round (see the module doc).
    phases: list[dict[str, Any]] = []
    order = [*targets, "redis"]
    for rep in range(reps * SEQUENTIAL_ROUNDS_PER_REP):
        phases += [
            {"id": "redis_rtt" if target == "redis" else "sequential", "mode": "sequential",
             "count": count, "target": target, "mix": "accept", "repetition": rep}
            for target in order
        ]  # fmt: skip
        order.reverse()
    configs = [
        {"id": f"closed_c{c}", "mode": "closed", "concurrency": c, "duration_s": duration}
        for c in CONCURRENCY
    ]
    phases += [
        {**config, "target": target, "mix": "accept", "repetition": rep}
        for rep in range(reps)
        for config in configs
        for target in targets
    ]
    phases += [
        {"id": "sequential_refusal", "mode": "sequential", "count": count, "target": target,
         "mix": "refuse", "repetition": rep}
        for rep in range(reps)
        for target in ("interceptor", "proxy")
    ]  # fmt: skip
    scratch = ctx.dir("e2e")
    plan = {**base, "targets": {**targets, "redis": {"redis_url": redis_url}}, "phases": phases}
    done = run_loadgen(plan, scratch, "loadgen-closed")

    peaks = {target: _peak(done, target) for target in targets}
    # One rate for all three, below what the slowest of them sustains: the same offered
    # load, and any queueing that shows is latency, not overload.
    slowest = min(peaks, key=lambda t: peaks[t])
    base_rate = peaks[slowest]
    open_phases = [
        {
            "id": f"open_{round(f * 100)}pct",
            "mode": "open",
            "rate_per_s": round(f * base_rate),
            "duration_s": duration,
            "target": target,
            "mix": "accept",
            "repetition": rep,
        }
        for rep in range(reps)
        for f in OPEN_FRACTIONS
        for target in targets
    ]
    done += run_loadgen({**base, "phases": open_phases}, scratch, "loadgen-open")

    descriptions = {
        "sequential": "accepted orders, one at a time",
        "sequential_refusal": "orders refused by an account flag, one at a time",
        "redis_rtt": "one EVALSHA of `return 1` from the client process (the gateway's "
        "Redis client), one at a time, in the same rounds as the sequential rows",
        **{f"closed_c{c}": f"closed loop, {c} in flight" for c in CONCURRENCY},
        **{
            f"open_{round(f * 100)}pct": (
                f"open loop at {round(f * base_rate)}/s ({round(f * 100)}% of the {slowest} "
                "deployment's best closed-loop throughput); latency from when each call was due"
            )
            for f in OPEN_FRACTIONS
        },
    }
    rows = rows_from_phases(done, descriptions)
    # Failed calls (e.g. deadlines under overload) are results, shown per row; not a broken run.
    warnings = [f"{r['name']}: {r['errors']} calls failed" for r in rows if r["errors"]]
    out = result(
        TITLE,
        rows,
        closed_loop_peak_per_s=peaks,
        open_loop_base={"target": slowest, "rate_per_s": base_rate},
        added_vs_rtt=added_vs_rtt(done),
        notes=[
            "client_cpu_pct / server_cpu_pct in the JSON show which side was saturated "
            "(100% = one core); on 2 cores the client and the server share the machine.",
            "proxy: the gateway forwards to the bare exchange process (two hops, two processes).",
        ],
        tables=[_ratio_table(rows)],
    )
    out["warnings"] = warnings
    return out


def added_vs_rtt(phases: list[dict[str, Any]]) -> dict[str, float] | None:
    """The interceptor's added sequential p50 (the median over rounds of each round's
    difference from bare) and one Redis round trip's p50 (median over rounds)."""
    p50: dict[tuple[str, int], float] = {
        (p["target"], p["repetition"]): p["rep"]["p50_us"]
        for p in phases
        if p["id"] in ("sequential", "redis_rtt")
    }
    rounds = sorted({rep for target, rep in p50 if target == "redis"})
    if not rounds:
        return None
    added = statistics.median(p50[("interceptor", r)] - p50[("bare", r)] for r in rounds)
    rtt = statistics.median(p50[("redis", r)] for r in rounds)
    return {"added_us": added, "rtt_us": rtt, "ratio": added / rtt, "rounds": len(rounds)}


def _peak(phases: list[dict[str, Any]], target: str) -> float:
    """Best median closed-loop throughput of ``target`` over the concurrency levels."""
    return max(
        statistics.median(
            p["rep"]["throughput_per_s"]
            for p in phases
            if p["id"] == f"closed_c{c}" and p["target"] == target
        )
        for c in CONCURRENCY
    )


def _ratio_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {r["name"]: r for r in rows}
    table_rows = []
    for config in ["sequential", *(f"closed_c{c}" for c in CONCURRENCY)]:
        bare = by_name.get(f"{config}_bare")
        if not bare:
            continue
        cells: list[Any] = [config]
        for target in ("interceptor", "proxy"):
            other = by_name.get(f"{config}_{target}")
            if other and bare.get("throughput_per_s") and other.get("throughput_per_s"):
                cells.append(f"{other['throughput_per_s'] / bare['throughput_per_s']:.0%}")
                cells.append(f"{other['p50_us'] - bare['p50_us']:+.0f}")
            else:
                cells += ["-", "-"]
        table_rows.append(cells)
    return {
        "columns": [
            "load", "interceptor throughput vs bare", "interceptor added p50 us",
            "proxy throughput vs bare", "proxy added p50 us",
        ],
        "rows": table_rows,
    }  # fmt: skip
