"""Scenario ``propagation``: an admin change at one gateway, enforced at another.

Two gateway processes (``pretrade-gateway serve``) on one Redis. The client
freezes an account through gateway A's admin API and, from the moment it
sends that call, sends orders for the account to gateway B back to back until
B refuses one; then it sets the account ACTIVE again and waits until B
accepts. Each sample is the time from sending the admin call to receiving B's
first changed answer, so it includes A's write and publish, B's follower
applying the message, and one order round trip to B: an upper bound on
propagation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import uvloop
from grpc import aio

from bench.lib import deploy
from bench.lib.context import Context, Result, result
from bench.lib.orders import PLACE_PATH, place_order
from bench.lib.procs import Procs
from bench.lib.stats import (
    encode,
    measurement,
    merge_histograms,
    new_histogram,
    record_us,
    rep_from_histogram,
    spectrum_from_histogram,
)
from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc
from gateway.embedded_redis import EmbeddedRedis

TITLE = "Admin change at one gateway process, enforced at another"
WAIT_S = 5.0
ACCOUNT = "propagation-probe"


def run(ctx: Context) -> Result:
    scratch = ctx.dir("propagation")
    redis = EmbeddedRedis(scratch / "redis").start()
    try:
        with Procs(scratch) as group:
            a = deploy.gateway(group, redis.url, ctx.policy, "gateway-a")
            b = deploy.gateway(group, redis.url, ctx.policy, "gateway-b")
            return uvloop.run(_run(ctx, a.admin_address, b.address))
    finally:
        redis.stop()


async def _run(ctx: Context, admin_address: str, order_address: str) -> Result:
    per_rep = ctx.pick(200, 10)
    admin_channel = aio.insecure_channel(admin_address)
    order_channel = aio.insecure_channel(order_address)
    admin = admin_pb2_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
    place = order_channel.unary_unary(PLACE_PATH)
    raw = place_order(ACCOUNT, "BTC-USDT").SerializeToString()
    timeouts = 0
    reps: dict[str, list[dict[str, Any]]] = {"propagation": [], "admin_ack": []}
    blobs: dict[str, list[str]] = {"propagation": [], "admin_ack": []}
    try:
        await asyncio.wait_for(admin_channel.channel_ready(), 10)
        await asyncio.wait_for(order_channel.channel_ready(), 10)
        await _set(admin, apb.ACCOUNT_STATE_ACTIVE)
        await _poll(place, raw, refused=False)
        for _ in range(ctx.reps):
            seen, acked = new_histogram(), new_histogram()
            started = time.perf_counter()
            for i in range(per_rep):
                freeze = i % 2 == 0
                state = apb.ACCOUNT_STATE_FROZEN if freeze else apb.ACCOUNT_STATE_ACTIVE
                t0 = time.perf_counter_ns()
                change = asyncio.ensure_future(_set(admin, state))
                observed = await _poll(place, raw, refused=freeze)
                await change
                ack_ns = change.result()
                if observed is None:
                    timeouts += 1
                    continue
                record_us(seen, (observed - t0) / 1000)
                record_us(acked, (ack_ns - t0) / 1000)
            elapsed = time.perf_counter() - started
            for name, histogram in (("propagation", seen), ("admin_ack", acked)):
                reps[name].append(rep_from_histogram(histogram, elapsed))
                blobs[name].append(encode(histogram))
    finally:
        await admin_channel.close(None)
        await order_channel.close(None)

    descriptions = {
        "propagation": "admin call sent at A -> first changed answer from B "
        "(freeze and unfreeze alternating)",
        "admin_ack": "admin call sent at A -> A's answer (written to Redis, published)",
    }
    rows = [
        measurement(
            name,
            descriptions[name],
            reps[name],
            spectrum_from_histogram(merge_histograms(blobs[name])),
        )
        for name in ("propagation", "admin_ack")
    ]
    out = result(TITLE, rows, samples_per_rep=per_rep, timeouts=timeouts)
    if timeouts:
        out["status"] = "error"
        out["errors"] = [f"{timeouts} changes not seen at B within {WAIT_S} s"]
    return out


async def _set(admin: Any, state: int) -> int:
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id=ACCOUNT, state=state, reason="propagation benchmark", actor="bench"
        ),
        timeout=WAIT_S,
    )
    return time.perf_counter_ns()


async def _poll(place: Any, raw: bytes, refused: bool) -> int | None:
    """Send orders until B's answer is the expected one; when it arrived (perf ns), or None."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            await place(raw, timeout=WAIT_S)
            was_refused = False
        except aio.AioRpcError as exc:
            was_refused = exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        if was_refused == refused:
            return time.perf_counter_ns()
    return None
