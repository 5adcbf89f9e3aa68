"""The counter store: one Redis round trip per call, atomic, through one Lua script.

:class:`CounterStore` is the boundary the gate talks to (a later store can
batch the plans of concurrent calls into one pipeline behind the same three
methods). :class:`RedisCounterStore` runs ``counters.lua`` by ``EVALSHA``, and
by ``EVAL`` on the node that answers ``NOSCRIPT`` (after a Redis restart, a
failover or ``SCRIPT FLUSH``).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.counters.plan import CounterPlan
from gateway.records import hot_record
from gateway.store.commands import Commands
from gateway.store.scripts import LuaScript

ACCEPTED, REFUSED, PEEKED, RETRY = 1, 0, 2, 3


@hot_record
class OpOutcome:
    """The script's answer for one op of the plan (``index`` is 0-based)."""

    index: int
    count: int = 0
    limit: int = 0
    delay_ms: int = 0
    #: After an accepted call: what is left of this budget.
    remaining: int = 0


@hot_record
class StoreReply:
    status: int
    #: Redis server time of the decision, in microseconds.
    now_us: int
    outcomes: tuple[OpOutcome, ...]
    #: For a retry of an admitted place: how many uncounted retries it has had.
    retries: int = 0

    @property
    def accepted(self) -> bool:
        """Admitted: counted now, or a retry of a place counted before."""
        return self.status in (ACCEPTED, RETRY)

    @property
    def retry(self) -> bool:
        return self.status == RETRY


class CounterStore(Protocol):
    async def consume(self, plan: CounterPlan, timeout_s: float | None = None) -> StoreReply:
        """Check every counter of the plan and consume them all, or none. Raises the
        builtin ``TimeoutError`` when no answer came within ``timeout_s``."""

    async def peek(self, plan: CounterPlan) -> StoreReply:
        """Report every counter of the plan as it stands; change nothing."""

    async def remember(
        self, records: Sequence[tuple[str, str, int]], forget: Sequence[str] = ()
    ) -> None:
        """Store ``(key, value, ttl_ms)`` order records and delete the ``forget`` keys."""


class RedisCounterStore:
    """``commands``: the order path's connection (:class:`~gateway.store.commands.Commands`).
    ``clock_us`` pins the time the script uses (tests only); by default Redis ``TIME``."""

    def __init__(self, commands: Commands, clock_us: Callable[[], int] | None = None) -> None:
        self.commands = commands
        self._script = LuaScript("counters")
        self._clock_us = clock_us
        self._nonce_prefix = secrets.token_hex(6)
        self._sequence = itertools.count()

    async def consume(self, plan: CounterPlan, timeout_s: float | None = None) -> StoreReply:
        return await self._run("consume", plan, timeout_s)

    async def peek(self, plan: CounterPlan) -> StoreReply:
        return await self._run("peek", plan)

    async def remember(
        self, records: Sequence[tuple[str, str, int]], forget: Sequence[str] = ()
    ) -> None:
        commands: list[tuple[str | int, ...]] = [
            ("SET", key, value, "PX", ttl_ms) for key, value, ttl_ms in records
        ]
        commands += [("DEL", key) for key in forget]
        await self.commands.execute_many(commands)

    async def _run(
        self, mode: str, plan: CounterPlan, timeout_s: float | None = None
    ) -> StoreReply:
        pinned = str(self._clock_us()) if self._clock_us is not None else ""
        nonce = f"{self._nonce_prefix}:{next(self._sequence)}"
        args = [mode, pinned, nonce, str(plan.day_start_ms), *plan.args()]
        script = self._script
        reply = await self.commands.evalsha(script.sha, script.source, plan.keys, args, timeout_s)
        return parse_reply(reply)


def parse_reply(raw: Sequence[Any]) -> StoreReply:
    status, now_us = int(raw[0]), int(raw[1])
    rest = list(map(int, raw[2:]))
    if status == RETRY:
        return StoreReply(status, now_us, (), rest[1])
    if status == ACCEPTED:
        outcomes = tuple(
            [OpOutcome(rest[i] - 1, 0, 0, 0, rest[i + 1]) for i in range(0, len(rest), 2)]
        )
    else:
        outcomes = tuple(
            [
                OpOutcome(rest[i] - 1, rest[i + 1], rest[i + 2], rest[i + 3])
                for i in range(0, len(rest), 4)
            ]
        )
    return StoreReply(status, now_us, outcomes)
