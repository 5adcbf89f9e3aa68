"""Checking request fields: one collector and one set of rules for every request.

A bad request is refused with ``INVALID_ARGUMENT`` naming every bad field at
once (``google.rpc.BadRequest``), so a client or an operator fixes them all in
one go. Order entry and every admin service collect the same way, with the
same words for the same mistakes; the rules shared by admin requests (who and
why of a change, a TTL) live here once.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.reasons import Denial, FieldViolation, invalid
from gateway.refusals import abort_invalid

#: Longest free text (reason, actor, label) an admin request may carry.
MAX_TEXT = 256
DAY_MS = 24 * 3600 * 1000
#: Longest TTL of a restriction, a limit override or a kill switch.
MAX_TTL_DAYS = 366


def check_ident(
    bad: list[FieldViolation], field: str, value: str, pattern: re.Pattern[str], rule: str
) -> bool:
    """An identifier: required, at most 64 characters, matching ``pattern``."""
    if not value:
        bad.append(FieldViolation(field, "required"))
    elif len(value) > 64 or pattern.fullmatch(value) is None:
        bad.append(FieldViolation(field, rule))
    else:
        return True
    return False


def check_change_meta(bad: list[FieldViolation], reason: str, actor: str) -> None:
    """Every admin change says why and who (both land in the audit trail)."""
    for name, value in (("reason", reason), ("actor", actor)):
        if not value.strip():
            bad.append(FieldViolation(name, "required: say why and who"))
        elif len(value) > MAX_TEXT:
            bad.append(FieldViolation(name, f"at most {MAX_TEXT} characters"))


def check_ttl(
    bad: list[FieldViolation],
    request: Any,
    *,
    refused_because: str = "",
    max_days: int = MAX_TTL_DAYS,
) -> int:
    """The request's optional ``ttl`` (a Duration) in ms; 0 when absent.

    ``refused_because``: the request may not carry a TTL at all (e.g. setting a
    state back to ACTIVE), and this is why.
    """
    if not request.HasField("ttl"):
        return 0
    ttl = request.ttl
    ttl_ms = int(ttl.seconds * 1000 + ttl.nanos // 1_000_000)
    if refused_because:
        bad.append(FieldViolation("ttl", refused_because))
    elif ttl_ms <= 0 or ttl.nanos < 0:
        bad.append(FieldViolation("ttl", "must be positive"))
    elif ttl_ms > max_days * DAY_MS:
        bad.append(FieldViolation("ttl", f"must be at most {max_days} days"))
    return ttl_ms


def ttl_not_for(name: str, when: bool) -> str:
    """Why a TTL is refused when ``when`` (the request clears a restriction), else ""."""
    return f"a TTL only applies to a restriction, not to {name}" if when else ""


class BadFields:
    """Collects the bad fields of one request."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def ident(self, field: str, value: str, pattern: re.Pattern[str], rule: str) -> bool:
        return check_ident(self.items, field, value, pattern, rule)

    def text(self, field: str, value: str, limit: int = 64) -> None:
        if len(value) > limit:
            self.add(field, f"at most {limit} characters")

    def change_meta(self, reason: str, actor: str) -> None:
        check_change_meta(self.items, reason, actor)

    def ttl(self, request: Any, refused_because: str = "") -> int:
        return check_ttl(self.items, request, refused_because=refused_because)

    def denial(self) -> Denial | None:
        return invalid(*self.items) if self.items else None

    async def abort_if_any(self, context: Any) -> None:
        """Abort the call with INVALID_ARGUMENT if anything was found."""
        if self.items:
            await abort_invalid(context, self.items)
