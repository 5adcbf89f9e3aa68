"""Membership writes: one guarded script per account, published like every flag change."""

from __future__ import annotations

import asyncio

from gateway.groups.store import GroupStore
from gateway.model import FlagKind
from gateway.store import FlagChange, FlagStore
from gateway.store.keys import CHANGES_CHANNEL, flag_key
from gateway.store.redis_client import hot_client


async def test_link_is_guarded_published_and_loadable(redis_url: str) -> None:
    redis = hot_client(redis_url)
    listener = hot_client(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(CHANGES_CHANNEL)
    try:
        store = GroupStore(redis)
        first = await store.link("alice", "g1", "same device", "ops")
        assert first.ok and first.held == "" and first.new is not None
        assert first.new["group"] == "g1" and first.new["actor"] == "ops"
        # Linking again into the same group rewrites; into another is refused, nothing changes.
        again = await store.link("alice", "g1", "again", "ops")
        assert again.ok and again.held == "g1" and again.version > first.version
        moved = await store.link("alice", "g2", "other", "ops")
        assert not moved.ok and moved.held == "g1"
        assert (await redis.hgetall(flag_key(FlagKind.GROUP_MEMBER, "alice")))["group"] == "g1"
        # An unlink names the group it expects.
        assert not (await store.unlink("alice", "g2")).ok
        assert await FlagStore(redis).load_all() == {
            **{kind: {} for kind in FlagKind},
            FlagKind.GROUP_MEMBER: {
                "alice": await FlagStore(redis).read(FlagKind.GROUP_MEMBER, "alice")
            },
        }
        gone = await store.unlink("alice", "g1")
        assert gone.ok and gone.held == "g1" and gone.new is None
        assert await redis.exists(flag_key(FlagKind.GROUP_MEMBER, "alice")) == 0

        changes: list[FlagChange] = []
        async with asyncio.timeout(5):
            while len(changes) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    changes.append(FlagChange.decode(message["data"]))
        assert [(c.kind, c.record_id, (c.fields or {}).get("group")) for c in changes] == [
            (FlagKind.GROUP_MEMBER, "alice", "g1"),
            (FlagKind.GROUP_MEMBER, "alice", "g1"),
            (FlagKind.GROUP_MEMBER, "alice", None),
        ]
        assert changes[2].version > changes[1].version > changes[0].version
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await redis.aclose()
