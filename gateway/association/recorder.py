"""Records association evidence off the hot path: a bounded queue, flushed in batches.

The hot path only reads the call's metadata and, for a sighting not recorded
in the last minute, appends ``(kind, value, account)`` to an in-process queue
(O(1), no I/O). A background task flushes the queue every 100 ms (sooner when
it fills up), one script per distinct device or IP. Memory is bounded: the
queue holds at most ``QUEUE_MAX`` sightings (more are dropped and counted in
``pretrade_evidence_dropped_total``), the recently-recorded set at most
``RECENT_MAX``. Redis trims and expires the rest (see :mod:`gateway.association.store`).

When a script reports that more accounts than the policy allows share a
device or IP within the window, the suspicion is indexed in Redis and
emitted (:func:`gateway.association.audit.emit_suspected_association`); the
script raises it once per growth, whichever gateway flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog
from prometheus_client import Counter
from redis.exceptions import RedisError

from gateway.association.audit import emit_suspected_association
from gateway.association.evidence import Evidence, Metadata, read_evidence
from gateway.association.policy import AssociationPolicy
from gateway.association.store import EvidenceStore, Sightings
from gateway.reasons import Denial
from gateway.snapshot import now_ms
from gateway.store.redis_client import RedisClient
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.association")

QUEUE_MAX = 10_000
RECENT_MAX = 100_000
BATCH = 500
FLUSH_EVERY_S = 0.1
#: A sighting already recorded this recently is not queued again.
REFRESH_MS = 60_000

DROPPED = Counter(
    "pretrade_evidence_dropped",
    "Association sightings dropped: queue full or Redis failing",
)


class EvidenceRecorder:
    """Reads each call's evidence and records it in the background (see the module doc)."""

    def __init__(
        self,
        redis: RedisClient,
        policy: AssociationPolicy,
        trusted_header: str | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.policy = policy
        self.trusted_header = trusted_header.lower() if trusted_header else None
        self.store = EvidenceStore(redis)
        self._clock = clock
        self._queue: deque[tuple[str, str, str]] = deque()
        self._recent: dict[tuple[str, str, str], int] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.recorded = 0

    # -- hot path -----------------------------------------------------------------

    def read(self, metadata: Metadata | None, peer: str) -> Evidence | Denial:
        return read_evidence(metadata, peer, self.trusted_header)

    def observe(self, account_id: str, evidence: Evidence) -> None:
        """Queue the account's sightings (never blocks, never touches the network)."""
        if not evidence.device and not evidence.ip:
            return
        now = self._clock()
        if evidence.device:
            self._sighted(("device", evidence.device, account_id), now)
        if evidence.ip:
            self._sighted(("ip", evidence.ip, account_id), now)

    def _sighted(self, key: tuple[str, str, str], now: int) -> None:
        last = self._recent.get(key)
        if last is not None and now - last < REFRESH_MS:
            return
        if not self.policy.threshold(key[0]):
            return
        if len(self._queue) >= QUEUE_MAX:
            DROPPED.inc()
            return
        if len(self._recent) >= RECENT_MAX:
            self._recent.clear()
        self._recent[key] = now
        self._queue.append(key)
        if len(self._queue) >= BATCH:
            self._wakeup.set()

    # -- background ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="evidence-recorder"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.flush()

    async def flush(self) -> list[Sightings]:
        """Write what is queued; returns the suspicions raised."""
        if not self._queue:
            return []
        batch: dict[tuple[str, str], list[str]] = {}
        while self._queue:
            kind, value, account = self._queue.popleft()
            accounts = batch.setdefault((kind, value), [])
            if account not in accounts:
                accounts.append(account)
        policy = self.policy
        results = await asyncio.gather(
            *(self.store.record(k, v, a, policy) for (k, v), a in batch.items()),
            return_exceptions=True,
        )
        raised: list[Sightings] = []
        for ((kind, value), accounts), result in zip(batch.items(), results, strict=True):
            if isinstance(result, BaseException):
                DROPPED.inc(len(accounts))
                for account in accounts:  # so that they are queued again next time
                    self._recent.pop((kind, value, account), None)
                log.warning("evidence.record_failed", evidence=kind, error=repr(result))
                continue
            self.recorded += len(accounts)
            if result.raised:
                raised.append(result)
        for sightings in raised:
            await self._raise(sightings, policy)
        return raised

    async def _raise(self, sightings: Sightings, policy: AssociationPolicy) -> None:
        try:
            await self.store.flag(
                sightings.kind, sightings.value, sightings.now_ms, policy.window_ms
            )
        except (RedisError, OSError) as exc:
            log.warning("evidence.flag_failed", evidence=sightings.kind, error=repr(exc))
        emit_suspected_association(
            evidence=sightings.kind,
            value=sightings.value,
            accounts=list(sightings.accounts),
            max_accounts=policy.threshold(sightings.kind),
            window_ms=policy.window_ms,
            flagged_ms=sightings.now_ms,
        )

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_EVERY_S):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or odd reply must not end recording for good
                log.error("evidence.flush_error", error=repr(exc))
