"""Association evidence in Redis: accounts per device and per IP, and the suspects index.

Keys (the device id or IP is the hash tag, so a script's two keys share a slot):

* ``pt:{ev:<kind>:<value>}:accts``: sorted set, account -> last seen (Redis ms),
  trimmed to the window and to the newest ``MAX_TRACKED``; expires a window
  after the last sighting.
* ``pt:{ev:<kind>:<value>}:alert``: the account count of the last suspicion.
* ``pt:assoc:suspects``: sorted set, ``<kind>:<value>`` -> when last flagged;
  entries older than a window are dropped, at most ``MAX_SUSPECTS`` kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.association.policy import MAX_TRACKED, AssociationPolicy
from gateway.store.keys import PREFIX
from gateway.store.redis_client import RedisClient
from gateway.store.scripts import lua_source

SUSPECTS_KEY = f"{PREFIX}:assoc:suspects"
MAX_SUSPECTS = 10_000
KINDS = ("device", "ip")


def accounts_key(kind: str, value: str) -> str:
    return f"{PREFIX}:{{ev:{kind}:{value}}}:accts"


def alert_key(kind: str, value: str) -> str:
    return f"{PREFIX}:{{ev:{kind}:{value}}}:alert"


@dataclass(frozen=True, slots=True)
class Sightings:
    """What one script call answered: the count, and the accounts if a suspicion was raised."""

    kind: str
    value: str
    count: int
    raised: bool
    now_ms: int
    accounts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Suspect:
    kind: str
    value: str
    flagged_ms: int
    #: (account, last seen ms), newest first, within the window.
    accounts: tuple[tuple[str, int], ...]


class EvidenceStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._script = redis.register_script(lua_source("evidence_record"))

    async def record(
        self, kind: str, value: str, accounts: Sequence[str], policy: AssociationPolicy
    ) -> Sightings:
        raw = await self._script(
            keys=[accounts_key(kind, value), alert_key(kind, value)],
            args=[policy.window_ms, MAX_TRACKED, policy.threshold(kind), *accounts],
        )
        seen: tuple[tuple[str, int], ...] = ()
        if int(raw[1]) and len(raw) > 3:
            flat = raw[3]
            seen = tuple((str(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2))
        return Sightings(kind, value, int(raw[0]), bool(int(raw[1])), int(raw[2]), seen)

    async def flag(self, kind: str, value: str, at_ms: int, window_ms: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(SUSPECTS_KEY, {f"{kind}:{value}": at_ms})
            pipe.zremrangebyscore(SUSPECTS_KEY, "-inf", f"({at_ms - window_ms}")
            pipe.zremrangebyrank(SUSPECTS_KEY, 0, -MAX_SUSPECTS - 1)
            await pipe.execute()

    async def suspects(self, window_ms: int) -> list[Suspect]:
        """Every device and IP flagged within the window, most recent first, with the
        accounts seen with it within the window (those whose sightings all lapsed are left out)."""
        now_ms = await self._now_ms()
        since = now_ms - window_ms
        flagged: Any = await self._redis.zrevrangebyscore(
            SUSPECTS_KEY, "+inf", since, withscores=True
        )
        entries: list[tuple[str, str, int]] = []
        for member, score in flagged:
            kind, _, value = str(member).partition(":")
            if kind in KINDS and value:
                entries.append((kind, value, int(score)))
        if not entries:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, value, _ in entries:
                pipe.zrevrangebyscore(accounts_key(kind, value), "+inf", since, withscores=True)
            results = await pipe.execute()
        out: list[Suspect] = []
        for (kind, value, flagged_ms), seen in zip(entries, results, strict=True):
            accounts = tuple((str(a), int(s)) for a, s in seen)
            if accounts:
                out.append(Suspect(kind, value, flagged_ms, accounts))
        return out

    async def _now_ms(self) -> int:
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
