"""Kill switches: halt every new order and amend at a scope, cancels pass.

A kill switch is a flag (kind ``KILL_SWITCH``) keyed by its scope, synced to
every gateway by the snapshot machinery, and checked first among the local
checks, with no network I/O: an engaged switch takes effect on each gateway
as soon as the change reaches it by pub/sub. With none engaged the check
costs one dict truthiness test.

Scopes, broadest first: venue, product, group, account. A group switch is
stored and synced today but matches no account until accounts are linked
into groups (:meth:`Snapshot.account_group`).
"""

from __future__ import annotations

import enum

from gateway.checks import Check
from gateway.model import Action
from gateway.reasons import Denial, Reason
from gateway.snapshot import Snapshot
from gateway.validation import OrderCall


class Scope(enum.IntEnum):
    """Mirrors ``pretrade.v1.KillSwitchScope`` number for number."""

    VENUE = 1
    PRODUCT = 2
    ACCOUNT = 3
    GROUP = 4


def scope_key(scope: Scope, ident: str = "") -> str:
    """The flag record id of a kill switch: ``venue``, ``product:spot``, ``account:alice``."""
    if scope is Scope.VENUE:
        return "venue"
    return f"{scope.name.lower()}:{ident}"


def parse_scope_key(key: str) -> tuple[Scope, str]:
    if key == "venue":
        return Scope.VENUE, ""
    name, sep, ident = key.partition(":")
    if not sep or name.upper() not in Scope.__members__ or name == "venue":
        raise ValueError(f"not a kill switch key: {key!r}")
    return Scope[name.upper()], ident


def describe(scope: Scope, ident: str) -> str:
    return "venue" if scope is Scope.VENUE else f"{scope.name.lower()} {ident}"


def kill_switch_check(snapshot: Snapshot) -> Check:
    def check(call: OrderCall, now_ms: int) -> Denial | None:
        switches = snapshot.kill_switches
        if not switches or call.action is Action.CANCEL:
            return None
        candidates = [(Scope.VENUE, "")]
        spec = snapshot.symbols.get(call.symbol)
        if spec is not None:
            candidates.append((Scope.PRODUCT, spec.product))
        group = snapshot.account_group(call.account_id)
        if group:
            candidates.append((Scope.GROUP, group))
        candidates.append((Scope.ACCOUNT, call.account_id))
        for scope, ident in candidates:
            record = switches.get(scope_key(scope, ident))
            if record is not None and record.in_force(now_ms):
                return Denial(
                    Reason.KILL_SWITCH,
                    f"new orders halted by kill switch ({describe(scope, ident)}): "
                    "only cancels are accepted",
                    {"limit": "kill_switch", "scope": scope.name.lower(), "scope_id": ident},
                )
        return None

    return check
