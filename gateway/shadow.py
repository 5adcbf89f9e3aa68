"""Shadow mode: a shadowed rule is evaluated and recorded, but refuses nothing.

A rule is a refusal reason (``ACCOUNT_FROZEN``, ``ORDER_RATE_EXCEEDED``, ...);
``*`` shadows every rule at once. Shadowed rules are flags (kind
``SHADOW``), synced to every gateway like any other. The engine consults
:meth:`ShadowRules.covers` in one place, so a reason added later is
shadowable with no further work.
"""

from __future__ import annotations

from gateway.reasons import Reason
from gateway.snapshot import Snapshot

#: The rule name that shadows every shadowable rule.
ALL_RULES = "*"

#: Never shadowed: a malformed request cannot be forwarded, a kill switch is an
#: emergency stop that must not be defeated by a global shadow switch, and a call
#: without a valid key for its account must never trade (the key check is not a
#: rule the engine's shadow loop sees at all; listing it here keeps it off the menu).
UNSHADOWABLE = frozenset(
    {Reason.INVALID_REQUEST, Reason.KILL_SWITCH, Reason.UNAUTHENTICATED, Reason.ACCOUNT_MISMATCH}
)


def shadowable_rules() -> list[str]:
    return [ALL_RULES, *(r.value for r in Reason if r not in UNSHADOWABLE)]


def is_rule_name(name: str) -> bool:
    return name in shadowable_rules()


class ShadowRules:
    """Reads the shadow flags of a snapshot (which may be swapped whole on reload)."""

    __slots__ = ("_snapshot",)

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def covers(self, reason: Reason, now_ms: int) -> bool:
        rules = self._snapshot.shadow_rules
        if not rules or reason in UNSHADOWABLE:
            return False
        for key in (reason.value, ALL_RULES):
            record = rules.get(key)
            if record is not None and record.in_force(now_ms):
                return True
        return False
