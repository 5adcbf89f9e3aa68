"""Admin API for order limits: SetLeverageLimit, SetReferencePrice, and the limit fields of
UpsertSymbol, GetSymbol and GetAccount.

Called from :class:`gateway.admin.AdminService`, which passes in its field checker
(so bad input is refused exactly as elsewhere: INVALID_ARGUMENT naming every bad
field, nothing half-applied). Writes go through the flag store, are applied to
this gateway's snapshot at once and reach the others by pub/sub.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import grpc
import structlog
from google.protobuf import timestamp_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.decimals import DecimalFormatError, format_decimal, parse_positive_decimal
from gateway.engine import Gatekeeper
from gateway.fields import BadFields, ttl_not_for
from gateway.model import FlagKind, SymbolSpec
from gateway.ops_records import (
    OPS_DECODERS,
    OpsRecord,
    account_leverage_fields,
    reference_price_fields,
    symbol_leverage_fields,
)
from gateway.refprice import reference_price
from gateway.snapshot import Snapshot, now_ms
from gateway.symbol_limits import (
    LIMIT_FIELDS,
    MAX_LEVERAGE,
    LeverageLimit,
    LimitsError,
    SelfTradePrevention,
    StaleReference,
    leverage_limit_from_values,
    limits_from_values,
    program_trading_ban,
    reference_max_age_ms,
    stale_reference,
)
from gateway.validation import (
    ACCOUNT_RE,
    ACCOUNT_RULE,
    PRODUCT_RE,
    PRODUCT_RULE,
    SYMBOL_RE,
    SYMBOL_RULE,
)

log = structlog.get_logger("gateway.admin")

Context = aio.ServicerContext[Any, Any]
#: SymbolSpec fields an UpsertSymbol update_mask may name.
MASKABLE_FIELDS = ("product", "base_asset", "quote_asset", *LIMIT_FIELDS)


Checker = BadFields


# -- UpsertSymbol ------------------------------------------------------------------


def upsert_spec(
    request: apb.UpsertSymbolRequest, snapshot: Snapshot, v: Checker
) -> SymbolSpec | None:
    """The spec an UpsertSymbol asks for, validated into ``v``.

    None (with no violation added) when a partial update names an unknown symbol.
    """
    spec = request.spec
    v.ident("spec.symbol", spec.symbol, SYMBOL_RE, SYMBOL_RULE)
    paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
    for path in paths:
        if path not in MASKABLE_FIELDS:
            v.add(
                "update_mask",
                f"unknown or fixed field {path!r} (allowed: {', '.join(MASKABLE_FIELDS)})",
            )
    asked = spec_values(spec)
    if paths:
        current = snapshot.symbols.get(spec.symbol)
        if current is None:
            return None
        values = {**_current_values(current), **{p: asked[p] for p in paths if p in asked}}
    else:
        values = asked
    v.ident("spec.product", values["product"], PRODUCT_RE, PRODUCT_RULE)
    for name in ("base_asset", "quote_asset"):
        v.ident(f"spec.{name}", values[name], SYMBOL_RE, SYMBOL_RULE)
    try:
        limits = limits_from_values(values)
    except LimitsError as exc:
        for name, problem in exc.errors:
            v.add(f"spec.{name}", problem)
        return None
    return SymbolSpec(
        spec.symbol, values["product"], values["base_asset"], values["quote_asset"], limits
    )


#: Limit fields whose proto form needs converting (below), not a plain copy.
_CONVERTED_FIELDS = frozenset({"leverage_brackets", "stale_reference", "stp_mode"})


def spec_values(spec: apb.SymbolSpec) -> dict[str, Any]:
    """A proto SymbolSpec as the plain values :func:`limits_from_values` takes."""
    values: dict[str, Any] = {
        name: getattr(spec, name)
        for name in ("product", "base_asset", "quote_asset", *LIMIT_FIELDS)
        if name not in _CONVERTED_FIELDS
    }
    values["leverage_brackets"] = _rows(spec.leverage_brackets)
    stale = int(spec.stale_reference)
    values["stale_reference"] = (
        StaleReference(stale).label if stale in StaleReference._value2member_map_ else stale
    )
    stp = int(spec.stp_mode)
    values["stp_mode"] = (
        SelfTradePrevention(stp).label if stp in SelfTradePrevention._value2member_map_ else stp
    )
    return values


def spec_to_proto(spec: SymbolSpec) -> apb.SymbolSpec:
    limits = spec.limits
    message = apb.SymbolSpec(
        symbol=spec.symbol,
        product=spec.product,
        base_asset=spec.base_asset,
        quote_asset=spec.quote_asset,
        max_leverage=limits.max_leverage,
        reference_max_age_ms=limits.reference_max_age_ms,
        program_trading_forbidden=limits.program_trading_forbidden,
        leverage_brackets=[_bracket_proto(*b.as_row()) for b in limits.leverage_brackets],
    )
    values = limits.to_values()
    for name in (
        "tick_size",
        "lot_size",
        "min_quantity",
        "max_quantity",
        "min_notional",
        "max_notional",
        "band_buy_up_pct",
        "band_buy_down_pct",
        "band_sell_up_pct",
        "band_sell_down_pct",
    ):
        setattr(message, name, values[name])
    if limits.stale_reference is not None:
        message.stale_reference = int(limits.stale_reference)  # type: ignore[assignment]
    if limits.stp_mode is not None:
        message.stp_mode = int(limits.stp_mode)  # type: ignore[assignment]
    return message


def _current_values(spec: SymbolSpec) -> dict[str, Any]:
    return {
        "product": spec.product,
        "base_asset": spec.base_asset,
        "quote_asset": spec.quote_asset,
        **spec.limits.to_values(),
    }


# -- views ---------------------------------------------------------------------------


def fill_symbol(message: apb.Symbol, snapshot: Snapshot, symbol: str, at_ms: int) -> None:
    """Add the run-time leverage limit, the reference price and the program-trading ban."""
    spec = snapshot.symbols.get(symbol)
    if spec is None:
        return
    override: OpsRecord[LeverageLimit] | None = snapshot.ops_record(
        FlagKind.SYMBOL_LEVERAGE, symbol, at_ms
    )
    if override is not None:
        message.leverage_override.CopyFrom(_limit_proto(override.value, override))
    message.reference_price.CopyFrom(reference_view(snapshot, spec, at_ms))
    product = snapshot.products.get(spec.product)
    message.program_trading_forbidden = program_trading_ban(spec.limits, product) is not None


def reference_view(snapshot: Snapshot, spec: SymbolSpec, at_ms: int) -> apb.ReferencePrice:
    product = snapshot.products.get(spec.product)
    reference = reference_price(snapshot, spec, at_ms)
    message = apb.ReferencePrice(
        max_age_ms=reference_max_age_ms(spec.limits, product),
        stale_reference=int(stale_reference(spec.limits, product)),  # type: ignore[arg-type]
    )
    if reference is not None:
        message.price = format_decimal(reference.price)
        message.source = reference.source
        message.observed_at.CopyFrom(_timestamp(reference.observed_ms))
        message.age_ms = reference.age_ms(at_ms)
        message.stale = not reference.fresh
    pinned: OpsRecord[Decimal] | None = snapshot.ops_record(
        FlagKind.REFERENCE_PRICE, spec.symbol, at_ms
    )
    if pinned is not None:
        message.reason = pinned.reason
        message.actor = pinned.actor
        if pinned.expires_ms:
            message.expires_at.CopyFrom(_timestamp(pinned.expires_ms))
    last = snapshot.trade_prices.get(spec.symbol)
    if last is not None:
        message.upstream_price = format_decimal(last[0])
        message.upstream_observed_at.CopyFrom(_timestamp(last[1]))
    return message


async def fill_account(message: apb.Account, keeper: Gatekeeper, account_id: str) -> None:
    """Add the account's leverage cap, read from Redis (the source of truth)."""
    fields = await keeper.flags.read(FlagKind.ACCOUNT_LEVERAGE, account_id)
    view = _leverage_view(FlagKind.ACCOUNT_LEVERAGE, fields)
    if view is not None:
        message.leverage_limit.CopyFrom(view)


