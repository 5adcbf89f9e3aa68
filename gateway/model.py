"""The gateway's domain vocabulary: account states, symbol statuses, flag records.

Values mirror the ``pretrade.v1`` proto enums number for number, so conversion
is ``int(...)`` both ways.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.symbol_limits import SymbolLimits


class AccountState(enum.IntEnum):
    ACTIVE = 1
    REDUCE_ONLY = 2
    FROZEN = 3
    DEACTIVATED = 4


class SymbolStatus(enum.IntEnum):
    TRADING = 1
    HALTED = 2
    REDUCE_ONLY = 3
    DELISTED = 4


class Action(enum.Enum):
    """What an order-entry call asks the exchange to do."""

    PLACE = "place"
    CANCEL = "cancel"
    AMEND = "amend"


class FlagKind(enum.Enum):
    """The kinds of flag kept in Redis and mirrored in every gateway's snapshot."""

    ACCOUNT_STATE = "acct"
    SYMBOL_STATUS = "symst"
    SYMBOL_SPEC = "symspec"
    #: An account's leverage cap (value: the cap).
    ACCOUNT_LEVERAGE = "levacct"
    #: A symbol's run-time leverage limit (cap and/or brackets).
    SYMBOL_LEVERAGE = "levsym"
    #: A symbol's reference price pinned by ops.
    REFERENCE_PRICE = "refpx"
    #: A runtime override of one behavioural limit (see :mod:`gateway.counters`).
    LIMIT = "limit"
    #: Kill switches by scope key ("venue", "product:spot", "account:alice", "group:g1").
    KILL_SWITCH = "kill"
    #: Shadowed rules by rule name (a Reason value, or "*" for all).
    SHADOW = "shadow"
    #: An account's link into a group (value: the group id; see :mod:`gateway.groups`).
    GROUP_MEMBER = "grpm"
    #: A linked group's state, applied to every member on top of its own.
    GROUP_STATE = "grpst"
    #: A linked group's leverage cap (value: the cap).
    GROUP_LEVERAGE = "levgrp"
    #: An order-entry API key by key id (value: its hash, accounts and channel).
    API_KEY = "apikey"


#: Each kind by its value, as keys and change messages carry it.
FLAG_KIND_BY_VALUE: dict[str, FlagKind] = {kind.value: kind for kind in FlagKind}


class Channel(enum.Enum):
    """How an order reached the gateway: a program (API) or a person (interactive)."""

    PROGRAM = "program"
    INTERACTIVE = "interactive"


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A state set by ops: the value, who set it and why, and when it lapses.

    ``version`` grows with every write of the same key (Redis server time in
    microseconds, forced monotonic by the write script), so a gateway can tell
    a stale record from a newer one whatever order they reach it in.
    """

    value: int
    reason: str
    actor: str
    updated_ms: int
    expires_ms: int  # 0: no expiry
    version: int

    def in_force(self, now_ms: int) -> bool:
        return self.expires_ms == 0 or now_ms < self.expires_ms


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """What a symbol is. Comes from the policy files, or from ``UpsertSymbol`` (which wins)."""

    symbol: str
    product: str
    base_asset: str
    quote_asset: str
    limits: SymbolLimits = field(default_factory=SymbolLimits)

    def to_fields(self) -> dict[str, str]:
        return {
            "symbol": self.symbol,
            "product": self.product,
            "base_asset": self.base_asset,
            "quote_asset": self.quote_asset,
            **self.limits.to_fields(),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> SymbolSpec:
        return cls(
            symbol=fields["symbol"],
            product=fields.get("product", ""),
            base_asset=fields.get("base_asset", ""),
            quote_asset=fields.get("quote_asset", ""),
            limits=SymbolLimits.from_fields(fields),
        )


@dataclass(frozen=True, slots=True)
class SpecRecord:
    """A symbol spec written through the admin API, with its provenance."""

    spec: SymbolSpec
    reason: str
    actor: str
    updated_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class LimitRecord:
    """A limit set through the admin API: its value (limit syntax text) and provenance.

    The record id names what it overrides: ``<scope>:<key>:<kind>``.
    """

    value: str
    reason: str
    actor: str
    updated_ms: int
    expires_ms: int  # 0: no expiry
    version: int

    def in_force(self, now_ms: int) -> bool:
        return self.expires_ms == 0 or now_ms < self.expires_ms


META_FIELDS = ("reason", "actor", "updated_ms", "expires_ms", "version")


def state_record_from_fields(fields: Mapping[str, str]) -> StateRecord:
    return StateRecord(
        value=int(fields["value"]),
        reason=fields.get("reason", ""),
        actor=fields.get("actor", ""),
        updated_ms=int(fields.get("updated_ms", "0")),
        expires_ms=int(fields.get("expires_ms", "0")),
        version=int(fields.get("version", "0")),
    )


def spec_record_from_fields(fields: Mapping[str, str]) -> SpecRecord:
    return SpecRecord(
        spec=SymbolSpec.from_fields(fields),
        reason=fields.get("reason", ""),
        actor=fields.get("actor", ""),
        updated_ms=int(fields.get("updated_ms", "0")),
        version=int(fields.get("version", "0")),
    )


def limit_record_from_fields(fields: Mapping[str, str]) -> LimitRecord:
    return LimitRecord(
        value=fields["value"],
        reason=fields.get("reason", ""),
        actor=fields.get("actor", ""),
        updated_ms=int(fields.get("updated_ms", "0")),
        expires_ms=int(fields.get("expires_ms", "0")),
        version=int(fields.get("version", "0")),
    )
