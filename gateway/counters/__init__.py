"""Behavioural limits: rate caps, large orders, daily limits, cancel ratio, resting time.

Declared in the policy files and overridden at run time through the admin
API; enforced across every gateway on one Redis by a single atomic script per
order. See ``docs/counters.md``.
"""

from gateway.counters.keys import counting_subject
from gateway.counters.limits import (
    CancelRatio,
    CounterPolicy,
    LimitKind,
    LimitValueError,
    Scope,
    ScopeRef,
    Window,
    format_value,
    parse_value,
)

__all__ = [
    "CancelRatio",
    "CounterPolicy",
    "LimitKind",
    "LimitValueError",
    "Scope",
    "ScopeRef",
    "Window",
    "counting_subject",
    "format_value",
    "parse_value",
]