# -- SetLeverageLimit ----------------------------------------------------------------


async def set_leverage_limit(
    keeper: Gatekeeper, request: apb.SetLeverageLimitRequest, context: Context, v: Checker
) -> apb.SetLeverageLimitResponse:
    target = request.WhichOneof("target")
    if target is None:
        v.add("target", "required: symbol, account_id or group_id")
    elif target == "symbol":
        v.ident("symbol", request.symbol, SYMBOL_RE, SYMBOL_RULE)
    else:
        v.ident(target, getattr(request, target), ACCOUNT_RE, ACCOUNT_RULE)
    v.change_meta(request.reason, request.actor)
    ttl_ms = v.ttl(request, ttl_not_for("clear", request.clear))
    limit = LeverageLimit()
    if request.clear:
        if request.max_leverage or request.brackets:
            v.add("clear", "clear takes no max_leverage and no brackets")
    elif target in ("account_id", "group_id"):
        if request.brackets:
            v.add("brackets", "an account or a group has a flat cap: brackets are for symbols")
        if not 1 <= request.max_leverage <= MAX_LEVERAGE:
            v.add("max_leverage", f"required: between 1 and {MAX_LEVERAGE}")
        limit = LeverageLimit(request.max_leverage)
    elif target == "symbol":
        try:
            limit = leverage_limit_from_values(request.max_leverage, _rows(request.brackets))
        except LimitsError as exc:
            for name, problem in exc.errors:
                v.add(name, problem)
        else:
            if limit.empty:
                v.add("max_leverage", f"required: a cap (1-{MAX_LEVERAGE}) and/or brackets")
    await v.abort_if_any(context)
    if target == "symbol" and request.symbol not in keeper.snapshot.symbols:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown symbol {request.symbol}")
    if (
        target == "group_id"
        and not request.clear
        and not keeper.snapshot.groups.members_of(request.group_id)
    ):
        await context.abort(
            grpc.StatusCode.NOT_FOUND, f"no group {request.group_id}: link accounts into it first"
        )

    if target == "symbol":
        kind, key = FlagKind.SYMBOL_LEVERAGE, request.symbol
        fields = symbol_leverage_fields(limit, request.reason, request.actor)
    elif target == "group_id":
        kind, key = FlagKind.GROUP_LEVERAGE, request.group_id
        fields = account_leverage_fields(limit.max_leverage, request.reason, request.actor)
    else:
        kind, key = FlagKind.ACCOUNT_LEVERAGE, request.account_id
        fields = account_leverage_fields(limit.max_leverage, request.reason, request.actor)
    result = await keeper.flags.write(kind, key, None if request.clear else fields, ttl_ms)
    keeper.snapshot.apply(kind, key, result.new, result.version)
    await keeper.ops.admin_action(
        context,
        "set_leverage_limit",
        request.actor,
        request.reason,
        f"{target}:{key}",
        str(_describe(kind, result.old) or ""),
        str(_describe(kind, result.new) or ""),
        ttl_ms,
    )
    response = apb.SetLeverageLimitResponse()
    for name, raw in (("limit", result.new), ("previous", result.old)):
        view = _leverage_view(kind, raw)
        if view is not None:
            getattr(response, name).CopyFrom(view)
    return response


