"""The first snapshot load may outlast the start timeout, as long as it progresses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from gateway.embedded_redis import free_port
from gateway.model import FlagKind
from gateway.snapshot import Snapshot
from gateway.store import FlagStore, SnapshotFollower, follower_client, hot_client
from gateway.store.keys import flag_key

RECORDS = 20_000
_R = TypeVar("_R")

# Server-side seeding: one call writes every record in the format of flag_write.lua.
_SEED = """
for i = 1, tonumber(ARGV[1]) do
  redis.call('HSET', ARGV[2] .. i .. '}', 'value', '3', 'reason', 'r', 'actor', 'a',
             'updated_ms', '1', 'expires_ms', '0', 'version', tostring(i))
end
return 1
"""


async def test_a_long_but_progressing_load_is_waited_for(redis_url: str) -> None:
    seed = Redis.from_url(redis_url, decode_responses=True)
    prefix = flag_key(FlagKind.ACCOUNT_STATE, "acct-")[:-1]
    await seed.eval(_SEED, 0, RECORDS, prefix)  # type: ignore[misc]
    await seed.aclose()
    hot, follower_redis = hot_client(redis_url), follower_client(redis_url)
    store, snapshot = FlagStore(hot), Snapshot()
    follower = SnapshotFollower(follower_redis, store, snapshot)
    try:
        # Far shorter than reading 20,000 records takes; each window still sees batches arrive.
        await follower.start(timeout_s=0.2)
        assert len(snapshot.accounts) == RECORDS
        assert store.records_read >= RECORDS
    finally:
        await follower.stop()
        await hot.aclose()
        await follower_redis.aclose()


async def test_no_redis_still_fails_after_the_timeout() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    hot, follower_redis = hot_client(url), follower_client(url)
    follower = SnapshotFollower(follower_redis, FlagStore(hot), Snapshot())
    try:
        with pytest.raises(ConnectionError, match="in time"):
            await follower.start(timeout_s=0.3)
    finally:
        await hot.aclose()
        await follower_redis.aclose()


async def test_the_whole_wait_is_bounded_too(redis_url: str) -> None:
    seed = Redis.from_url(redis_url, decode_responses=True)
    prefix = flag_key(FlagKind.ACCOUNT_STATE, "acct-")[:-1]
    await seed.eval(_SEED, 0, RECORDS, prefix)  # type: ignore[misc]
    await seed.aclose()
    hot, follower_redis = hot_client(redis_url), follower_client(redis_url)
    follower = SnapshotFollower(follower_redis, FlagStore(hot), Snapshot())
    try:
        with pytest.raises(ConnectionError, match="in time"):
            await follower.start(timeout_s=0.05, limit_s=0.05)
    finally:
        await hot.aclose()
        await follower_redis.aclose()


class _FailsOnce(FlagStore):
    """A store whose first full load hits a defect (not an outage)."""

    failures = 0

    async def load_decoded(
        self,
        decode: Callable[[FlagKind, dict[str, str]], _R],
        bad: list[str],
        into: dict[FlagKind, dict[str, _R]] | None = None,
    ) -> dict[FlagKind, dict[str, _R]]:
        if not self.failures:
            self.failures += 1
            raise RuntimeError("a defect in the load")
        return await super().load_decoded(decode, bad, into)


async def test_a_defect_in_a_load_is_retried_not_the_end_of_the_follower(redis_url: str) -> None:
    seed = Redis.from_url(redis_url, decode_responses=True)
    await seed.hset(flag_key(FlagKind.ACCOUNT_STATE, "alice"), mapping={"value": "3"})
    await seed.aclose()
    hot, follower_redis = hot_client(redis_url), follower_client(redis_url)
    store, snapshot = _FailsOnce(hot), Snapshot()
    follower = SnapshotFollower(follower_redis, store, snapshot)
    try:
        await follower.start(timeout_s=2.0)
        assert store.failures == 1
        assert snapshot.synced and "alice" in snapshot.accounts
    finally:
        await follower.stop()
        await hot.aclose()
        await follower_redis.aclose()
