"""The counter step of the decision: resolve limits, one store call, read the answer.

Runs after the local checks, only for calls that passed them. A refusal names
the binding limit (the one with the longest wait) and the exact delay; an
acceptance carries the tightest remaining budget for the response metadata
and, for a place, what to remember once the exchange has accepted the order.

When the store fails (Redis down, slow, erroring) the decision is made here
and nowhere else: new orders and amends are refused (fail closed), cancels are
let through (fail open: they are how users get out of risk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from google.protobuf.message import DecodeError
from prometheus_client import Counter
from redis.exceptions import RedisError

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.keys import counting_subject, order_record_key
from gateway.counters.limits import LimitKind
from gateway.counters.plan import (
    Check,
    CounterPlan,
    PlacementRecord,
    ReferencePrice,
    build_plan,
    build_usage_plan,
)
from gateway.counters.resolve import EffectiveLimits, LimitResolver
from gateway.counters.store import CounterStore, OpOutcome, StoreReply
from gateway.model import Action
from gateway.reasons import Denial, Reason
from gateway.snapshot import now_ms
from gateway.validation import OrderCall

log = structlog.get_logger("gateway.counters")

STORE_FAILURES = Counter(
    "pretrade_counter_store_failures",
    "Calls decided by the failure policy because the counter store did not answer",
    ("action", "outcome"),
)

#: Response metadata keys on accepted calls (the tightest budget the call touched).
REMAINING_KEY = "x-ratelimit-remaining"
LIMIT_KEY = "x-ratelimit-limit"
WINDOW_KEY = "x-ratelimit-window"
NAME_KEY = "x-ratelimit-name"

UNAVAILABLE_RETRY_MS = 1000

_REASONS = {
    LimitKind.ORDER_RATE: Reason.ORDER_RATE_EXCEEDED,
    LimitKind.CANCEL_RATE: Reason.CANCEL_RATE_EXCEEDED,
    LimitKind.LARGE_ORDER_RATE: Reason.LARGE_ORDER_RATE_EXCEEDED,
    LimitKind.LARGE_CANCEL_RATE: Reason.LARGE_ORDER_RATE_EXCEEDED,
    LimitKind.DAILY_OPEN: Reason.DAILY_POSITION_LIMIT,
    LimitKind.CANCEL_RATIO: Reason.CANCEL_RATIO_EXCEEDED,
    LimitKind.MIN_RESTING: Reason.MIN_RESTING_TIME,
}


class Admission:
    """An accepted call: response metadata, and a hook for the upstream's answer."""

    __slots__ = ("_remember", "metadata")

    def __init__(
        self,
        metadata: tuple[tuple[str, str], ...] = (),
        remember: Callable[[str], None] | None = None,
    ) -> None:
        self.metadata = metadata
        self._remember = remember

    def accepted(self, response: Any) -> None:
        """The upstream accepted the call and answered ``response`` (a response message)."""
        if self._remember is not None:
            order_id = getattr(response, "order_id", "")
            if isinstance(order_id, str) and order_id:
                self._remember(order_id)

    def accepted_bytes(self, raw: bytes) -> None:
        """Like :meth:`accepted` for a response still in wire form (parsed only when needed)."""
        if self._remember is None:
            return
        try:
            response = pb.PlaceOrderResponse.FromString(raw)
        except DecodeError:
            return
        self.accepted(response)


#: The admission of a call no counter applies to (no Redis call was made for it).
ADMITTED = Admission()