# -- SetReferencePrice ---------------------------------------------------------------


async def set_reference_price(
    keeper: Gatekeeper, request: apb.SetReferencePriceRequest, context: Context, v: Checker
) -> apb.SetReferencePriceResponse:
    v.ident("symbol", request.symbol, SYMBOL_RE, SYMBOL_RULE)
    v.change_meta(request.reason, request.actor)
    ttl_ms = v.ttl(request, ttl_not_for("clear", request.clear))
    price = Decimal(0)
    if request.clear:
        if request.price:
            v.add("price", "must be empty with clear")
    elif not request.price:
        v.add("price", "required (or clear)")
    else:
        try:
            price = parse_positive_decimal(request.price)
        except DecimalFormatError as exc:
            v.add("price", str(exc))
    await v.abort_if_any(context)
    spec = keeper.snapshot.symbols.get(request.symbol)
    if spec is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown symbol {request.symbol}")
        raise AssertionError("unreachable")  # pragma: no cover

    fields = None if request.clear else reference_price_fields(price, request.reason, request.actor)
    kind = FlagKind.REFERENCE_PRICE
    result = await keeper.flags.write(kind, request.symbol, fields, ttl_ms)
    keeper.snapshot.apply(kind, request.symbol, result.new, result.version)
    await keeper.ops.admin_action(
        context,
        "set_reference_price",
        request.actor,
        request.reason,
        request.symbol,
        str((result.old or {}).get("price") or ""),
        str((result.new or {}).get("price") or ""),
        ttl_ms,
    )
    return apb.SetReferencePriceResponse(
        reference_price=reference_view(keeper.snapshot, spec, now_ms())
    )


# -- helpers -------------------------------------------------------------------------


def _rows(brackets: Any) -> list[tuple[str, str, int]]:
    return [(b.notional_floor, b.notional_cap, b.max_leverage) for b in brackets]


def _bracket_proto(floor: str, cap: str, leverage: int) -> apb.LeverageBracket:
    return apb.LeverageBracket(notional_floor=floor, notional_cap=cap, max_leverage=leverage)


def _limit_proto(limit: LeverageLimit, record: OpsRecord[Any]) -> apb.LeverageLimit:
    message = apb.LeverageLimit(
        max_leverage=limit.max_leverage,
        brackets=[_bracket_proto(*b.as_row()) for b in limit.brackets],
        reason=record.reason,
        actor=record.actor,
    )
    message.updated_at.CopyFrom(_timestamp(record.updated_ms))
    if record.expires_ms:
        message.expires_at.CopyFrom(_timestamp(record.expires_ms))
    return message


def _leverage_view(kind: FlagKind, fields: Mapping[str, str] | None) -> apb.LeverageLimit | None:
    if not fields:
        return None
    try:
        record = OPS_DECODERS[kind](fields)
    except (KeyError, ValueError):
        log.error("admin.unreadable_record", kind=kind.value, fields=dict(fields))
        return None
    if not record.in_force(now_ms()):
        return None
    value = record.value
    limit = value if isinstance(value, LeverageLimit) else LeverageLimit(int(value))
    return _limit_proto(limit, record)


def _describe(kind: FlagKind, fields: Mapping[str, str] | None) -> str | None:
    if not fields:
        return None
    if kind in (FlagKind.ACCOUNT_LEVERAGE, FlagKind.GROUP_LEVERAGE):
        return f"{fields.get('value')}x"
    parts = []
    if fields.get("max_leverage"):
        parts.append(f"{fields['max_leverage']}x")
    if fields.get("brackets"):
        parts.append(f"brackets {fields['brackets']}")
    return ", ".join(parts)


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
