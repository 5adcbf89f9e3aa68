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

from gateway.heap import no_full_collections
from gateway.snapshot import Snapshot, decode_record, now_ms
from gateway.store.flags import FlagChange, FlagStore
from gateway.store.redis_client import STORE_ERRORS, PubSubSource
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.follower")

_BACKOFF_MIN_S = 0.05
#: Reconnect attempts at least this often, so the snapshot is back soon after Redis.
_BACKOFF_MAX_S = 0.5
_PURGE_EVERY_S = 1.0
#: Retries after a defect (not an outage) in a follow: from 1 s, doubling up to 30 s.
_DEFECT_BACKOFF_MIN_S = 1.0
_DEFECT_BACKOFF_MAX_S = 30.0
#: The subscription is pinged every second; this long without an answer, it is
#: taken as dead, and the snapshot reloaded once a new one is up.
_LIVENESS_S = 3.0
_LOAD_TIMEOUT_S = 30.0
_PING_PAYLOAD = "pt:follower"


class SnapshotFollower:
    """Runs the follow loop as a task.

    ``redis`` must be a client with retries off: redis-py would otherwise
    reconnect a pub/sub connection behind our back and resubscribe, hiding the
    gap during which messages were lost (see :func:`gateway.store.redis_client.follower_client`).
    """

    def __init__(self, redis: PubSubSource, store: FlagStore, snapshot: Snapshot) -> None:
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
        # A cancel that lands as a read timeout expires comes back as TimeoutError (an
        # OSError), which the follow loop takes for a dropped connection: see stop_task.
        await stop_task(task)

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        defect_backoff = _DEFECT_BACKOFF_MIN_S
        while True:
            reloads = self.reloads
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._snapshot.synced = False
                if not isinstance(exc, STORE_ERRORS):
                    # A defect, not an outage: said loudly and retried, so the follower
                    # never dies with the snapshot unsynced for good; but slowly, with a
                    # backoff no reload resets, since a full load of every flag costs the
                    # Redis all gateways share and the same defect likely strikes again.
                    log.exception("snapshot.follow_failed", retry_in_s=defect_backoff)
                    await asyncio.sleep(defect_backoff)
                    defect_backoff = min(defect_backoff * 2, _DEFECT_BACKOFF_MAX_S)
                    continue
                if self.reloads != reloads:  # it was synced: a fresh outage
                    log.warning("snapshot.unsynced", error=str(exc))
                    backoff = _BACKOFF_MIN_S
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _follow_once(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._store.channel)
            await self._await_subscribed(pubsub)
            unreadable: list[str] = []
            with no_full_collections():  # a million new records would set off ~10 (gateway.heap)
                async with asyncio.timeout(_LOAD_TIMEOUT_S):
                    records = await self._store.load_decoded(
                        decode_record, unreadable, self._snapshot.empty_tables()
                    )
                self._snapshot.install(records)
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
            loop = asyncio.get_running_loop()
            next_purge = loop.time() + _PURGE_EVERY_S
            last_pong = loop.time()
            while True:
                # Raw replies: redis-py's get_message mistakes a decoded pong for a
                # subscribe confirmation and drops it.
                response = await pubsub.parse_response(block=False, timeout=_PURGE_EVERY_S)
                if _is_pong(response):
                    last_pong = loop.time()
                elif response is not None:
                    message = await pubsub.handle_message(  # type: ignore[no-untyped-call,unused-ignore]
                        response, ignore_subscribe_messages=True
                    )
                    if message is not None and message.get("type") == "message":
                        self._apply(message)
                loop_now = loop.time()
                if loop_now >= next_purge:
                    self._snapshot.purge_lapsed(now_ms())
                    next_purge = loop_now + _PURGE_EVERY_S
                    if loop_now - last_pong > _LIVENESS_S:
                        # A stopped server or a dead link shows no error: only silence.
                        raise ConnectionError("no answer from Redis on the subscription")
                    await pubsub.ping(_PING_PAYLOAD)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

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


def _is_pong(response: Any) -> bool:
    """The answer to our PING on the subscription: ``[pong, payload]`` or the bare payload."""
    if isinstance(response, list | tuple) and len(response) == 2:
        kind = response[0].decode() if isinstance(response[0], bytes) else str(response[0])
        response = response[1] if kind.lower() == "pong" else None
    if isinstance(response, bytes):
        response = response.decode(errors="replace")
    return bool(response == _PING_PAYLOAD)
