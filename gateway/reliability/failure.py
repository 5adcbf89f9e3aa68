"""What the gateway does when the store (Redis) does not answer in time.

One object decides, per kind of call, whether it fails closed (refused with
``STORE_UNAVAILABLE``) or open (let through uncounted), and counts every such
decision in one metric. Flag checks never get here: they run from the
in-memory snapshot and keep working while Redis is away.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from gateway.model import Action
from gateway.reasons import Denial, Reason
from gateway.validation import OrderCall

log = structlog.get_logger("gateway.reliability")


class Operation(enum.StrEnum):
    """The kinds of call the failure policy tells apart."""

    PLACE = "place"
    #: A reduce-only place: it can only shrink a position.
    REDUCE_ONLY = "reduce_only"
    AMEND = "amend"
    CANCEL = "cancel"

    @classmethod
    def of(cls, call: OrderCall) -> Operation:
        if call.action is Action.CANCEL:
            return cls.CANCEL
        if call.action is Action.AMEND:
            return cls.AMEND
        return cls.REDUCE_ONLY if call.reduce_only else cls.PLACE


class Cause(enum.StrEnum):
    #: No answer within the deadline (Redis paused, stopped, overloaded, a blackholed link).
    TIMEOUT = "timeout"
    #: An error answer or a refused/reset connection (Redis down, failing over, misconfigured).
    ERROR = "error"


#: Let through by default: the calls that take risk off (cancels, reduce-only orders).
DEFAULT_FAIL_OPEN = frozenset({Operation.CANCEL, Operation.REDUCE_ONLY})
DEFAULT_DEADLINE_MS = 500
MAX_DEADLINE_MS = 10_000
#: RetryInfo on a STORE_UNAVAILABLE refusal.
UNAVAILABLE_RETRY_MS = 1000

DECISIONS = Counter(
    "pretrade_store_failure_decisions",
    "Calls decided by the failure policy because the store did not answer in time",
    ("operation", "outcome", "cause"),
)
for _op in Operation:
    for _outcome in ("allowed", "refused"):
        for _cause in Cause:
            DECISIONS.labels(_op.value, _outcome, _cause.value)


def parse_fail_open(text: str | Iterable[str]) -> frozenset[Operation]:
    """``"cancel,reduce_only"`` -> the operations let through; ``""`` or ``"none"``: none."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip().lower() for item in items if item.strip()]
    if names == ["none"]:
        return frozenset()
    known = {op.value: op for op in Operation}
    unknown = [name for name in names if name not in known]
    if unknown:
        allowed = ", ".join(op.value for op in Operation)
        raise ValueError(f"unknown operation {unknown[0]!r} (allowed: {allowed}, or none)")
    return frozenset(known[name] for name in names)


def check_deadline_ms(value: int) -> int:
    if not 1 <= value <= MAX_DEADLINE_MS:
        raise ValueError(f"the Redis deadline must be from 1 to {MAX_DEADLINE_MS} ms, not {value}")
    return value


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """Deadline of a hot-path Redis call, and who gets through when it is missed."""

    deadline_ms: int = DEFAULT_DEADLINE_MS
    fail_open: frozenset[Operation] = field(default=DEFAULT_FAIL_OPEN)

    def __post_init__(self) -> None:
        check_deadline_ms(self.deadline_ms)

    def lets_through(self, operation: Operation) -> bool:
        return operation in self.fail_open

    def decide(self, call: OrderCall, exc: BaseException, deadline_ms: int) -> Denial | None:
        """The verdict on ``call`` whose store call failed with ``exc``: a refusal, or None
        (let through, uncounted)."""
        operation = Operation.of(call)
        cause = Cause.TIMEOUT if isinstance(exc, TimeoutError) else Cause.ERROR
        allowed = self.lets_through(operation)
        outcome = "allowed" if allowed else "refused"
        DECISIONS.labels(operation.value, outcome, cause.value).inc()
        log.warning(
            "store.unavailable",
            operation=operation.value,
            outcome=outcome,
            cause=cause.value,
            account_id=call.account_id,
            error=repr(exc),
        )
        if allowed:
            return None
        passing = ", ".join(sorted(op.value for op in self.fail_open)) or "nothing"
        what = "no answer" if cause is Cause.TIMEOUT else "an error"
        return Denial(
            Reason.STORE_UNAVAILABLE,
            f"the order store is unavailable ({what} within {deadline_ms} ms): "
            f"{operation.value} calls are refused until it is back (let through: {passing})",
            {
                "limit": "store",
                "operation": operation.value,
                "cause": cause.value,
                "deadline_ms": str(deadline_ms),
                "error": type(exc).__name__,
            },
            retry_after_ms=UNAVAILABLE_RETRY_MS,
        )
