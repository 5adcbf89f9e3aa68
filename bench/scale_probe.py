"""A real gateway in its own process, for the ``scale`` scenario.

``python -m bench.scale_probe --redis-url URL --policy FILE --flagged N``
starts a complete gateway (``Gateway.start``: snapshot loaded from Redis, gRPC
servers bound; upstream not contacted) and prints one JSON line with its
start-up time, snapshot load time and memory. Then, for each ``rep`` line on
stdin, it times decisions on its own engine and prints one JSON line; ``quit``
stops it. Keeping the process alive lets the suite alternate repetitions
between gateways of different sizes, so both see the same machine noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import uvloop

from bench import counters_hook
from bench.lib.inproc import PLACE, settle, time_screen
from bench.lib.orders import active_accounts, flagged_accounts, place_order
from bench.lib.procs import rss_mb
from bench.lib.stats import rep_from_ns
from gateway.heap import no_full_collections
from gateway.logs import configure_logging
from gateway.reasons import Denial
from gateway.server import Gateway
from gateway.settings import Settings
from gateway.snapshot import decode_record, now_ms

POOL = 10_000
CHECKED = 1_000
#: Accounts flagged in every gateway of the scenario, whose orders every gateway sees.
SAME_ACCOUNTS = 1_000
SEED = 20240601


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    rss_before = rss_mb()
    started = time.perf_counter()
    gateway = await Gateway.start(
        Settings(
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            redis_url=args.redis_url,
            upstream="127.0.0.1:9",  # never called: decisions are timed in-process
            policy=args.policy,
            grace_s=0.5,
            auth=False,  # the figures are of the decision without the API key check
        )
    )
    start_s = time.perf_counter() - started
    try:
        await _measure(gateway, args.flagged, start_s, rss_before)
    finally:
        await gateway.stop(grace_s=0)


async def _measure(gateway: Gateway, flagged_count: int, start_s: float, rss_before: float) -> None:
    keeper = gateway.keeper
    assert keeper is not None
    snapshot = keeper.snapshot
    rss_after = rss_mb()

    # The snapshot load alone, twice more, as the follower makes it: Redis reads (SCAN +
    # pipelined HGETALL) with each batch made into records as it comes, then the swap.
    load_s, apply_s = [], []
    for _ in range(2):
        with no_full_collections():
            t0 = time.perf_counter()
            records = await keeper.flags.load_decoded(decode_record, [], snapshot.empty_tables())
            t1 = time.perf_counter()
            snapshot.install(records)
        load_s.append(t1 - t0)
        apply_s.append(time.perf_counter() - t1)
        del records
    purge_ms = []
    for _ in range(3):
        t0 = time.perf_counter()
        snapshot.purge_lapsed(now_ms())
        purge_ms.append((time.perf_counter() - t0) * 1000)

    rng = random.Random(SEED)
    trading = sorted(s for s in snapshot.symbols if s not in snapshot.symbol_status)
    flagged = flagged_accounts(flagged_count)
    active = active_accounts(max(POOL, 100_000))
    refused = [place_order(rng.choice(flagged), rng.choice(trading)) for _ in range(POOL)]
    # The same orders in every gateway: accounts flagged in all of them (the first
    # SAME_ACCOUNTS), so that only the size of the snapshot differs, not the traffic.
    same_rng = random.Random(SEED + 1)
    common = flagged[:SAME_ACCOUNTS]
    same = [place_order(same_rng.choice(common), same_rng.choice(trading)) for _ in range(POOL)]
    accepted = [place_order(rng.choice(active), rng.choice(trading)) for _ in range(POOL)]
    screen = keeper.engine.screen
    wrong = 0  # checked on a sample: with the counter step each accepted order is a round trip
    for request in refused[:CHECKED] + same[:CHECKED]:
        wrong += not isinstance(await screen(PLACE, request), Denial)
    for request in accepted[:CHECKED]:
        wrong += await screen(PLACE, request) is not None

    emit(
        {
            "event": "ready",
            "accounts": len(snapshot.accounts),
            "symbols": len(snapshot.symbols),
            "restricted_symbols": len(snapshot.symbol_status),
            "start_s": start_s,
            "snapshot_load_s": min(load_s),
            "snapshot_apply_s": min(apply_s),
            "purge_pass_ms": min(purge_ms),
            "rss_before_mb": rss_before,
            "rss_mb": rss_after,
            "rss_after_reloads_mb": rss_mb(),
            "wrong_decisions": wrong,
        }
    )
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line in ("", "quit"):
            return
        count = int(line.split()[1]) if " " in line else 20_000
        reps = {}
        # With the counter step an accepted order is a Redis round trip: fewer of them.
        accept_count = count // 10 if counters_hook.counters_present() else count
        for name, pool, n in (
            ("flag_refusal_same", same, count),
            ("flag_refusal", refused, count),
            ("accept", accepted, accept_count),
        ):
            await settle(keeper)
            samples, elapsed = await time_screen(screen, PLACE, pool, n)
            reps[name] = rep_from_ns(samples, elapsed)
        emit({"event": "rep", "reps": reps})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scale_probe")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--flagged", type=int, required=True)
    configure_logging("warning", json=True)
    uvloop.run(main(parser.parse_args()))
