"""Scenario ``workers``: throughput as gateway worker processes are added on one host.

``pretrade-gateway serve --workers N`` (N = 1, 2, 4; 1 is the plain single
process) in front of one reference exchange process, all on one Redis. The
client opens 16 connections (the kernel spreads connections, not calls, over
SO_REUSEPORT workers) and keeps 64 calls in flight: accepted orders (forwarded
to the shared exchange) and orders refused by a flag (answered by the gateway
alone, so they show the gateway's own scaling).
"""

from __future__ import annotations

from typing import Any

import uvloop

from bench.lib import deploy
from bench.lib.context import Context, Result, result
from bench.lib.loadgen_client import rows_from_phases, run_loadgen
from bench.lib.orders import flag_accounts, flagged_accounts
from bench.lib.procs import Procs
from gateway.embedded_redis import EmbeddedRedis

TITLE = "Gateway worker processes on one host (SO_REUSEPORT)"
CONNECTIONS = 16
CONCURRENCY = 64
FLAGGED = 64


def run(ctx: Context) -> Result:
    scratch = ctx.dir("workers")
    redis = EmbeddedRedis(scratch / "redis").start()
    try:
        uvloop.run(flag_accounts(redis.url, flagged_accounts(FLAGGED)))
        with Procs(scratch) as group:
            return _run(ctx, redis.url, group)
    finally:
        redis.stop()


def _run(ctx: Context, redis_url: str, group: Procs) -> Result:
    reps = ctx.process_reps
    duration = ctx.pick(2.0, 0.3)
    counts = ctx.pick((1, 2, 4), (1, 2))
    exchange = deploy.exchange(group, "exchange")
    phases: list[dict[str, Any]] = []
    for workers in counts:
        gateway = deploy.gateway(
            group,
            redis_url,
            ctx.policy,
            f"gateway-w{workers}",
            upstream=exchange.address,
            workers=workers,
        )
        target = f"{workers}_workers"
        plan = {
            "targets": {
                target: {
                    "address": gateway.address,
                    "pids": [*(gateway.pids or [gateway.proc.pid]), exchange.proc.pid],
                }
            },
            "mixes": {
                "accept": {"kind": "accept", "accounts": 1024},
                "refuse": {"kind": "refuse", "accounts": FLAGGED},
            },
            "channels": CONNECTIONS,
            "warmup_s": ctx.pick(0.5, 0.1),
            "phases": [
                {
                    "id": f"{mix}_c{CONCURRENCY}",
                    "mode": "closed",
                    "concurrency": CONCURRENCY,
                    "duration_s": duration,
                    "target": target,
                    "mix": mix,
                    "repetition": rep,
                }
                for rep in range(reps)
                for mix in ("accept", "refuse")
            ],
        }
        phases += run_loadgen(plan, ctx.dir("workers"), f"loadgen-w{workers}")
        group.stop(gateway.proc)

    descriptions = {
        f"accept_c{CONCURRENCY}": f"accepted orders, {CONCURRENCY} in flight over "
        f"{CONNECTIONS} connections",
        f"refuse_c{CONCURRENCY}": f"flag refusals, {CONCURRENCY} in flight over "
        f"{CONNECTIONS} connections",
    }
    rows = rows_from_phases(phases, descriptions)
    by_name = {r["name"]: r for r in rows}
    table_rows = []
    for workers in counts:
        cells: list[Any] = [workers]
        for mix in ("accept", "refuse"):
            row = by_name.get(f"{mix}_c{CONCURRENCY}_{workers}_workers", {})
            one = by_name.get(f"{mix}_c{CONCURRENCY}_1_workers", {})
            tp, base = row.get("throughput_per_s"), one.get("throughput_per_s")
            cells += [
                tp,
                f"{tp / base:.2f}x" if tp and base else "-",
                row.get("server_cpu_pct"),
                row.get("client_cpu_pct"),
            ]
        table_rows.append(cells)
    # Failed calls (e.g. deadlines under overload) are results, shown per row; not a broken run.
    warnings = [f"{r['name']}: {r['errors']} calls failed" for r in rows if r["errors"]]
    out = result(
        TITLE,
        rows,
        workers=list(counts),
        table={
            "columns": [
                "workers", "accepted/s", "vs 1", "server CPU %", "client CPU %",
                "refused/s", "vs 1", "server CPU %", "client CPU %",
            ],
            "rows": table_rows,
        },
        notes=[
            "server CPU % counts the supervisor, the workers and the exchange process "
            "(100% = one core); the client process shares the same cores.",
        ],
    )  # fmt: skip
    out["warnings"] = warnings
    return out
