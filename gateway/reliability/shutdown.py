"""Work to finish on shutdown, after the last call and before Redis is let go.

The graceful stop is: health NOT_SERVING, stop accepting calls, let the calls
in flight finish (up to the grace period), then run these hooks in the order
they were added (e.g. flush the audit buffer), each bounded by its own
timeout, then stop the followers and close the Redis clients. A failing or
slow hook is logged and skipped; it never blocks the exit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("gateway.shutdown")

Hook = Callable[[], Awaitable[None]]
DEFAULT_HOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    hook: Hook
    timeout_s: float


class ShutdownHooks:
    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._ran = False

    def add(self, name: str, hook: Hook, timeout_s: float = DEFAULT_HOOK_TIMEOUT_S) -> None:
        """Run ``await hook()`` on shutdown (named in the logs), for at most ``timeout_s``."""
        self._entries.append(_Entry(name, hook, timeout_s))

    async def run(self) -> None:
        """Run every hook once, in order; later calls do nothing."""
        if self._ran:
            return
        self._ran = True
        for entry in self._entries:
            started = time.monotonic()
            try:
                async with asyncio.timeout(entry.timeout_s):
                    await entry.hook()
            except TimeoutError:
                log.error("shutdown.hook_timeout", hook=entry.name, timeout_s=entry.timeout_s)
            except Exception as exc:
                log.error("shutdown.hook_failed", hook=entry.name, error=repr(exc))
            else:
                took_ms = round(1000 * (time.monotonic() - started))
                log.info("shutdown.hook_done", hook=entry.name, took_ms=took_ms)
