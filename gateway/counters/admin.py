"""Admin RPCs for the behavioural limits, mixed into :class:`gateway.admin.AdminService`.

An override is a flag record (kind ``limit``, id ``<scope>:<key>:<kind>``)
written and published in one script like every other admin change, applied
to this gateway's snapshot at once and to the others' by pub/sub, and logged
with who, why, and the old and new values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf import timestamp_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.counters.limits import (
    RATE_KINDS,
    LimitKind,
    LimitValueError,
    Scope,
    ScopeRef,
    format_value,
    parse_value,
)
from gateway.counters.resolve import EffectiveLimits, Sourced, override_id
from gateway.fields import check_change_meta, check_ident, check_ttl
from gateway.model import FlagKind, LimitRecord, limit_record_from_fields
from gateway.reasons import FieldViolation
from gateway.refusals import abort_if_invalid as _abort_if
from gateway.snapshot import now_ms
from gateway.validation import (
    ACCOUNT_RE,
    ACCOUNT_RULE,
    PRODUCT_RE,
    PRODUCT_RULE,
    SYMBOL_RE,
    SYMBOL_RULE,
)

if TYPE_CHECKING:  # the engine imports the counters package
    from gateway.engine import Gatekeeper

log = structlog.get_logger("gateway.admin")

Context = aio.ServicerContext[Any, Any]

_SCOPE_FROM_PB = {
    apb.LIMIT_SCOPE_DEFAULT: Scope.DEFAULT,
    apb.LIMIT_SCOPE_PRODUCT: Scope.PRODUCT,
    apb.LIMIT_SCOPE_SYMBOL: Scope.SYMBOL,
    apb.LIMIT_SCOPE_ACCOUNT: Scope.ACCOUNT,
}
_SCOPE_TO_PB = {v: k for k, v in _SCOPE_FROM_PB.items()}
_KIND_FROM_PB = {apb.LimitKind.Value(f"LIMIT_KIND_{kind.name}"): kind for kind in LimitKind}
_KIND_TO_PB = {v: k for k, v in _KIND_FROM_PB.items()}
_KEY_RULES = {
    Scope.PRODUCT: (PRODUCT_RE, PRODUCT_RULE),
    Scope.SYMBOL: (SYMBOL_RE, SYMBOL_RULE),
    Scope.ACCOUNT: (ACCOUNT_RE, ACCOUNT_RULE),
}


class LimitAdmin:
    """``SetLimit``, ``RemoveLimit``, ``GetEffectiveLimits``, ``ListLimitOverrides``."""

    _keeper: Gatekeeper

    async def SetLimit(
        self, request: apb.SetLimitRequest, context: Context
    ) -> apb.SetLimitResponse:
        bad: list[FieldViolation] = []
        target = _target(request.scope, request.key, request.kind, bad)
        value_text = ""
        if target is not None:
            try:
                value_text = format_value(target[1], parse_value(target[1], request.value))
            except LimitValueError as exc:
                bad.append(FieldViolation("value", str(exc)))
        elif not request.value:
            bad.append(FieldViolation("value", "required"))
        check_change_meta(bad, request.reason, request.actor)
        ttl_ms = check_ttl(bad, request)
        await _abort_if(context, bad)
        assert target is not None
        ref, kind = target
        await self._check_known(ref, context)

        fields = {"value": value_text, "reason": request.reason, "actor": request.actor}
        record_id = override_id(ref, kind)
        result = await self._keeper.flags.write(FlagKind.LIMIT, record_id, fields, ttl_ms)
        self._keeper.snapshot.apply(FlagKind.LIMIT, record_id, result.new, result.version)
        previous = (result.old or {}).get("value", "")
        await self._keeper.ops.admin_action(
            context,
            "set_limit",
            request.actor,
            request.reason,
            f"{ref}:{kind.value}",
            str(previous or None or ""),
            str(value_text or ""),
            ttl_ms,
        )
        assert result.new is not None
        return apb.SetLimitResponse(
            limit=_override(ref, kind, limit_record_from_fields(result.new)),
            previous_value=previous,
        )

    async def RemoveLimit(
        self, request: apb.RemoveLimitRequest, context: Context
    ) -> apb.RemoveLimitResponse:
        bad: list[FieldViolation] = []
        target = _target(request.scope, request.key, request.kind, bad)
        check_change_meta(bad, request.reason, request.actor)
        await _abort_if(context, bad)
        assert target is not None
        ref, kind = target
        record_id = override_id(ref, kind)
        result = await self._keeper.flags.write(FlagKind.LIMIT, record_id, None)
        self._keeper.snapshot.apply(FlagKind.LIMIT, record_id, None, result.version)
        previous = (result.old or {}).get("value", "")
        await self._keeper.ops.admin_action(
            context,
            "remove_limit",
            request.actor,
            request.reason,
            f"{ref}:{kind.value}",
            str(previous or None or ""),
            "",
            0,
        )
        return apb.RemoveLimitResponse(removed=result.old is not None, previous_value=previous)

    async def GetEffectiveLimits(
        self, request: apb.GetEffectiveLimitsRequest, context: Context
    ) -> apb.GetEffectiveLimitsResponse:
        bad: list[FieldViolation] = []
        check_ident(bad, "account_id", request.account_id, ACCOUNT_RE, ACCOUNT_RULE)
        check_ident(bad, "symbol", request.symbol, SYMBOL_RE, SYMBOL_RULE)
        await _abort_if(context, bad)
        keeper = self._keeper
        if request.symbol not in keeper.snapshot.symbols:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown symbol {request.symbol}")
        gate = keeper.counters
        limits = gate.limits_for(request.account_id, request.symbol)
        usage: dict[tuple[LimitKind, str], tuple[int, int]] = {}
        if request.include_usage:
            for check, outcome in await gate.usage(request.account_id, request.symbol):
                usage[(check.kind, check.window)] = (outcome.count, outcome.limit)
        day_ms = gate.resolver.policy.day_start_ms // 1000
        return apb.GetEffectiveLimitsResponse(
            account_id=request.account_id,
            symbol=request.symbol,
            counting_subject=gate.subject_of(request.account_id),
            limits=_effective(limits, usage),
            policy_version=keeper.policy.version,
            day_start=f"{day_ms // 3600:02d}:{day_ms // 60 % 60:02d}:{day_ms % 60:02d}",
        )

    async def ListLimitOverrides(
        self, request: apb.ListLimitOverridesRequest, context: Context
    ) -> apb.ListLimitOverridesResponse:
        overrides = self._keeper.counters.resolver.overrides(now_ms())
        overrides.sort(key=lambda o: (_SCOPE_TO_PB[o.ref.scope], o.ref.key, o.kind.value))
        return apb.ListLimitOverridesResponse(
            overrides=[_override(o.ref, o.kind, o.record) for o in overrides]
        )

    async def _check_known(self, ref: ScopeRef, context: Context) -> None:
        snapshot = self._keeper.snapshot
        if ref.scope is Scope.SYMBOL and ref.key not in snapshot.symbols:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown symbol {ref.key}: declare it in the policy or with UpsertSymbol",
            )
        if ref.scope is Scope.PRODUCT and all(
            spec.product != ref.key for spec in snapshot.symbols.values()
        ):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no symbol belongs to product {ref.key}"
            )


def _target(
    scope_pb: int, key: str, kind_pb: int, bad: list[FieldViolation]
) -> tuple[ScopeRef, LimitKind] | None:
    scope = _SCOPE_FROM_PB.get(scope_pb)  # type: ignore[call-overload]
    kind = _KIND_FROM_PB.get(kind_pb)  # type: ignore[call-overload]
    if scope is None:
        bad.append(FieldViolation("scope", "required: DEFAULT, PRODUCT, SYMBOL or ACCOUNT"))
    elif scope is Scope.DEFAULT:
        if key:
            bad.append(FieldViolation("key", "must be empty for the DEFAULT scope"))
    else:
        pattern, rule = _KEY_RULES[scope]
        check_ident(bad, "key", key, pattern, rule)
    if kind is None:
        bad.append(FieldViolation("kind", "required: a LIMIT_KIND_*"))
    if scope is None or kind is None:
        return None
    return ScopeRef(scope, key), kind


def _override(ref: ScopeRef, kind: LimitKind, record: LimitRecord) -> apb.LimitOverride:
    message = apb.LimitOverride(
        scope=_SCOPE_TO_PB[ref.scope],
        key=ref.key,
        kind=_KIND_TO_PB[kind],
        value=record.value,
        reason=record.reason,
        actor=record.actor,
        updated_at=_timestamp(record.updated_ms),
    )
    if record.expires_ms:
        message.expires_at.CopyFrom(_timestamp(record.expires_ms))
    return message


def _effective(
    limits: EffectiveLimits, usage: Mapping[tuple[LimitKind, str], tuple[int, int]]
) -> list[apb.EffectiveLimit]:
    out: list[apb.EffectiveLimit] = []

    def add(kind: LimitKind, found: Sourced[Any], window: str, counted: str = "") -> None:
        current, extra = usage.get((kind, window), (0, 0))
        if kind is LimitKind.CANCEL_RATIO and (kind, window) in usage:
            counted = f"orders={extra}"
        text = str(found.value) if kind in RATE_KINDS else format_value(kind, found.value)
        out.append(
            apb.EffectiveLimit(
                kind=_KIND_TO_PB[kind],
                value=text,
                window=window,
                source=found.source,
                current=current,
                counted=counted,
            )
        )

    for kind in LimitKind:
        if kind in RATE_KINDS:
            for window in limits.rate(kind):
                add(kind, window, window.value.window_text)
    if limits.large_notional is not None:
        add(LimitKind.LARGE_NOTIONAL, limits.large_notional, "")
    if limits.daily_open is not None:
        add(LimitKind.DAILY_OPEN, limits.daily_open, "day", str(limits.daily_open_scope))
    if limits.cancel_ratio is not None:
        add(LimitKind.CANCEL_RATIO, limits.cancel_ratio, "day")
    if limits.min_resting_ms is not None:
        add(LimitKind.MIN_RESTING, limits.min_resting_ms, "")
    return out


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
