"""The audit trail: every decision and admin change, in bounded Redis Streams.

Decisions are written off the hot path: the engine's report only appends a
tuple to a bounded queue, and a background task sends batches of ``XADD``
(trimmed ``MAXLEN ~`` and/or ``MINID ~``) in one pipeline. Admin changes are
written at once, inside the admin call. Whatever cannot be written (queue at
its bound, Redis failing) is counted in ``pretrade_audit_dropped`` and logged;
orders are never held up by the audit trail.

Streams are shared by every gateway on the same Redis, so a list or a watch
shows the whole venue. Entry ids are Redis server times, which is what the
time filters use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from gateway.decisions import Decision, Outcome
from gateway.metrics import Metrics
from gateway.reasons import Denial
from gateway.records import IdentityMemo
from gateway.snapshot import Snapshot, now_ms
from gateway.store.commands import Commands, as_text
from gateway.store.keys import ADMIN_STREAM, DECISIONS_STREAM
from gateway.store.redis_client import RedisClient
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.audit")

_LOST_LOG_EVERY_S = 5.0
_RETRIES = 3
STREAM_ID_RE = re.compile(r"\d{1,20}-\d{1,20}")


@dataclass(frozen=True, slots=True)
class AuditConfig:
    #: Accepted orders: 1 records every one, N one in N, 0 none. Refusals are always recorded.
    accept_every: int = 1
    #: Approximate bound on the decision stream's length (0: no length bound).
    max_len: int = 1_000_000
    #: Approximate bound on the age of decision records, in ms (0: no age bound).
    max_age_ms: int = 0
    #: Approximate bound on the admin-action stream's length.
    admin_max_len: int = 100_000
    #: Decisions waiting to be written, at most; beyond it they are dropped and counted.
    queue_limit: int = 100_000
    flush_interval_s: float = 0.05
    #: Records per write while the writer keeps up: small, so that a write holds the
    #: order path up briefly (docs/operations.md).
    batch_size: int = 64
    #: Records per write once more than ten writes' worth wait: draining the backlog
    #: fast then matters more than how long each write holds the order path up.
    backlog_batch_size: int = 500


class AuditWriter:
    """A :class:`~gateway.decisions.DecisionSink` that writes to the decision stream."""

    def __init__(
        self,
        commands: Commands,
        snapshot: Snapshot,
        metrics: Metrics,
        instance: str,
        policy_version: str,
        config: AuditConfig,
    ) -> None:
        #: Ideally a connection of its own, so batches never queue behind the order path's calls.
        self._commands = commands
        self._snapshot = snapshot
        self._metrics = metrics
        self.instance = instance
        self.policy_version = policy_version
        self.config = config
        self._queue: deque[tuple[Decision, str]] = deque()
        self._pending: list[tuple[Decision, str]] = []
        self._failures = 0
        self._last_attempt = False
        self._accepts_seen = 0
        self._task: asyncio.Task[None] | None = None
        self._lost_unlogged: dict[str, int] = {}
        self._lost_logged_at = 0.0
        #: Records lost since start (any cause).
        self.lost = 0
        self._dropped: dict[str, Any] = {}
        metrics.audit_backlog.set_function(lambda: len(self._queue) + len(self._pending))

    # -- DecisionSink (hot path) -------------------------------------------------

    def decision(self, decision: Decision) -> None:
        if decision.outcome is Outcome.ACCEPT:
            every = self.config.accept_every
            if every != 1:
                if every <= 0:
                    return
                self._accepts_seen += 1
                if self._accepts_seen < every:
                    return
                self._accepts_seen = 0
        if len(self._queue) >= self.config.queue_limit:
            self._lose(1, "queue_full")
            return
        self._queue.append((decision, self.policy_version))

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        return None

    # -- background ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Stop the task, then try once more to write what is left; count the rest as lost."""
        task, self._task = self._task, None
        await stop_task(task)
        self._last_attempt = True  # one attempt per batch, no retries
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=2.0)
        left = len(self._queue) + len(self._pending)
        if left:
            self._queue.clear()
            self._pending = []
            self._lose(left, "write_failed")
        self._log_lost(force=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            backoff = min(2.0, self.config.flush_interval_s * (2 ** min(self._failures, 8)))
            await asyncio.sleep(backoff)
            await self.flush()
            if self._lost_unlogged and loop.time() - self._lost_logged_at >= _LOST_LOG_EVERY_S:
                self._log_lost()

    async def flush(self) -> None:
        """Write everything queued now, batch by batch; on failure keep the batch for a retry."""
        while self._pending or self._queue:
            if not self._pending:
                waiting, size = len(self._queue), self.config.batch_size
                if waiting > 10 * size:
                    size = self.config.backlog_batch_size
                count = min(waiting, size)
                self._pending = [self._queue.popleft() for _ in range(count)]
            try:
                await self._write(self._pending)
            except (RedisError, OSError) as exc:
                self._metrics.redis_errors.labels("audit").inc()
                self._failures += 1
                if self._failures == 1:
                    log.warning("audit.write_failed", error=str(exc), batch=len(self._pending))
                if self._failures > _RETRIES or self._last_attempt:
                    lost, self._pending = len(self._pending), []
                    self._lose(lost, "write_failed")
                return
            if self._failures:
                log.info("audit.write_recovered", after_failures=self._failures)
            self._failures = 0
            self._metrics.audit_written.labels("decisions").inc(len(self._pending))
            self._pending = []

    async def _write(self, batch: list[tuple[Decision, str]]) -> None:
        config = self.config
        started = asyncio.get_running_loop().time()
        trim: tuple[str | int, ...] = ("MAXLEN", "~", config.max_len) if config.max_len else ()
        commands = [
            ("XADD", DECISIONS_STREAM, *trim, "*", *self._fields(decision, policy_version))
            for decision, policy_version in batch
        ]
        if config.max_age_ms:
            commands.append(("XTRIM", DECISIONS_STREAM, "MINID", "~", self._cutoff_ms()))
        await self._commands.execute_many(commands)
        self._metrics.redis_call("audit", asyncio.get_running_loop().time() - started)

    def _cutoff_ms(self) -> int:
        return max(0, now_ms() - self.config.max_age_ms)

    def _fields(self, d: Decision, policy_version: str) -> list[str | int]:
        """The record's field-value pairs, flat, as XADD takes them."""
        fields: list[str | int] = [
            "ts", d.at_ms,
            "in", self.instance,
            "rid", d.request_id,
            "m", d.method,
            "a", d.account_id,
            "s", d.symbol,
            "d", d.outcome.value,
            "st", d.stage.value,
            "lu", d.local_ns // 1000,
            "ru", d.redis_ns // 1000,
            "pv", policy_version,
        ]  # fmt: skip
        group = self._snapshot.account_group(d.account_id) if d.account_id else ""
        if group:
            fields += ("g", group)
        denial = d.denial
        if denial is not None:
            fields += _denial_fields(denial)
        if d.shadowed:
            fields += ("sh", ",".join(s.reason.value for s in d.shadowed))
        return fields

    # -- loss accounting -------------------------------------------------------------

    def _lose(self, count: int, cause: str) -> None:
        self.lost += count
        counter = self._dropped.get(cause)
        if counter is None:
            counter = self._dropped[cause] = self._metrics.audit_dropped.labels(cause)
        counter.inc(count)
        self._lost_unlogged[cause] = self._lost_unlogged.get(cause, 0) + count
        if self._lost_logged_at == 0.0:
            self._log_lost()  # the first loss is logged at once

    def _log_lost(self, force: bool = False) -> None:
        if not self._lost_unlogged:
            return
        with contextlib.suppress(RuntimeError):
            self._lost_logged_at = asyncio.get_running_loop().time()
        log.error(
            "audit.records_lost",
            lost=dict(self._lost_unlogged),
            lost_total=self.lost,
            stream=DECISIONS_STREAM,
            final=force or None,
        )
        self._lost_unlogged = {}


#: A refusal's fields by the Denial: flag refusals reuse one Denial per refused account and
#: state (gateway.checks), and a bot retrying in a loop would otherwise have its metadata
#: turned into JSON again for every record.
_DENIAL_FIELDS: IdentityMemo[Denial, tuple[str, ...]] = IdentityMemo(8_192)


def _denial_fields(denial: Denial) -> tuple[str, ...]:
    found = _DENIAL_FIELDS.get(denial)
    if found is not None:
        return found
    fields = (
        "r", denial.reason.value,
        "msg", denial.message,
        "l", denial.metadata.get("limit", ""),
        "md", json.dumps(dict(denial.metadata), separators=(",", ":")),
    )  # fmt: skip
    return _DENIAL_FIELDS.put(denial, fields)


# -- admin actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminActionRecord:
    action: str
    actor: str
    reason: str
    target: str
    old: str
    new: str
    ttl_ms: int
    request_id: str
    #: The verified credential (``token:<name>``, ``cert:<common name>``); "" with auth off.
    principal: str = ""


async def write_admin_action(
    redis: RedisClient, record: AdminActionRecord, instance: str, max_len: int, at_ms: int
) -> None:
    fields: dict[str, str | int] = {
        "ts": at_ms,
        "in": instance,
        "rid": record.request_id,
        "act": record.action,
        "actor": record.actor,
        "why": record.reason,
        "tgt": record.target,
        "old": record.old,
        "new": record.new,
        "ttl": record.ttl_ms,
        "who": record.principal,
    }
    await redis.xadd(ADMIN_STREAM, fields, maxlen=max_len or None, approximate=True)  # type: ignore[arg-type]


# -- reading ------------------------------------------------------------------------

Entry = tuple[str, dict[str, str]]
Match = Callable[[Mapping[str, str]], bool]

#: Entries examined per list call at most; a longer search continues with the page token.
SCAN_BUDGET = 20_000
_CHUNK = 500


async def list_entries(
    redis: RedisClient,
    stream: str,
    match: Match,
    page_size: int,
    page_token: str,
    since_ms: int | None,
    until_ms: int | None,
) -> tuple[list[Entry], str]:
    """Newest first; returns the matching entries and the token of the next page ("" at the end)."""
    high = f"({page_token}" if page_token else (str(until_ms - 1) if until_ms else "+")
    low = str(since_ms) if since_ms else "-"
    if until_ms is not None and until_ms <= 0:
        return [], ""
    found: list[Entry] = []
    scanned = 0
    last_id = ""
    while scanned < SCAN_BUDGET:
        count = min(_CHUNK, SCAN_BUDGET - scanned)
        chunk: Any = await redis.xrevrange(stream, max=high, min=low, count=count)
        for raw_id, raw_fields in chunk:
            scanned += 1
            last_id = as_text(raw_id)
            fields = {as_text(k): as_text(v) for k, v in raw_fields.items()}
            if match(fields):
                found.append((last_id, fields))
                if len(found) >= page_size:
                    return found, last_id
        if len(chunk) < count:
            return found, ""
        high = f"({last_id}"
    return found, last_id


async def newest_id(redis: RedisClient, stream: str) -> str:
    """The id of the newest entry ("0-0" for an empty stream): where a watch "from now" starts."""
    newest: Any = await redis.xrevrange(stream, max="+", min="-", count=1)
    return as_text(newest[0][0]) if newest else "0-0"


async def watch_entries(
    redis: RedisClient, stream: str, match: Match, after_id: str, block_ms: int = 1000
) -> AsyncIterator[Entry]:
    """Entries written after ``after_id``, until cancelled."""
    last = after_id
    while True:
        reply: Any = await redis.xread({stream: last}, count=200, block=block_ms)
        for _stream, entries in reply or ():
            for raw_id, raw_fields in entries:
                last = as_text(raw_id)
                fields = {as_text(k): as_text(v) for k, v in raw_fields.items()}
                if match(fields):
                    yield last, fields


def decision_matcher(
    account_id: str = "", group_id: str = "", symbol: str = "", reason: str = "", decision: str = ""
) -> Match:
    wanted = [(k, v) for k, v in (("a", account_id), ("g", group_id), ("s", symbol),
                                  ("d", decision)) if v]  # fmt: skip

    def match(fields: Mapping[str, str]) -> bool:
        for key, value in wanted:
            if fields.get(key, "") != value:
                return False
        if reason and fields.get("r") != reason:
            return reason in fields.get("sh", "").split(",")
        return True

    return match


def action_matcher(actor: str = "", action: str = "", target: str = "") -> Match:
    wanted = [(k, v) for k, v in (("actor", actor), ("act", action), ("tgt", target)) if v]

    def match(fields: Mapping[str, str]) -> bool:
        return all(fields.get(key, "") == value for key, value in wanted)

    return match