class CounterGate:
    """Applies the behavioural limits to calls that passed the local checks."""

    def __init__(
        self,
        store: CounterStore,
        resolver: LimitResolver,
        *,
        subject_of: Callable[[str], str] = counting_subject,
        reference_price: ReferencePrice | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.resolver = resolver
        #: Resolves whose counters an account spends (a linked group, later).
        self.subject_of = subject_of
        #: Price for market orders' notional; until one is known they are never large.
        self.reference_price = reference_price
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()

    def limits_for(self, account_id: str, symbol: str) -> EffectiveLimits:
        return self.resolver.effective(account_id, symbol, self._clock())

    async def admit(self, call: OrderCall) -> Denial | Admission:
        limits = self.limits_for(call.account_id, call.symbol)
        if limits.empty:
            return ADMITTED
        subject = self.subject_of(call.account_id)
        policy = self.resolver.policy
        plan = build_plan(call, limits, subject, policy, self.reference_price)
        if plan.empty:
            return ADMITTED
        try:
            async with asyncio.timeout(policy.timeout_ms / 1000):
                reply = await self.store.consume(plan)
        except (RedisError, OSError, TimeoutError) as exc:
            return self._store_failed(call, exc)
        if not reply.accepted:
            return refusal(call, plan, reply)
        return Admission(budget_metadata(plan, reply), self._recorder(plan.record, reply))

    async def usage(self, account_id: str, symbol: str) -> list[tuple[Check, OpOutcome]]:
        """Every counter the account's limits on ``symbol`` define, as it stands now."""
        limits = self.limits_for(account_id, symbol)
        plan = build_usage_plan(limits, self.subject_of(account_id), self.resolver.policy)
        if plan.empty:
            return []
        reply = await self.store.peek(plan)
        return [
            (check, outcome)
            for outcome in reply.outcomes
            if (check := plan.checks[outcome.index]) is not None
        ]

    async def close(self) -> None:
        """Let order records still being written finish (briefly)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=1.0)

    def _recorder(
        self, record: PlacementRecord | None, reply: StoreReply
    ) -> Callable[[str], None] | None:
        if record is None:
            return None
        value = f"{reply.now_us // 1000}|{1 if record.large else 0}"

        def remember(order_id: str) -> None:
            key = order_record_key(record.subject, record.account_id, order_id=order_id)
            self._spawn(self.store.remember([(key, value, record.ttl_ms)]))

        return remember

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("counters.record_failed", error=str(task.exception()))

    def _store_failed(self, call: OrderCall, exc: BaseException) -> Denial | Admission:
        let_through = call.action is Action.CANCEL
        outcome = "allowed" if let_through else "refused"
        STORE_FAILURES.labels(call.action.value, outcome).inc()
        log.warning(
            "counters.unavailable",
            action=call.action.value,
            outcome=outcome,
            account_id=call.account_id,
            error=repr(exc),
        )
        if let_through:
            return Admission()  # not ADMITTED: Redis was tried (see PreTradeEngine.admit)
        return Denial(
            Reason.COUNTERS_UNAVAILABLE,
            "order counters are unavailable: new orders and amends are refused until they are "
            "back (cancels are accepted)",
            {"limit": "counters", "error": type(exc).__name__},
            retry_after_ms=UNAVAILABLE_RETRY_MS,
        )


def budget_metadata(plan: CounterPlan, reply: StoreReply) -> tuple[tuple[str, str], ...]:
    """The tightest budget the accepted call touched (first in plan order on a tie)."""
    best: tuple[OpOutcome, Check] | None = None
    for outcome in reply.outcomes:
        check = plan.checks[outcome.index]
        if check is None:
            continue
        if best is None or outcome.remaining < best[0].remaining:
            best = (outcome, check)
    if best is None:
        return ()
    outcome, check = best
    return (
        (REMAINING_KEY, str(max(0, outcome.remaining))),
        (LIMIT_KEY, plan.ops[outcome.index][2]),
        (WINDOW_KEY, check.window),
        (NAME_KEY, check.kind.value),
    )


def refusal(call: OrderCall, plan: CounterPlan, reply: StoreReply) -> Denial:
    failed = [(o, c) for o in reply.outcomes if (c := plan.checks[o.index]) is not None]
    outcome, check = max(failed, key=lambda pair: pair[0].delay_ms)
    metadata = {
        "limit": check.kind.value,
        "window": check.window,
        "count": str(outcome.count),
        "max": str(outcome.limit),
        "subject": plan.subject,
        "account_id": call.account_id,
        "symbol": call.symbol,
        "source": check.source,
        "retry_after_ms": str(outcome.delay_ms),
    }
    metadata.update(check.detail)
    if check.counted:
        metadata["counted"] = check.counted
    if check.kind is LimitKind.CANCEL_RATIO:
        metadata.update(cancels=str(outcome.count), orders=str(outcome.limit))
        metadata["max"] = metadata["max_ratio"]
    others = [f"{c.kind.value}/{c.window}" for o, c in failed if o is not outcome]
    if others:
        metadata["also_exceeded"] = ",".join(others)
    return Denial(
        _REASONS[check.kind],
        _message(check, outcome, metadata),
        metadata,
        retry_after_ms=outcome.delay_ms,
    )


def _message(check: Check, outcome: OpOutcome, metadata: dict[str, str]) -> str:
    retry = f"retry in {outcome.delay_ms} ms"
    kind = check.kind
    if kind is LimitKind.MIN_RESTING:
        return (
            f"minimum resting time: the order is {outcome.count} ms old and may not be "
            f"cancelled or amended before {outcome.limit} ms; {retry}"
        )
    if kind is LimitKind.CANCEL_RATIO:
        return (
            f"cancel ratio exceeded: {outcome.count} cancels for {outcome.limit} orders today; "
            f"at most {metadata['max_ratio']} cancels per order once "
            f"{metadata['min_orders']} orders are placed; {retry}"
        )
    if kind is LimitKind.DAILY_OPEN:
        return (
            f"daily position limit reached: {outcome.count} position-opening orders on "
            f"{check.counted} today (limit {outcome.limit}); reduce-only orders are accepted; "
            f"{retry}"
        )
    what = {
        LimitKind.ORDER_RATE: "order rate exceeded: {n} new orders and amends",
        LimitKind.CANCEL_RATE: "cancel rate exceeded: {n} cancels",
        LimitKind.LARGE_ORDER_RATE: "large order rate exceeded: {n} large orders and amends",
        LimitKind.LARGE_CANCEL_RATE: "large order rate exceeded: {n} cancels of large orders",
    }[kind].format(n=outcome.count)
    return f"{what} in the last {check.window} (limit {outcome.limit}); {retry}"
