"""Count what Redis itself saw during a window: round trips per decision.

Two sources, both from the server:

* ``INFO commandstats`` before and after (the deltas are what the issue asks
  for). They count every command, including those a Lua script runs inside
  Redis, so on their own they cannot tell one EVALSHA running three commands
  from four round trips.
* ``SLOWLOG`` with a threshold of 0 for the window: one entry per executed
  command with the client's name, and ``?:0`` as the address of commands run
  by a script. That splits the commandstats total into round trips per client
  and commands run inside scripts.

The two must agree (the same total, over the same window: what ran between
the observer's two INFO calls); ``complete`` says whether they did. The
hot-path client of the gateway under test is given a connection name, so its
round trips are counted apart from the follower's pub/sub pings and from this
observer's own INFO/SLOWLOG/CONFIG calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from redis.asyncio import Redis

OBSERVER_NAME = "bench-observer"
HOT_NAME = "gateway-hot"
SCRIPT_ADDRESS = "?:0"
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


async def name_connections(redis: Redis, name: str) -> None:
    """Name every connection of ``redis`` (CLIENT SETNAME), the open ones after a reconnect."""
    pool = redis.connection_pool
    pool.connection_kwargs["client_name"] = name
    existing = [
        *getattr(pool, "_available_connections", ()),
        *getattr(pool, "_in_use_connections", ()),
    ]
    for connection in existing:
        connection.client_name = name
    await pool.disconnect()


async def script_time(redis: Redis) -> tuple[int, int]:
    """Script calls Redis has run so far and the microseconds it spent in them
    (``INFO commandstats``: EVAL and EVALSHA, the commands they run included)."""
    info = await redis.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_eval", "cmdstat_evalsha"):
        stats = info.get(name)
        if isinstance(stats, dict):
            calls += int(stats.get("calls", 0))
            usec += int(stats.get("usec", 0))
    return calls, usec


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


#: Commands only the background writers send (never a decision): see ``stop``.
BACKGROUND_COMMANDS = frozenset(
    {"xadd", "xtrim", "zadd", "zremrangebyscore", "zcard", "pexpire", "expire", "del", "hset",
     "multi", "exec", "ping", "client"}
)  # fmt: skip


class RoundTripProbe:
    """``await probe.start()``, run the workload, ``report = await probe.stop(decisions)``.

    Round trips are those of the connections named ``client``.
    """

    def __init__(self, url: str, client: str = HOT_NAME, slowlog_capacity: int = 500_000) -> None:
        self._redis = Redis.from_url(url, decode_responses=True, client_name=OBSERVER_NAME)
        self._client = client
        self._capacity = slowlog_capacity
        self._saved: dict[str, str] = {}
        self._before: dict[str, int] = {}

    async def start(self) -> None:
        for name in ("slowlog-log-slower-than", "slowlog-max-len"):
            self._saved.update(await self._redis.config_get(name))
        await self._redis.config_set("slowlog-max-len", self._capacity)
        await self._redis.config_set("slowlog-log-slower-than", 0)
        await self._redis.slowlog_reset()
        self._before = await self._commandstats()

    async def stop(self, operations: int) -> dict[str, Any]:
        after = await self._commandstats()
        entries = await self._redis.slowlog_get(-1)
        for name, value in self._saved.items():
            await self._redis.config_set(name, value)
        delta = {
            cmd: after.get(cmd, 0) - self._before.get(cmd, 0)
            for cmd in set(after) | set(self._before)
        }
        delta["info"] = delta.get("info", 0) - 1  # the observer's INFO that opened the window
        delta = {cmd: n for cmd, n in sorted(delta.items()) if n}

        # The window is what ran between the observer's two INFO calls, exactly what the
        # commandstats delta covers, even if other clients write in the background.
        infos = sorted(
            int(e["id"])
            for e in entries
            if _text(e.get("client_name")) == OBSERVER_NAME
            and _text(e.get("command")).lower().startswith("info")
        )
        first, last = (infos[0], infos[-1]) if len(infos) >= 2 else (-1, 1 << 62)
        by_client: Counter[str] = Counter()
        client_commands: Counter[str] = Counter()
        in_scripts: Counter[str] = Counter()
        commands: Counter[str] = Counter()
        for entry in entries:
            name = _text(entry.get("client_name"))
            if name == OBSERVER_NAME or not first < int(entry["id"]) < last:
                continue
            command = _text(entry.get("command")).split(" ", 1)[0].lower()
            address = _text(entry.get("client_address"))
            commands[command] += 1
            if address == SCRIPT_ADDRESS:
                in_scripts[command] += 1
            else:
                by_client[name or address or "?"] += 1
                if name == self._client:
                    client_commands[command] += 1
        logged = sum(commands.values())
        # Writers that run beside the decisions, off their path (the audit stream's
        # batched XADDs, association evidence, order records after the upstream's
        # answer) and the health pings share the hot client: counted apart, not as the
        # decisions' round trips.
        background = sum(n for c, n in client_commands.items() if c in BACKGROUND_COMMANDS)
        hot = by_client.get(self._client, 0) - background
        return {
            "operations": operations,
            "round_trips": hot,
            "round_trips_per_operation": hot / operations if operations else None,
            "script_calls": sum(n for c, n in commands.items() if c in SCRIPT_COMMANDS),
            "commands_in_scripts": dict(in_scripts),
            "round_trips_by_command": dict(client_commands),
            "background_writes": background,
            "round_trips_by_client": dict(by_client),
            "commandstats_delta": delta,
            "commandstats_total": sum(delta.values()),
            "slowlog_total": logged,
            "complete": logged == sum(delta.values()) and len(entries) < self._capacity,
        }

    async def close(self) -> None:
        await self._redis.aclose()

    async def _commandstats(self) -> dict[str, int]:
        info = await self._redis.info("commandstats")
        out: dict[str, int] = {}
        for key, value in info.items():
            if key.startswith("cmdstat_") and isinstance(value, dict):
                out[key[len("cmdstat_") :].replace("|", " ")] = int(value.get("calls", 0))
        return out
