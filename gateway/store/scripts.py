"""Lua scripts kept as files in the package, registered once per client.

redis-py's registered scripts call ``EVALSHA`` and, on ``NOSCRIPT`` (after a
Redis restart, failover or ``SCRIPT FLUSH``), load the script and retry.
"""

from __future__ import annotations

import functools
import importlib.resources


@functools.cache
def lua_source(name: str) -> str:
    return importlib.resources.files("gateway.store").joinpath("lua", f"{name}.lua").read_text()
