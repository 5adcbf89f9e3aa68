"""Three gateway processes, one Redis, one capped account, concurrent load, and Redis
paused (5 s) then killed under it: never over the cap, every call answered in time, no crash."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time

import pytest

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.embedded_redis import EmbeddedRedis
from tests.reliability.conftest import DEADLINE_MS, MARGIN_S
from tests.support.faults import kill, pause, restart, resume, wait_for
from tests.support.load import Driver, Outcome, set_limit, timed
from tests.support.rpc import limit_order
from tests.support.servers import connect, gateway_process

CAP = 300
GATEWAYS = 3
WORKERS = 3  # per gateway


@pytest.mark.slow
async def test_cap_holds_across_processes_through_outages(
    redis_server: EmbeddedRedis, tmp_path: pathlib.Path
) -> None:
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(
                gateway_process(redis_server.url, tmp_path, "--redis-timeout-ms", str(DEADLINE_MS))
            )
            for _ in range(GATEWAYS)
        ]
        clients = [await connect(p.order_address, p.admin_address) for p in processes]
        try:
            await set_limit(clients[0], apb.LIMIT_KIND_ORDER_RATE, f"{CAP}/10m", "load")

            async def limit_everywhere() -> bool:
                for c in clients:
                    shown = await c.admin.GetEffectiveLimits(
                        apb.GetEffectiveLimitsRequest(account_id="load", symbol="BTC-USDT")
                    )
                    if not any(x.source == "admin:account:load" for x in shown.limits):
                        return False
                return True

            await wait_for(limit_everywhere, timeout_s=5)

            drivers = []
            for g, c in enumerate(clients):

                async def place(n: int, c=c, g=g) -> Outcome:  # type: ignore[no-untyped-def]
                    request = limit_order("load", client_order_id=f"G{g}-{n}")
                    return await timed("place", c.orders.PlaceOrder(request, timeout=10))

                drivers.append(Driver(place, workers=WORKERS, pause_s=0.15, max_s=60).start())

            await asyncio.sleep(1.0)
            pause(redis_server)
            await asyncio.sleep(5.0)
            resume(redis_server)
            await asyncio.sleep(1.5)
            kill(redis_server)
            await asyncio.sleep(1.0)
            restart(redis_server)
            back = time.monotonic()

            def capped() -> bool:
                return time.monotonic() > back + 1.5 and any(
                    o.reason == "ORDER_RATE_EXCEEDED" and o.sent > back
                    for d in drivers
                    for o in d.outcomes
                )

            try:
                await wait_for(capped, timeout_s=30, every_s=0.05)
            finally:
                outcomes = [o for d in drivers for o in await d.stop()]
            assert all(p.process.poll() is None for p in processes), "a gateway exited"
        finally:
            for c in clients:
                await c.close()

    reasons = {o.reason for o in outcomes}
    assert reasons <= {"", "STORE_UNAVAILABLE", "ORDER_RATE_EXCEEDED"}, reasons
    accepted = sum(1 for o in outcomes if o.ok)
    unavailable = sum(1 for o in outcomes if o.reason == "STORE_UNAVAILABLE")
    slowest = max(o.took for o in outcomes)
    print(f"{len(outcomes)} orders through {GATEWAYS} gateways: {accepted} admitted (cap {CAP}), "
          f"{unavailable} STORE_UNAVAILABLE, slowest {1000 * slowest:.0f} ms")  # fmt: skip
    assert accepted <= CAP
    assert unavailable > 0
    assert slowest < DEADLINE_MS / 1000 + MARGIN_S
    late = [o for o in outcomes if o.sent > back + 1.0]
    assert late and not [o for o in late if o.reason == "STORE_UNAVAILABLE"]
