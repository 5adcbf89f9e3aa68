"""Why a call was refused, and the one table that maps each reason to a gRPC status.

``Reason`` mirrors the ``pretrade.v1.Reason`` proto enum (value names without
the ``REASON_`` prefix); a test keeps the two in step. Reasons are never free
text: clients switch on them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc


class Reason(enum.StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    ACCOUNT_DEACTIVATED = "ACCOUNT_DEACTIVATED"
    ACCOUNT_REDUCE_ONLY = "ACCOUNT_REDUCE_ONLY"
    SYMBOL_UNKNOWN = "SYMBOL_UNKNOWN"
    SYMBOL_HALTED = "SYMBOL_HALTED"
    SYMBOL_REDUCE_ONLY = "SYMBOL_REDUCE_ONLY"
    SYMBOL_DELISTED = "SYMBOL_DELISTED"
    # Order sanity, leverage and channel (gateway/sanity.py, gateway/leverage.py).
    LEVERAGE_EXCEEDED = "LEVERAGE_EXCEEDED"
    ORDER_QTY_OUT_OF_RANGE = "ORDER_QTY_OUT_OF_RANGE"
    ORDER_NOTIONAL_OUT_OF_RANGE = "ORDER_NOTIONAL_OUT_OF_RANGE"
    PRICE_TICK_INVALID = "PRICE_TICK_INVALID"
    QTY_STEP_INVALID = "QTY_STEP_INVALID"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"
    REFERENCE_PRICE_UNAVAILABLE = "REFERENCE_PRICE_UNAVAILABLE"
    PROGRAM_TRADING_FORBIDDEN = "PROGRAM_TRADING_FORBIDDEN"
    # Behavioural limits (gateway.counters).
    ORDER_RATE_EXCEEDED = "ORDER_RATE_EXCEEDED"
    CANCEL_RATE_EXCEEDED = "CANCEL_RATE_EXCEEDED"
    LARGE_ORDER_RATE_EXCEEDED = "LARGE_ORDER_RATE_EXCEEDED"
    DAILY_POSITION_LIMIT = "DAILY_POSITION_LIMIT"
    CANCEL_RATIO_EXCEEDED = "CANCEL_RATIO_EXCEEDED"
    MIN_RESTING_TIME = "MIN_RESTING_TIME"
    KILL_SWITCH = "KILL_SWITCH"
    # Linked accounts (gateway.groups, gateway.stp).
    SELF_TRADE = "SELF_TRADE"
    # Reliability (gateway.reliability): the store did not answer in time.
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    # Authentication and authorisation (gateway/auth.py).
    UNAUTHENTICATED = "UNAUTHENTICATED"
    ACCOUNT_MISMATCH = "ACCOUNT_MISMATCH"


_S = grpc.StatusCode

#: The single mapping from refusal reason to gRPC status code.
STATUS_BY_REASON: Mapping[Reason, grpc.StatusCode] = MappingProxyType(
    {
        Reason.INVALID_REQUEST: _S.INVALID_ARGUMENT,
        Reason.ACCOUNT_FROZEN: _S.FAILED_PRECONDITION,
        Reason.ACCOUNT_DEACTIVATED: _S.PERMISSION_DENIED,
        Reason.ACCOUNT_REDUCE_ONLY: _S.FAILED_PRECONDITION,
        Reason.SYMBOL_UNKNOWN: _S.FAILED_PRECONDITION,
        Reason.SYMBOL_HALTED: _S.FAILED_PRECONDITION,
        Reason.SYMBOL_REDUCE_ONLY: _S.FAILED_PRECONDITION,
        Reason.SYMBOL_DELISTED: _S.FAILED_PRECONDITION,
        Reason.LEVERAGE_EXCEEDED: _S.FAILED_PRECONDITION,
        Reason.ORDER_QTY_OUT_OF_RANGE: _S.FAILED_PRECONDITION,
        Reason.ORDER_NOTIONAL_OUT_OF_RANGE: _S.FAILED_PRECONDITION,
        Reason.PRICE_TICK_INVALID: _S.FAILED_PRECONDITION,
        Reason.QTY_STEP_INVALID: _S.FAILED_PRECONDITION,
        Reason.PRICE_OUT_OF_BAND: _S.FAILED_PRECONDITION,
        Reason.REFERENCE_PRICE_UNAVAILABLE: _S.FAILED_PRECONDITION,
        Reason.PROGRAM_TRADING_FORBIDDEN: _S.PERMISSION_DENIED,
        Reason.ORDER_RATE_EXCEEDED: _S.RESOURCE_EXHAUSTED,
        Reason.CANCEL_RATE_EXCEEDED: _S.RESOURCE_EXHAUSTED,
        Reason.LARGE_ORDER_RATE_EXCEEDED: _S.RESOURCE_EXHAUSTED,
        Reason.DAILY_POSITION_LIMIT: _S.RESOURCE_EXHAUSTED,
        Reason.CANCEL_RATIO_EXCEEDED: _S.RESOURCE_EXHAUSTED,
        Reason.MIN_RESTING_TIME: _S.RESOURCE_EXHAUSTED,
        # Not UNAVAILABLE: clients and proxies retry that on their own.
        Reason.KILL_SWITCH: _S.FAILED_PRECONDITION,
        Reason.SELF_TRADE: _S.FAILED_PRECONDITION,
        Reason.STORE_UNAVAILABLE: _S.UNAVAILABLE,
        Reason.UNAUTHENTICATED: _S.UNAUTHENTICATED,
        Reason.ACCOUNT_MISMATCH: _S.PERMISSION_DENIED,
    }
)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a malformed request (becomes a ``google.rpc.BadRequest`` entry)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal: the reason, a human message, and machine-readable detail.

    ``metadata`` names the limit that was hit (it becomes ``ErrorInfo.metadata``);
    ``retry_after_ms`` becomes a ``google.rpc.RetryInfo`` when set.
    """

    reason: Reason
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    retry_after_ms: int | None = None

    @property
    def code(self) -> grpc.StatusCode:
        return STATUS_BY_REASON[self.reason]


def invalid(*violations: FieldViolation) -> Denial:
    """A malformed-request denial naming every bad field."""
    fields = ", ".join(v.field for v in violations)
    return Denial(
        Reason.INVALID_REQUEST,
        f"invalid request: {fields}",
        {"fields": fields},
        violations=violations,
    )
