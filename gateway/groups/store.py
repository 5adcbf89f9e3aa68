"""Membership writes: one guarded single-key script per account (``group_member_write.lua``).

Linking N accounts is N scripts, each on its own key (and Redis Cluster
slot): there is no multi-key transaction to keep cluster-safe. Each write is
guarded, so a link never moves an account out of another group and an unlink
never removes it from a group the caller did not see it in; a partial
failure leaves every account either linked or not, never half-written, and
retrying the same call finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.model import FlagKind
from gateway.store.keys import CHANGES_CHANNEL, flag_key
from gateway.store.redis_client import RedisClient
from gateway.store.scripts import lua_source

Fields = dict[str, str]


@dataclass(frozen=True, slots=True)
class MemberWrite:
    ok: bool
    #: The account's group before the call ("" when none).
    held: str
    new: Fields | None
    version: int


class GroupStore:
    def __init__(self, redis: RedisClient, channel: str = CHANGES_CHANNEL) -> None:
        self._channel = channel
        self._script = redis.register_script(lua_source("group_member_write"))

    async def link(self, account_id: str, group_id: str, reason: str, actor: str) -> MemberWrite:
        return await self._run(account_id, "link", group_id, reason, actor)

    async def unlink(self, account_id: str, group_id: str) -> MemberWrite:
        return await self._run(account_id, "unlink", group_id, "", "")

    async def _run(self, account_id: str, op: str, group_id: str, *meta: str) -> MemberWrite:
        kind = FlagKind.GROUP_MEMBER
        ok, held, _old, new, version = await self._script(
            keys=[flag_key(kind, account_id)],
            args=[self._channel, kind.value, account_id, op, group_id, *meta],
        )
        return MemberWrite(bool(int(ok)), _text(held), _pairs(new) or None, int(version))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> Fields:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
