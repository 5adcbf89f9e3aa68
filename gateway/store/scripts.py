"""Lua scripts kept as files in the package, called by ``EVALSHA``.

A node that does not have the script (after a Redis restart, a failover, a
slot moving to another master, or ``SCRIPT FLUSH``) answers ``NOSCRIPT``; the
call is then made once more with ``EVAL``, which runs the script on the node
that owns the keys and leaves it in that node's cache for the next calls.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from gateway.store.redis_client import RedisClient


@functools.cache
def lua_source(name: str) -> str:
    return importlib.resources.files("gateway.store").joinpath("lua", f"{name}.lua").read_text()


class LuaScript:
    """One script file, run against a single Redis or a cluster."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = lua_source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(
        self, client: RedisClient, keys: Sequence[str], args: Sequence[str | int]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
