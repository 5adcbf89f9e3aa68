"""Who is linked to whom, and the groups' own states, as every gateway's snapshot holds them.

Redis keeps one record per linked account (kind ``grpm``, key
``pt:grpm:{<account>}``, field ``group``) and one per group state (kind
``grpst``, ``pt:grpst:{<group>}``). The account's record is the only truth
about its membership: a group's member list is derived from those records
here, never stored as a second copy. So every change is one single-key script
(cluster-safe), and two gateways linking different accounts into one group at
the same moment cannot lose each other's update.

Reads on the hot path are one dict look-up for an account that is not linked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.model import FlagKind, StateRecord, state_record_from_fields
from gateway.validation import ACCOUNT_RE, ACCOUNT_RULE

Fields = Mapping[str, str]

#: Group ids follow the account id rule (they end up in Redis keys and hash tags).
GROUP_RE = ACCOUNT_RE
GROUP_RULE = ACCOUNT_RULE
#: The most accounts one group may hold (bounds the self-trade look-up per order).
MAX_GROUP_MEMBERS = 50
#: The kinds of flag this table holds.
GROUP_KINDS = frozenset({FlagKind.GROUP_MEMBER, FlagKind.GROUP_STATE})


@dataclass(frozen=True, slots=True)
class Membership:
    """One account's link: its group, and who linked it, why and when."""

    group_id: str
    reason: str
    actor: str
    updated_ms: int
    version: int


def membership_from_fields(fields: Fields) -> Membership:
    group = fields["group"]
    if GROUP_RE.fullmatch(group) is None:
        raise ValueError(f"bad group id {group!r}")
    return Membership(
        group_id=group,
        reason=fields.get("reason", ""),
        actor=fields.get("actor", ""),
        updated_ms=int(fields.get("updated_ms", "0")),
        version=int(fields.get("version", "0")),
    )


#: How each group kind's record is read from its Redis fields.
GROUP_DECODERS: Mapping[FlagKind, Callable[[Fields], Any]] = {
    FlagKind.GROUP_MEMBER: membership_from_fields,
    FlagKind.GROUP_STATE: state_record_from_fields,
}


def membership_fields(group_id: str, reason: str, actor: str) -> dict[str, str]:
    return {"group": group_id, "reason": reason, "actor": actor}


class GroupTables:
    """Memberships by account, the derived members by group, and group states."""

    def __init__(self) -> None:
        self.members: dict[str, Membership] = {}
        self.states: dict[str, StateRecord] = {}
        self._by_group: dict[str, tuple[str, ...]] = {}
        #: Grows with every membership change (full reloads included).
        self.generation = 0

    # -- reads ----------------------------------------------------------------

    def group_of(self, account_id: str) -> str:
        """The account's group id, or ``""`` when it is not linked."""
        membership = self.members.get(account_id)
        return membership.group_id if membership is not None else ""

    def members_of(self, group_id: str) -> tuple[str, ...]:
        """The group's accounts, sorted (empty for an unknown group)."""
        return self._by_group.get(group_id, ())

    def group_ids(self) -> list[str]:
        """Every group with members or a state, sorted."""
        return sorted(set(self._by_group) | set(self.states))

    def state(self, group_id: str, at_ms: int) -> StateRecord | None:
        """The group's own restriction in force at ``at_ms``, or None when ACTIVE."""
        record = self.states.get(group_id)
        if record is None or not record.in_force(at_ms):
            return None
        return record

    def effective_state(
        self, own: StateRecord | None, account_id: str, at_ms: int
    ) -> tuple[StateRecord, str] | None:
        """The most restrictive of the account's own state and its group's, and whose it is
        (``"account"`` or ``"group"``); None when both are ACTIVE. A tie goes to the account."""
        membership = self.members.get(account_id)
        if membership is None:
            return (own, "account") if own is not None else None
        group = self.state(membership.group_id, at_ms)
        if group is None:
            return (own, "account") if own is not None else None
        if own is not None and own.value >= group.value:
            return own, "account"
        return group, "group"

    # -- writes (snapshot) ----------------------------------------------------

    def apply(self, kind: FlagKind, key: str, fields: Fields | None, version: int) -> bool:
        """Apply one change of a :data:`GROUP_KINDS` record; ignore it if older than ours."""
        if kind is FlagKind.GROUP_STATE:
            held_state = self.states.get(key)
            if held_state is not None and held_state.version > version:
                return False
            if fields is None:
                self.states.pop(key, None)
            else:
                self.states[key] = state_record_from_fields(fields)
            return True
        held = self.members.get(key)
        if held is not None and held.version > version:
            return False
        before = held.group_id if held is not None else ""
        if fields is None:
            self.members.pop(key, None)
        else:
            self.members[key] = membership_from_fields(fields)
        after = self.group_of(key)
        if before != after:
            if before:
                self._set_members(before, set(self.members_of(before)) - {key})
            if after:
                self._set_members(after, {*self.members_of(after), key})
        self.generation += 1
        return True

    def install(self, records: Mapping[FlagKind, dict[str, Any]]) -> None:
        """Take decoded records of a full load (see :data:`GROUP_DECODERS`), as they are."""
        self.members = records.get(FlagKind.GROUP_MEMBER) or {}
        self.states = records.get(FlagKind.GROUP_STATE) or {}
        by_group: dict[str, list[str]] = {}
        for account, membership in self.members.items():
            by_group.setdefault(membership.group_id, []).append(account)
        self._by_group = {group: tuple(sorted(accounts)) for group, accounts in by_group.items()}
        self.generation += 1

    def purge_lapsed(self, at_ms: int) -> int:
        lapsed = [key for key, record in self.states.items() if not record.in_force(at_ms)]
        for key in lapsed:
            del self.states[key]
        return len(lapsed)

    def _set_members(self, group_id: str, accounts: set[str]) -> None:
        if accounts:
            self._by_group[group_id] = tuple(sorted(accounts))
        else:
            self._by_group.pop(group_id, None)
