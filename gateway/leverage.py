"""Leverage caps: the symbol's, its notional brackets, and run-time overrides that only lower.

The cap for an order is the lowest of every layer that applies:

* the symbol's ``max_leverage`` and its ``leverage_brackets`` (policy or UpsertSymbol);
* a run-time symbol limit set with ``SetLeverageLimit`` (cap and/or brackets);
* the account's cap set with ``SetLeverageLimit``;
* the cap of the account's linked group, set with ``SetLeverageLimit``.

So an override can only ever lower what the symbol allows. Brackets are
looked up by the order's notional (quantity x limit price, or x reference price
for a market order): the row with ``floor < notional <= cap`` applies, so an
order exactly at a row's cap still gets that row's leverage. A notional above
the last row's cap gets no leverage at all (cap 0: refused). With no price to
compute a notional from (a market order and no reference at all), the most
conservative row, the last, applies.

Reduce-only orders are never refused for leverage: they cannot add exposure.
Amends carry no leverage and are not checked here. The gateway sees single
orders, not positions: brackets are applied to each order's own notional; the
exchange still applies them to the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from gateway.decimals import EXACT, format_decimal
from gateway.model import Action, FlagKind, SymbolSpec
from gateway.reasons import Denial, Reason
from gateway.refprice import reference_price
from gateway.symbol_limits import LeverageBracket, LeverageLimit, bracket_for
from gateway.validation import OrderCall

if TYPE_CHECKING:
    from gateway.checks import Check
    from gateway.ops_records import OpsRecord
    from gateway.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Cap:
    """The binding cap: its leverage, which layer set it, and the bracket row if any."""

    max_leverage: int
    bound_by: str
    bracket: LeverageBracket | None = None
    notional_above_brackets: bool = False


def leverage_cap(
    notional: Decimal | None, layers: tuple[tuple[str, LeverageLimit], ...]
) -> Cap | None:
    """The lowest cap over ``layers`` (name, limit) for ``notional``; None when nothing caps."""
    best: Cap | None = None
    for name, limit in layers:
        candidates: list[Cap] = []
        if limit.max_leverage:
            candidates.append(Cap(limit.max_leverage, name))
        if limit.brackets:
            if notional is None:
                row = limit.brackets[-1]
                candidates.append(Cap(row.max_leverage, f"{name}_brackets", row))
            else:
                row_or_none = bracket_for(limit.brackets, notional)
                if row_or_none is None:
                    candidates.append(Cap(0, f"{name}_brackets", limit.brackets[-1], True))
                else:
                    candidates.append(
                        Cap(row_or_none.max_leverage, f"{name}_brackets", row_or_none)
                    )
        for candidate in candidates:
            if best is None or candidate.max_leverage < best.max_leverage:
                best = candidate
    return best


_PLACE = Action.PLACE
_SYMBOL_LEVERAGE = FlagKind.SYMBOL_LEVERAGE
_ACCOUNT_LEVERAGE = FlagKind.ACCOUNT_LEVERAGE
_GROUP_LEVERAGE = FlagKind.GROUP_LEVERAGE


def leverage_check(snapshot: Snapshot) -> Check:
    def check(call: OrderCall, now_ms: int) -> Denial | None:
        if call.action is not _PLACE or call.reduce_only:
            return None
        spec = snapshot.symbols.get(call.symbol)
        if spec is None:
            return None
        declared = spec.limits
        # What LeverageLimit.empty says, without building one per call.
        symbol_caps = bool(declared.max_leverage or declared.leverage_brackets)
        ops = snapshot.ops  # read per call: a full reload swaps the tables
        if not (
            symbol_caps or ops[_SYMBOL_LEVERAGE] or ops[_ACCOUNT_LEVERAGE] or ops[_GROUP_LEVERAGE]
        ):
            return None  # nothing caps leverage anywhere: decided without building layers
        layers: list[tuple[str, LeverageLimit]] = []
        if symbol_caps:
            layers.append(("symbol", declared.leverage))
        symbol_override: OpsRecord[LeverageLimit] | None = snapshot.ops_record(
            _SYMBOL_LEVERAGE, call.symbol, now_ms
        )
        if symbol_override is not None:
            layers.append(("symbol_override", symbol_override.value))
        account_override: OpsRecord[int] | None = snapshot.ops_record(
            _ACCOUNT_LEVERAGE, call.account_id, now_ms
        )
        if account_override is not None:
            layers.append(("account_override", LeverageLimit(account_override.value)))
        group = snapshot.groups.group_of(call.account_id)
        if group:
            group_override: OpsRecord[int] | None = snapshot.ops_record(
                _GROUP_LEVERAGE, group, now_ms
            )
            if group_override is not None:
                layers.append(("group_override", LeverageLimit(group_override.value)))
        if not layers:
            return None
        notional = _notional(call, spec, snapshot, now_ms)
        cap = leverage_cap(notional, tuple(layers))
        if cap is None or call.leverage <= cap.max_leverage:
            return None
        return _denial(call, cap, notional)

    return check


def _notional(call: OrderCall, spec: SymbolSpec, snapshot: Snapshot, now_ms: int) -> Decimal | None:
    if call.quantity is None:
        return None
    price = call.price
    if price is None:
        # A market order: the reference price, even a stale one (better than none;
        # with REFUSE_MARKET a stale reference never gets this far).
        reference = reference_price(snapshot, spec, now_ms)
        if reference is None:
            return None
        price = reference.price
    return EXACT.multiply(call.quantity, price)


def _denial(call: OrderCall, cap: Cap, notional: Decimal | None) -> Denial:
    shown = "unknown" if notional is None else format_decimal(notional)
    meta = {
        "limit": "leverage",
        "symbol": call.symbol,
        "account_id": call.account_id,
        "requested_leverage": str(call.leverage),
        "max_leverage": str(cap.max_leverage),
        "bound_by": cap.bound_by,
        "notional": shown,
    }
    if cap.bracket is not None:
        meta["bracket_floor"] = format_decimal(cap.bracket.floor)
        meta["bracket_cap"] = "" if cap.bracket.cap is None else format_decimal(cap.bracket.cap)
    if cap.notional_above_brackets:
        message = (
            f"{call.symbol}: notional {shown} is above the highest leverage bracket "
            f"(cap {meta['bracket_cap']}): no leverage is available for it"
        )
    else:
        message = (
            f"{call.symbol}: leverage {call.leverage}x exceeds the {cap.max_leverage}x allowed "
            f"({cap.bound_by.replace('_', ' ')}) for a notional of {shown}"
        )
    return Denial(Reason.LEVERAGE_EXCEEDED, message, meta)
