"""Is this gateway degraded? Redis not answering, or the flag snapshot out of step.

A background task pings Redis (every primary of a cluster) a few times a
second with the hot path's deadline, watches the snapshot follower, and hears
how the order path's own Redis calls went. Two missed pings in a row, two
failed order-path calls in a row (within the last second), or an unsynced
snapshot make the gateway *degraded*; a good ping, no recent failed call and
the snapshot synced make it healthy again. Listeners hear every change: the
server turns it into the gRPC health status of the order-entry service
(NOT_SERVING while degraded).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from prometheus_client import Gauge

from gateway.snapshot import Snapshot
from gateway.store.redis_client import STORE_ERRORS, RedisClient, ping
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.health")

DEGRADED = Gauge(
    "pretrade_degraded",
    "1 while this gateway is degraded (Redis not answering or the flag snapshot unsynced)",
)
STORE_UP = Gauge("pretrade_store_up", "1 while Redis answers this gateway's pings in time")
SNAPSHOT_SYNCED = Gauge("pretrade_snapshot_synced", "1 while the flag snapshot follows Redis")

DEFAULT_INTERVAL_S = 0.25
#: Missed pings (or failed order-path calls) in a row before Redis counts as
#: unavailable: one slow answer is noise.
MISSES_TO_DEGRADE = 2
#: Failed order-path calls older than this no longer count.
RECENT_FAILURE_S = 1.0


@dataclass(frozen=True, slots=True)
class HealthState:
    degraded: bool
    #: Why it is degraded ("" when healthy): ``redis: <error>``, ``snapshot unsynced``.
    reason: str = ""


Listener = Callable[[HealthState], Awaitable[None] | None]


class StoreHealth:
    """Watches Redis and the snapshot; :meth:`start` the task, :meth:`stop` it."""

    def __init__(
        self,
        redis: RedisClient,
        snapshot: Snapshot,
        deadline_ms: int,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._redis = redis
        self._snapshot = snapshot
        self._deadline_s = deadline_ms / 1000
        self._interval_s = interval_s
        self._misses = 0
        self._call_failures = 0
        self._last_call_failure = 0.0
        self._last_error = ""
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self.state = HealthState(degraded=not snapshot.synced, reason=self._reason(False))
        self._publish_gauges(store_up=True)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(state)`` on every change (and not before the first one)."""
        self._listeners.append(listener)

    def observe(self, ok: bool, error: str = "") -> None:
        """How an order-path Redis call went (the counter gate reports every one)."""
        if ok:
            self._call_failures = 0
        else:
            self._call_failures += 1
            self._last_call_failure = time.monotonic()
            self._last_error = error or self._last_error

    @property
    def degraded(self) -> bool:
        return self.state.degraded

    def start(self) -> None:
        """Start watching, from the state things are in now (announced only when it changes)."""
        if self._task is None:
            self.state = HealthState(not self._snapshot.synced, self._reason(True))
            self._publish_gauges(store_up=True)
            self._task = asyncio.create_task(self._run(), name="store-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def check(self) -> HealthState:
        """Ping once and update the state (the task calls this; tests may too)."""
        try:
            async with asyncio.timeout(self._deadline_s):
                await ping(self._redis)
        except STORE_ERRORS as exc:
            self._misses += 1
            self._last_error = type(exc).__name__
        else:
            self._misses = 0
        calls_failing = (
            self._call_failures >= MISSES_TO_DEGRADE
            and time.monotonic() - self._last_call_failure < RECENT_FAILURE_S
        )
        store_up = self._misses < MISSES_TO_DEGRADE and not calls_failing
        self._publish_gauges(store_up)
        state = HealthState(
            degraded=not store_up or not self._snapshot.synced,
            reason=self._reason(store_up),
        )
        if state.degraded != self.state.degraded:
            self.state = state
            await self._announce(state)
        else:
            self.state = state
        return state

    def _reason(self, store_up: bool) -> str:
        if not store_up:
            return f"redis: {self._last_error or 'no answer'}"
        if not self._snapshot.synced:
            return "snapshot unsynced"
        return ""

    def _publish_gauges(self, store_up: bool) -> None:
        STORE_UP.set(1 if store_up else 0)
        SNAPSHOT_SYNCED.set(1 if self._snapshot.synced else 0)
        DEGRADED.set(1 if not store_up or not self._snapshot.synced else 0)

    async def _announce(self, state: HealthState) -> None:
        if state.degraded:
            log.warning("health.degraded", reason=state.reason)
        else:
            log.info("health.restored")
        for listener in self._listeners:
            try:
                result = listener(state)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a listener must not stop the watch
                log.error("health.listener_failed", error=repr(exc))

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)


def grpc_health_listener(
    servicer: object, services: Iterable[str]
) -> Callable[[HealthState], Awaitable[None]]:
    """A listener that sets ``services`` NOT_SERVING while degraded, SERVING after, on a
    ``grpc_health`` async ``HealthServicer`` (the overall ``""`` status is left alone:
    the process is alive and cancels still flow)."""
    from grpc_health.v1 import health_pb2

    names = tuple(services)

    async def update(state: HealthState) -> None:
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if state.degraded
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in names:
            await servicer.set(name, status)  # type: ignore[attr-defined]

    return update
