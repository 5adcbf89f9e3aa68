"""Shutdown hooks: in order, each bounded, failures contained, once."""

import asyncio

from gateway.reliability.shutdown import ShutdownHooks


async def test_hooks_run_in_order_once_and_failures_are_contained() -> None:
    ran: list[str] = []
    hooks = ShutdownHooks()

    async def ok(name: str) -> None:
        ran.append(name)

    async def broken() -> None:
        ran.append("broken")
        raise RuntimeError("disk full")

    async def stuck() -> None:
        ran.append("stuck")
        await asyncio.sleep(60)

    hooks.add("first", lambda: ok("first"))
    hooks.add("broken", broken)
    hooks.add("stuck", stuck, timeout_s=0.05)
    hooks.add("last", lambda: ok("last"))
    await asyncio.wait_for(hooks.run(), 5)
    await hooks.run()
    assert ran == ["first", "broken", "stuck", "last"]
