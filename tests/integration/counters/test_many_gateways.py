"""Four gateway processes on one Redis, many concurrent clients, one account capped at C per second."""

from __future__ import annotations

import asyncio
import contextlib
import math
import pathlib
import time

import pytest
import redis.asyncio as aioredis
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.counters.keys import counting_subject, rate_key
from gateway.counters.limits import LimitKind
from tests.support.rpc import limit_order, refusal
from tests.support.servers import POLICY, Clients, connect, gateway_process

C = 50  # orders per second for the hammered account
WINDOW_US = 1_000_000
HAMMER_S = 10.0
TASKS_PER_GATEWAY = 6
GATEWAYS = 4


@pytest.mark.slow
async def test_cap_holds_across_four_gateways(redis_url: str, tmp_path: pathlib.Path) -> None:
    """Hammer one account through four gateway processes for 10 s; check every window.

    Which clock: only Redis' decides, so only Redis' is used to check the cap.
    The account also has a generous ``1000/60s`` window (never binding here: at
    most ~550 admissions), kept as a sliding log, i.e. a sorted set holding the
    Redis time of every admission in microseconds: read after the run, that is
    the exact admission history, whichever gateway admitted each order. Its
    size must equal the number of accepted responses.

    * Cap: for every admission at t, admissions in (t - 1 s, t] <= C. This is
      the sliding-window property, stronger than checking aligned windows.
    * Utilisation: in every whole second from the first admission while the
      clients were still sending, admissions >= 95% of C. Demand is shown per
      window by refusals the clients received in it; on one host the test's
      ``time.time()`` and Redis ``TIME`` read the same clock, so a refusal
      received in a window was decided before its end (latency only delays the
      receipt). Client timestamps are used for nothing else.
    """
    folder = tmp_path / "limits"
    folder.mkdir()
    (folder / "default.toml").write_text((POLICY / "default.toml").read_text())
    (folder / "hammer.toml").write_text(
        f'[limits.account."hammer"]\norder_rate = ["{C}/1s", "1000/60s"]\n'
    )
    with contextlib.ExitStack() as stack:
        gateways = [
            stack.enter_context(gateway_process(redis_url, tmp_path, "--policy", str(folder)))
            for _ in range(GATEWAYS)
        ]
        clients = [await connect(g.order_address, g.admin_address) for g in gateways]
        try:
            await _check_propagation(clients)
            accepted, refused_at = await _hammer(clients)
        finally:
            for c in clients:
                await c.close()

    redis = aioredis.Redis.from_url(redis_url)
    log_key = rate_key(counting_subject("hammer"), LimitKind.ORDER_RATE, 60_000)
    admitted = sorted(
        int(score) for _, score in await redis.zrange(log_key, 0, -1, withscores=True)
    )
    await redis.aclose()
    assert len(admitted) == accepted

    # Cap: no window of 1 s, wherever it starts, holds more than C admissions.
    first = 0
    for i, t in enumerate(admitted):
        while admitted[first] <= t - WINDOW_US:
            first += 1
        assert i - first + 1 <= C, f"{i - first + 1} admissions in the second up to {t}"

    # Utilisation: every whole second with demand throughout gets at least 95% of C.
    t0, stop_us = admitted[0], max(refused_at)
    windows = int((stop_us - t0) // WINDOW_US)
    assert windows >= 8
    for k in range(windows):
        lo, hi = t0 + k * WINDOW_US, t0 + (k + 1) * WINDOW_US
        demand = sum(1 for t in refused_at if lo <= t < hi)
        got = sum(1 for t in admitted if lo <= t < hi)
        assert demand > C, f"window {k}: clients sent too little to judge ({demand} refusals)"
        assert math.ceil(0.95 * C) <= got <= C, f"window {k}: {got} admitted"


async def _hammer(clients: list[Clients]) -> tuple[int, list[int]]:
    accepted = 0
    refused_at: list[int] = []
    deadline = time.monotonic() + HAMMER_S

    async def worker(c: Clients, n: int) -> None:
        nonlocal accepted
        price = str(100 + n)
        while time.monotonic() < deadline:
            try:
                await c.orders.PlaceOrder(limit_order("hammer", price=price), timeout=10)
            except aio.AioRpcError as exc:
                got = refusal(exc)
                assert got.reason == "ORDER_RATE_EXCEEDED", got
                assert got.metadata["window"] == "1s" and got.retry_delay_ms is not None
                refused_at.append(time.time_ns() // 1000)
            else:
                accepted += 1

    await asyncio.gather(*(worker(c, n) for c in clients for n in range(TASKS_PER_GATEWAY)))
    return accepted, refused_at


async def _check_propagation(clients: list[Clients]) -> None:
    """A limit set on one gateway's admin port is applied by the others (pushed by pub/sub)."""
    request = apb.SetLimitRequest(
        scope=apb.LIMIT_SCOPE_ACCOUNT, key="someone", kind=apb.LIMIT_KIND_ORDER_RATE,
        value="3/1s", reason="test", actor="ops",
    )  # fmt: skip
    await clients[0].admin.SetLimit(request)
    started = time.monotonic()
    for other in clients[1:]:
        ask = apb.GetEffectiveLimitsRequest(account_id="someone", symbol="BTC-USDT")
        for _ in range(500):  # bounded: at most ~5 s
            shown = await other.admin.GetEffectiveLimits(ask)
            if any(x.source == "admin:account:someone" for x in shown.limits):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the override never reached another gateway")
    print(f"override applied by all gateways within {1000 * (time.monotonic() - started):.0f} ms")
