"""Which limits apply to one call: the policy files, overlaid by runtime overrides.

Layers, least specific first: default, the symbol's product, the symbol, the
account; at each scope the policy file first, then the admin override. A
later layer replaces a scalar limit (``large_notional``, ``daily_open``,
``cancel_ratio``, ``min_resting``) and, for rate caps, the windows of the same
length (so a symbol can tighten ``1s`` and keep the default's ``1d``).

Results are cached per symbol (and per account for the few accounts with
limits of their own) and dropped whenever the policy or the overrides change,
or an override's TTL runs out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

import structlog

from gateway.counters.limits import (
    DEFAULT_SCOPE,
    RATE_KINDS,
    CancelRatio,
    CounterPolicy,
    LimitKind,
    LimitValue,
    LimitValueError,
    Scope,
    ScopeRef,
    Window,
    parse_value,
)
from gateway.model import LimitRecord
from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.counters")

_T = TypeVar("_T")
_CACHE_MAX = 8192
_NEVER = 2**63


@dataclass(frozen=True, slots=True)
class Sourced(Generic[_T]):
    """A value and where it comes from, e.g. ``policy:symbol:BTC-USDT``, ``admin:account:alice``."""

    value: _T
    source: str


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """Everything that applies to calls of one account on one symbol."""

    windows: Mapping[LimitKind, tuple[Sourced[Window], ...]] = field(default_factory=dict)
    large_notional: Sourced[Decimal] | None = None
    daily_open: Sourced[int] | None = None
    #: What ``daily_open`` counts: the product's opens, or the symbol's when the symbol sets it.
    daily_open_scope: ScopeRef = DEFAULT_SCOPE
    cancel_ratio: Sourced[CancelRatio] | None = None
    min_resting_ms: Sourced[int] | None = None
    #: Whether daily orders and cancels are tallied (a cancel ratio is declared somewhere).
    tally: bool = False

    def rate(self, kind: LimitKind) -> tuple[Sourced[Window], ...]:
        return self.windows.get(kind, ())

    @property
    def empty(self) -> bool:
        return not (
            any(self.windows.values())
            or self.daily_open
            or self.cancel_ratio
            or self.min_resting_ms
            or self.tally
        )


NO_LIMITS = EffectiveLimits()


def override_id(ref: ScopeRef, kind: LimitKind) -> str:
    """The flag record id of a runtime override: ``<scope>:<key>:<kind>``."""
    return f"{ref.scope.value}:{ref.key}:{kind.value}"


def parse_override_id(record_id: str) -> tuple[ScopeRef, LimitKind]:
    scope_text, _, rest = record_id.partition(":")
    key, _, kind_text = rest.rpartition(":")
    scope, kind = Scope(scope_text), LimitKind(kind_text)
    if (scope is Scope.DEFAULT) != (key == ""):
        raise ValueError(f"bad limit override id {record_id!r}")
    return ScopeRef(scope, key), kind


@dataclass(frozen=True, slots=True)
class Override:
    ref: ScopeRef
    kind: LimitKind
    value: LimitValue
    record: LimitRecord


class LimitResolver:
    """Effective limits from the policy in force and the snapshot's overrides."""

    def __init__(self, snapshot: Snapshot, policy: CounterPolicy) -> None:
        self._snapshot = snapshot
        self._policy = policy
        self._cache: dict[tuple[str, str], EffectiveLimits] = {}
        self._seen_generation = -1
        self._valid_until = _NEVER
        self._overrides: dict[ScopeRef, dict[LimitKind, Override]] = {}
        #: Accounts with limits of their own (policy tables or overrides).
        self._own_limits: frozenset[str] = frozenset()
        self._any_ratio = False

    @property
    def policy(self) -> CounterPolicy:
        return self._policy

    def set_policy(self, policy: CounterPolicy) -> None:
        self._policy = policy
        self._seen_generation = -1  # rebuild on next use

    def overrides(self, now_ms: int) -> list[Override]:
        self._refresh(now_ms)
        return [o for table in self._overrides.values() for o in table.values()]

    def effective(self, account_id: str, symbol: str, now_ms: int) -> EffectiveLimits:
        self._refresh(now_ms)
        # Most accounts have no limits of their own: they share one entry per symbol.
        if account_id not in self._own_limits:
            account_id = ""
        cache_key = (account_id, symbol)
        found = self._cache.get(cache_key)
        if found is None:
            found = self._resolve(account_id, symbol)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[cache_key] = found
        return found

    # -- internals ----------------------------------------------------------

    def _refresh(self, now_ms: int) -> None:
        snapshot = self._snapshot
        if self._seen_generation == snapshot.limits_generation and now_ms < self._valid_until:
            return
        self._cache.clear()
        self._seen_generation = snapshot.limits_generation
        self._overrides = {}
        self._valid_until = _NEVER
        for record_id, record in snapshot.limit_overrides.items():
            if not record.in_force(now_ms):
                continue
            if record.expires_ms:
                self._valid_until = min(self._valid_until, record.expires_ms)
            try:
                ref, kind = parse_override_id(record_id)
                value = parse_value(kind, record.value)
            except (ValueError, LimitValueError) as exc:
                log.error("limits.bad_override", record_id=record_id, error=str(exc))
                continue
            self._overrides.setdefault(ref, {})[kind] = Override(ref, kind, value, record)
        self._own_limits = frozenset(
            ref.key
            for ref in (*self._overrides, *self._policy.tables)
            if ref.scope is Scope.ACCOUNT
        )
        self._any_ratio = any(
            LimitKind.CANCEL_RATIO in table for table in self._policy.tables.values()
        ) or any(LimitKind.CANCEL_RATIO in table for table in self._overrides.values())

    def _resolve(self, account_id: str, symbol: str) -> EffectiveLimits:
        spec = self._snapshot.symbols.get(symbol)
        refs = [DEFAULT_SCOPE]
        if spec is not None and spec.product:
            refs.append(ScopeRef(Scope.PRODUCT, spec.product))
        refs.append(ScopeRef(Scope.SYMBOL, symbol))
        if account_id:
            refs.append(ScopeRef(Scope.ACCOUNT, account_id))

        windows: dict[LimitKind, dict[int, Sourced[Window]]] = {}
        scalars: dict[LimitKind, Sourced[LimitValue]] = {}
        open_scope = ScopeRef(Scope.PRODUCT, spec.product if spec is not None else "")
        for ref in refs:
            layers: list[tuple[str, Mapping[LimitKind, LimitValue]]] = [
                (f"policy:{ref}", self._policy.table(ref)),
                (
                    f"admin:{ref}",
                    {k: o.value for k, o in self._overrides.get(ref, {}).items()},
                ),
            ]
            for source, table in layers:
                for kind, value in table.items():
                    if kind in RATE_KINDS:
                        assert isinstance(value, tuple)
                        into = windows.setdefault(kind, {})
                        for window in value:
                            into[window.window_ms] = Sourced(window, source)
                    else:
                        scalars[kind] = Sourced(value, source)
                        if kind is LimitKind.DAILY_OPEN and ref.scope is Scope.SYMBOL:
                            open_scope = ref
        return EffectiveLimits(
            windows={k: tuple(v[w] for w in sorted(v)) for k, v in windows.items()},
            large_notional=_typed(scalars.get(LimitKind.LARGE_NOTIONAL), Decimal),
            daily_open=_typed(scalars.get(LimitKind.DAILY_OPEN), int),
            daily_open_scope=open_scope,
            cancel_ratio=_typed(scalars.get(LimitKind.CANCEL_RATIO), CancelRatio),
            min_resting_ms=_typed(scalars.get(LimitKind.MIN_RESTING), int),
            tally=self._any_ratio,
        )


def _typed(found: Sourced[LimitValue] | None, kind: type[_T]) -> Sourced[_T] | None:
    if found is None:
        return None
    assert isinstance(found.value, kind)
    return Sourced(found.value, found.source)
