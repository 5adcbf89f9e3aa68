"""The first snapshot load may outlast the start timeout, as long as it progresses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
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


async def _seed(redis_url: str, records: int = RECORDS) -> None:
    seed = Redis.from_url(redis_url, decode_responses=True)
    prefix = flag_key(FlagKind.ACCOUNT_STATE, "acct-")[:-1]
    await seed.eval(_SEED, 0, records, prefix)  # type: ignore[misc]
    await seed.aclose()


@contextlib.asynccontextmanager
async def _following(
    redis_url: str, store_type: type[FlagStore] = FlagStore
) -> AsyncIterator[tuple[FlagStore, Snapshot, SnapshotFollower]]:
    """A follower on its own clients (not started); stopped and closed afterwards."""
    hot, follower_redis = hot_client(redis_url), follower_client(redis_url)
    store, snapshot = store_type(hot), Snapshot()
    follower = SnapshotFollower(follower_redis, store, snapshot)
    try:
        yield store, snapshot, follower
    finally:
        await follower.stop()
        await hot.aclose()
        await follower_redis.aclose()


async def test_a_long_but_progressing_load_is_waited_for(redis_url: str) -> None:
    await _seed(redis_url)
    async with _following(redis_url) as (store, snapshot, follower):
        # Far shorter than reading 20,000 records takes; each window still sees batches arrive.
        await follower.start(timeout_s=0.2)
        assert len(snapshot.accounts) == RECORDS
        assert store.records_read >= RECORDS


async def test_no_redis_still_fails_after_the_timeout() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with _following(url) as (_, _, follower):
        with pytest.raises(ConnectionError, match="in time"):
            await follower.start(timeout_s=0.3)


async def test_the_whole_wait_is_bounded_too(redis_url: str) -> None:
    await _seed(redis_url)
    async with _following(redis_url) as (_, _, follower):
        with pytest.raises(ConnectionError, match="in time"):
            await follower.start(timeout_s=0.05, limit_s=0.05)


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
    await _seed(redis_url, records=1)
    async with _following(redis_url, _FailsOnce) as (store, snapshot, follower):
        await follower.start(timeout_s=2.0)
        assert isinstance(store, _FailsOnce) and store.failures == 1
        assert snapshot.synced and "acct-1" in snapshot.accounts
