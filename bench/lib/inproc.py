"""In-process measurements: a real Gatekeeper on a real Redis, timed call by call."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from bench.lib.orders import PLACE_PATH
from bench.lib.redis_probe import HOT_NAME, name_connections
from gateway.engine import ORDER_METHODS, Gatekeeper, OrderMethod
from gateway.policy import load_policy

PLACE: OrderMethod = ORDER_METHODS[PLACE_PATH]

Screen = Callable[[OrderMethod, Any], Awaitable[Any]]


@contextlib.asynccontextmanager
async def open_gatekeeper(redis_url: str, policy: pathlib.Path) -> AsyncIterator[Gatekeeper]:
    """A Gatekeeper exactly as the gateway opens one, its hot-path connections named."""
    keeper = await Gatekeeper.open(redis_url, load_policy(policy), auth=False)
    await name_connections(keeper.redis, HOT_NAME)
    if keeper.pipe is not None:
        keeper.pipe.rename(HOT_NAME)
    try:
        yield keeper
    finally:
        await keeper.close()


#: Calls between two turns of the event loop given to the gateway's background tasks
#: (audit writer, snapshot follower): a decision that needs no I/O never yields, and a
#: server yields between requests all the time. The turn is not in any sample.
YIELD_EVERY = 64


async def time_screen(
    screen: Screen, method: OrderMethod, pool: Sequence[Any], count: int
) -> tuple[list[int], float]:
    """Nanoseconds per ``await screen(method, request)`` over ``pool``; and the wall time."""
    samples = [0] * count
    size = len(pool)
    clock = time.perf_counter_ns
    start = clock()
    for i in range(count):
        request = pool[i % size]
        t0 = clock()
        await screen(method, request)
        samples[i] = clock() - t0
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return samples, (clock() - start) / 1e9


async def time_calls(
    call: Callable[[Any], Awaitable[Any]], pool: Sequence[Any], count: int
) -> tuple[list[int], float, int]:
    """Per-call nanoseconds of ``await call(item)``; exceptions are counted, not raised."""
    samples = [0] * count
    errors = 0
    size = len(pool)
    clock = time.perf_counter_ns
    start = clock()
    for i in range(count):
        item = pool[i % size]
        t0 = clock()
        try:
            await call(item)
        except Exception:
            errors += 1
        samples[i] = clock() - t0
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return samples, (clock() - start) / 1e9, errors


async def time_calls_after(
    call: Callable[[Any], Awaitable[Any]],
    before: Callable[[], Awaitable[Any]],
    pool: Sequence[Any],
    count: int,
) -> tuple[list[int], float, int]:
    """Like :func:`time_calls`, each call right after an untimed ``await before()``.

    With ``before`` a Redis round trip, a call runs in the state a served call
    finds the process in: just back from the socket and the kernel's network
    path, which leave less of the order path in the CPU's caches than a tight
    loop of calls does. The wall time counts the untimed calls too.
    """
    samples = [0] * count
    errors = 0
    size = len(pool)
    clock = time.perf_counter_ns
    start = clock()
    for i in range(count):
        item = pool[i % size]
        await before()
        t0 = clock()
        try:
            await call(item)
        except Exception:
            errors += 1
        samples[i] = clock() - t0
    return samples, (clock() - start) / 1e9, errors


async def settle(keeper: Gatekeeper) -> None:
    """Start every timed row from the same state: no audit backlog left by the row before
    (a row pays for writing its own decisions, not those of 150,000 refusals timed just
    before it) and a collected heap (GC stays on while timing)."""
    await keeper.ops.audit.flush()
    gc.collect()
