"""Keeps a :class:`~gateway.snapshot.Snapshot` in step with Redis.

Subscribe first, then load everything, then apply the messages that queued up
on the subscription meanwhile: record versions make that order safe. On any
disconnect the snapshot stays in force (decisions go on from it) and is marked
unsynced; after reconnecting it is reloaded whole, since messages published
while we were away are lost with pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.snapshot import Snapshot, now_ms
from gateway.store.flags import FlagChange, FlagStore

log = structlog.get_logger("gateway.follower")

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
_PURGE_EVERY_S = 1.0


class SnapshotFollower:
    """Runs the follow loop as a task.

    ``redis`` must be a client with retries off: redis-py would otherwise
    reconnect a pub/sub connection behind our back and resubscribe, hiding the
    gap during which messages were lost (see :func:`gateway.store.redis_client.follower_client`).
    """

    def __init__(self, redis: Redis, store: FlagStore, snapshot: Snapshot) -> None:
        self._redis = redis
        self._store = store
        self._snapshot = snapshot
        self._task: asyncio.Task[None] | None = None
        self._first_load = asyncio.Event()
        self.reloads = 0

    async def start(self, timeout_s: float = 10.0, limit_s: float = 600.0) -> None:
        """Start following and wait until the first full load is in (or raise).

        Gives up after ``timeout_s`` without progress (no connection, no
        subscription, no batch of records read), not after ``timeout_s`` in
        all: a large snapshot (10^6 flagged accounts) takes longer than that
        to read, and is fine as long as it keeps coming. ``limit_s`` bounds
        the whole wait (loads that keep failing half-way also "progress").
        """
        self._task = asyncio.create_task(self._run(), name="snapshot-follower")
        waiter = asyncio.ensure_future(self._first_load.wait())
        deadline = asyncio.get_running_loop().time() + limit_s
        while True:
            read_before = self._store.records_read
            done, _ = await asyncio.wait(
                {waiter, self._task}, timeout=timeout_s, return_when="FIRST_COMPLETED"
            )
            if self._first_load.is_set():
                waiter.cancel()
                return
            stalled = self._store.records_read == read_before
            if self._task in done or stalled or asyncio.get_running_loop().time() >= deadline:
                waiter.cancel()
                await self.stop()
                raise ConnectionError("could not load the flag snapshot from Redis in time")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # Cancel until it ends: a cancel that lands as a read timeout expires comes
        # back as TimeoutError (an OSError), which the follow loop takes for a
        # dropped connection and retries; waiting on that task once would hang.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._snapshot.synced:
                    log.warning("snapshot.unsynced", error=str(exc))
                self._snapshot.synced = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            else:  # pragma: no cover - _follow_once only returns by raising
                backoff = _BACKOFF_MIN_S

    async def _follow_once(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._store.channel)
            await self._await_subscribed(pubsub)
            unreadable = self._snapshot.replace_all(await self._store.load_all())
            if unreadable:
                log.error(
                    "snapshot.unreadable_records", keys=unreadable[:20], count=len(unreadable)
                )
            self._snapshot.synced = True
            self.reloads += 1
            self._first_load.set()
            log.info(
                "snapshot.loaded",
                accounts=len(self._snapshot.accounts),
                symbols=len(self._snapshot.symbols),
                reloads=self.reloads,
            )
            next_purge = asyncio.get_running_loop().time() + _PURGE_EVERY_S
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_PURGE_EVERY_S
                )
                if message is not None and message.get("type") == "message":
                    self._apply(message)
                loop_now = asyncio.get_running_loop().time()
                if loop_now >= next_purge:
                    self._snapshot.purge_lapsed(now_ms())
                    next_purge = loop_now + _PURGE_EVERY_S
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    async def _await_subscribed(pubsub: Any) -> None:
        # Only once Redis confirms the subscription is every later change sure to reach us.
        while True:
            message = await pubsub.get_message(timeout=5.0)
            if message is None:
                raise ConnectionError("no subscription confirmation from Redis")
            if message.get("type") == "subscribe":
                return

    def _apply(self, message: dict[str, Any]) -> None:
        try:
            change = FlagChange.decode(message["data"])
            self._snapshot.apply(change.kind, change.record_id, change.fields, change.version)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("snapshot.bad_message", error=str(exc))
