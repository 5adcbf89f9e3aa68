"""Stopping background tasks for sure.

A cancel that lands while a task waits under ``asyncio.timeout`` (or inside a
client library's own timeout) can come back as ``TimeoutError``; a loop that
retries on timeouts then swallows it and runs on, and waiting on that task
once would hang shutdown. So: cancel until it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None, recheck_s: float = 1.0) -> None:
    """Cancel ``task`` (again every ``recheck_s`` while it runs on) and wait until it ends."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recheck_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
