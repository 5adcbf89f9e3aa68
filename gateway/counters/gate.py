"""The counter step of the decision: resolve limits, one store call, read the answer.

Runs after the local checks, only for calls that passed them. A refusal names
the binding limit (the one with the longest wait) and the exact delay; an
acceptance carries the tightest remaining budget for the response metadata
and, for a place, what to remember once the exchange has accepted the order.

When the store fails (Redis down, slow, erroring) the gate hands the call to
the :class:`~gateway.reliability.FailurePolicy`, which alone decides: by
default new orders and amends are refused (fail closed), cancels and
reduce-only orders let through (fail open: they are how users get out of risk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.keys import counting_subject, order_record_key
from gateway.counters.limits import LimitKind
from gateway.counters.plan import (
    Check,
    CounterPlan,
    ReferencePrice,
    build_plan,
    build_usage_plan,
)
from gateway.counters.resolve import EffectiveLimits, LimitResolver
from gateway.counters.store import CounterStore, OpOutcome, StoreReply
from gateway.reasons import Denial, Reason
from gateway.reliability.failure import FailurePolicy
from gateway.reliability.idempotency import REPLAY_KEY, settles
from gateway.snapshot import now_ms
from gateway.store.redis_client import STORE_ERRORS
from gateway.validation import OrderCall

log = structlog.get_logger("gateway.counters")

#: Response metadata keys on accepted calls (the tightest budget the call touched).
REMAINING_KEY = "x-ratelimit-remaining"
LIMIT_KEY = "x-ratelimit-limit"
WINDOW_KEY = "x-ratelimit-window"
NAME_KEY = "x-ratelimit-name"

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
    """An accepted call: response metadata, and hooks for the upstream's answer.

    Both deployments report the upstream's answer: :meth:`accepted` (or
    :meth:`accepted_bytes`) on success, :meth:`failed` with the status code
    otherwise. What is remembered (order records, the end of free retries) is
    written in the background, off the call's path.
    """

    __slots__ = ("_finish", "_wants_order_id", "metadata")

    def __init__(
        self,
        metadata: tuple[tuple[str, str], ...] = (),
        finish: Callable[[str], None] | None = None,
        wants_order_id: bool = False,
    ) -> None:
        self.metadata = metadata
        #: Called once the upstream gave a definitive answer, with the order id ("" if none).
        self._finish = finish
        self._wants_order_id = wants_order_id

    def accepted(self, response: Any) -> None:
        """The upstream accepted the call and answered ``response`` (a response message)."""
        if self._finish is None:
            return
        order_id = getattr(response, "order_id", "") if self._wants_order_id else ""
        self._finish(order_id if isinstance(order_id, str) else "")

    def accepted_bytes(self, raw: bytes) -> None:
        """Like :meth:`accepted` for a response still in wire form (parsed only when needed)."""
        if self._finish is None:
            return
        if not self._wants_order_id:
            self._finish("")
            return
        try:
            response = pb.PlaceOrderResponse.FromString(raw)
        except DecodeError:
            self._finish("")
            return
        self.accepted(response)

    def failed(self, code: grpc.StatusCode) -> None:
        """The upstream did not accept the call: it answered ``code``, or could not be reached."""
        if self._finish is not None and settles(code):
            self._finish("")


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
        failure: FailurePolicy | None = None,
        idempotency_window_ms: int = 0,
    ) -> None:
        self.store = store
        self.resolver = resolver
        #: Resolves whose counters an account spends (a linked group, later).
        self.subject_of = subject_of
        #: Price for market orders' notional; until one is known they are never large.
        self.reference_price = reference_price
        self._clock = clock
        #: Deadline and fail-open/closed per operation when the store does not answer.
        self.failure = failure if failure is not None else FailurePolicy()
        #: How long a place with a client order id is remembered for free retries (0: off).
        self.idempotency_window_ms = idempotency_window_ms
        #: Hears whether each store call answered in time (the health monitor).
        self.observer: Callable[[bool, str], None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def deadline_ms(self) -> int:
        """The policy files' ``[counters] timeout`` when set, else the failure policy's."""
        from_files = self.resolver.policy.timeout_ms
        return from_files if from_files is not None else self.failure.deadline_ms

    def limits_for(self, account_id: str, symbol: str) -> EffectiveLimits:
        return self.resolver.effective(account_id, symbol, self._clock())

    async def admit(self, call: OrderCall) -> Denial | Admission:
        """:meth:`plan`, then :meth:`consume` when there is anything to count."""
        plan = self.plan(call)
        return ADMITTED if plan is None else await self.consume(call, plan)

    def plan(self, call: OrderCall) -> CounterPlan | None:
        """What the call must check and consume; None when no limit applies to it
        (then no Redis call is made). No I/O."""
        limits = self.limits_for(call.account_id, call.symbol)
        if limits.empty:
            return None
        plan = build_plan(
            call,
            limits,
            self.subject_of(call.account_id),
            self.resolver.policy,
            self.reference_price,
            self.idempotency_window_ms,
        )
        return None if plan.empty else plan

    async def consume(self, call: OrderCall, plan: CounterPlan) -> Denial | Admission:
        """The one store call for ``plan``: a refusal naming the binding limit, or the
        admission with the remaining budget. Never ADMITTED: Redis was asked."""
        deadline_ms = self.deadline_ms
        try:
            reply = await self.store.consume(plan, deadline_ms / 1000)
        except STORE_ERRORS as exc:
            if self.observer is not None:
                self.observer(False, type(exc).__name__)
            denial = self.failure.decide(call, exc, deadline_ms)
            return Admission() if denial is None else denial
        if self.observer is not None:
            self.observer(True, "")
        if not reply.accepted:
            return refusal(call, plan, reply)
        metadata = ((REPLAY_KEY, "1"),) if reply.retry else budget_metadata(plan, reply)
        finish = self._finisher(plan, reply)
        return Admission(metadata, finish, wants_order_id=plan.record is not None)

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

    def _finisher(self, plan: CounterPlan, reply: StoreReply) -> Callable[[str], None] | None:
        """What to write once the upstream answered: the order record (by the exchange's
        order id) and the end of the free retries."""
        record, retry_key = plan.record, plan.idempotency_key
        if record is None and not retry_key:
            return None
        value = f"{reply.now_us // 1000}|{1 if record and record.large else 0}"
        forget = (retry_key,) if retry_key else ()

        def finish(order_id: str) -> None:
            records = []
            if record is not None and order_id:
                key = order_record_key(record.subject, record.account_id, order_id=order_id)
                records.append((key, value, record.ttl_ms))
            if records or forget:
                self._spawn(self._write(records, forget))

        return finish

    async def _write(self, records: list[tuple[str, str, int]], forget: tuple[str, ...]) -> None:
        async with asyncio.timeout(self.deadline_ms / 1000):
            await self.store.remember(records, forget)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("counters.record_failed", error=repr(task.exception()))


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
