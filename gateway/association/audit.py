"""The SUSPECTED_ASSOCIATION audit event: one function, so any audit sink can take it.

Today the event goes to the structured log (``audit.suspected_association``,
level warning) and the ``pretrade_suspected_associations_total{evidence}``
counter. An audit stream plugs in with :func:`add_audit_sink`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import Counter

log = structlog.get_logger("gateway.audit")

EVENT_TYPE = "SUSPECTED_ASSOCIATION"

SUSPECTED = Counter(
    "pretrade_suspected_associations",
    "Devices or IP addresses seen with more accounts than the association policy allows",
    ("evidence",),
)

AuditSink = Callable[[str, Mapping[str, Any]], None]
_sinks: list[AuditSink] = []


def add_audit_sink(sink: AuditSink) -> None:
    """Also hand every event to ``sink(event_type, fields)``."""
    _sinks.append(sink)


def emit_suspected_association(
    *,
    evidence: str,
    value: str,
    accounts: list[tuple[str, int]],
    max_accounts: int,
    window_ms: int,
    flagged_ms: int,
) -> None:
    """More than ``max_accounts`` accounts were seen with one device (``evidence="device"``)
    or IP (``"ip"``) within ``window_ms``; ``accounts`` are (account, last seen ms), newest
    first. It does not restrict anyone: ops decide (``ListSuspectedAssociations``)."""
    fields: dict[str, Any] = {
        "evidence": evidence,
        "value": value,
        "accounts": [account for account, _ in accounts],
        "count": len(accounts),
        "max_accounts": max_accounts,
        "window_ms": window_ms,
        "flagged_ms": flagged_ms,
    }
    SUSPECTED.labels(evidence).inc()
    log.warning("audit.suspected_association", event_type=EVENT_TYPE, **fields)
    for sink in _sinks:
        try:
            sink(EVENT_TYPE, fields)
        except Exception as exc:  # one broken sink must not silence the others
            log.error("audit.sink_failed", event_type=EVENT_TYPE, error=repr(exc))
