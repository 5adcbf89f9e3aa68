"""One small interface for the gateway's bulk and hot-path Redis calls.

The order path's counter call, the audit trail's ``XADD`` batches, order records
and the snapshot's full load issue plain commands, batches of them and one
script. With a single Redis over TCP they go over an auto-pipelined connection
(:class:`~gateway.store.autopipe.AutoPipeline`); a cluster, TLS or a Unix
socket keeps redis-py (:class:`RedisPyCommands`). Both have the same three
methods, so callers hold one :class:`Commands` and never ask which it is.

Replies are decoded strings, integers and lists. A reply redis-py turns into
something else for its own client (``HGETALL``'s dict, ``SET``'s ``True``)
stays that way here: read them through helpers such as :func:`field_map`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from redis.exceptions import NoScriptError

from gateway.store.redis_client import RedisClient

Arg = str | int | bytes


class Commands(Protocol):
    async def execute(self, *args: Arg) -> Any:
        """One command; its reply, or a redis-py exception."""

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one round trip (not a transaction); their replies in
        order. An error reply raises."""

    async def evalsha(
        self,
        sha: str,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
        timeout_s: float | None = None,
    ) -> Any:
        """``EVALSHA``, and ``EVAL`` of ``source`` where the script is not cached. With
        ``timeout_s``: the builtin ``TimeoutError`` once that has passed with no reply
        (what the order path's deadline needs, without a timer of its own per call)."""


class RedisPyCommands:
    """:class:`Commands` over a redis-py client (a cluster routes each command by key)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def execute(self, *args: Arg) -> Any:
        return await self._redis.execute_command(*args)

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        if not commands:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    async def evalsha(
        self,
        sha: str,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
        timeout_s: float | None = None,
    ) -> Any:
        async with asyncio.timeout(timeout_s):
            try:
                return await self._redis.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                return await self._redis.eval(source, len(keys), *keys, *args)


def field_map(reply: Any) -> dict[str, str]:
    """An ``HGETALL`` reply as a dict, from either kind of :class:`Commands` (a client
    decodes every reply or none, so one field tells which)."""
    if isinstance(reply, Mapping):
        fields = dict(reply)
    else:
        it = iter(reply)
        fields = dict(zip(it, it, strict=True))
    if not fields or type(next(iter(fields))) is str:
        return fields
    return {as_text(k): as_text(v) for k, v in fields.items()}


def as_text(value: Any) -> str:
    """A reply's string, decoded when the client did not decode it."""
    return value.decode() if isinstance(value, bytes) else str(value)
