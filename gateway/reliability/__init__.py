"""Reliability: the failure policy, store health, idempotent retries and graceful shutdown."""

from gateway.reliability.failure import (
    DEFAULT_FAIL_OPEN,
    Cause,
    FailurePolicy,
    Operation,
    parse_fail_open,
)

__all__ = [
    "DEFAULT_FAIL_OPEN",
    "Cause",
    "FailurePolicy",
    "Operation",
    "parse_fail_open",
]
