"""Order sanity checks: channel, size, tick and lot, notional, price band.

Local checks like the state checks (``(call, now_ms) -> Denial | None``, built
once over the snapshot), run after them in this order: program channel, size
(quantity range, lot, tick), notional, price band, then leverage
(:mod:`gateway.leverage`). Each reads the symbol's limits from the snapshot on
every call, so a change through the admin API applies to the next order.

Cancels pass every one of them. Amends are checked on what they change: a new
quantity against the range and lot size, a new price against the tick size and
the price band, and the notional when both are given. Arithmetic is exact
(decimal, no rounding anywhere: an inexact step would raise).
"""

from __future__ import annotations

from decimal import Decimal

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.checks import Check
from gateway.decimals import EXACT, format_decimal, is_multiple
from gateway.leverage import leverage_check
from gateway.model import Action, Channel, SymbolSpec
from gateway.reasons import Denial, FieldViolation, Reason
from gateway.refprice import Reference, reference_price
from gateway.snapshot import Snapshot
from gateway.symbol_limits import (
    HUNDRED,
    StaleReference,
    program_trading_ban,
    reference_max_age_ms,
    stale_reference,
)
from gateway.validation import OrderCall

# Enum members bound once: each ``Enum.MEMBER`` read costs ~0.1 us (see gateway/checks.py).
_CANCEL = Action.CANCEL
_PLACE = Action.PLACE
_PROGRAM = Channel.PROGRAM


def order_sanity_checks(snapshot: Snapshot) -> tuple[Check, ...]:
    """Every order-sanity check in its fixed order (leverage last)."""
    return (
        program_channel_check(snapshot),
        order_size_check(snapshot),
        notional_check(snapshot),
        price_band_check(snapshot),
        leverage_check(snapshot),
    )


def program_channel_check(snapshot: Snapshot) -> Check:
    def check(call: OrderCall, now_ms: int) -> Denial | None:
        if call.channel is not _PROGRAM or call.action is _CANCEL:
            return None
        spec = snapshot.symbols.get(call.symbol)
        if spec is None:
            return None
        scope = program_trading_ban(spec.limits, snapshot.products.get(spec.product))
        if scope is None:
            return None
        where = call.symbol if scope == "symbol" else f"product {spec.product}"
        return Denial(
            Reason.PROGRAM_TRADING_FORBIDDEN,
            f"{call.symbol}: program trading is forbidden on {where}: "
            "only interactive orders (and cancels) are accepted",
            {
                "limit": "program_trading",
                "symbol": call.symbol,
                "product": spec.product,
                "scope": scope,
                "channel": call.channel.value,
            },
        )

    return check


def order_size_check(snapshot: Snapshot) -> Check:
    def check(call: OrderCall, now_ms: int) -> Denial | None:
        if call.action is _CANCEL:
            return None
        spec = snapshot.symbols.get(call.symbol)
        if spec is None:
            return None
        limits = spec.limits
        quantity = call.quantity
        if quantity is not None:
            low, high = limits.min_quantity, limits.max_quantity
            if (low is not None and quantity < low) or (high is not None and quantity > high):
                meta = {"limit": "quantity", "symbol": call.symbol, "quantity": _s(quantity)}
                bounds = []
                if low is not None:
                    meta["min_quantity"] = _s(low)
                    bounds.append(f"at least {_s(low)}")
                if high is not None:
                    meta["max_quantity"] = _s(high)
                    bounds.append(f"at most {_s(high)}")
                rule = "must be " + " and ".join(bounds)
                return Denial(
                    Reason.ORDER_QTY_OUT_OF_RANGE,
                    f"{call.symbol}: quantity {_s(quantity)} out of range: {rule}",
                    meta,
                    violations=(FieldViolation("quantity", rule),),
                )
            step = limits.lot_size
            if step is not None and not is_multiple(quantity, step):
                rule = f"must be a multiple of the lot size {_s(step)}"
                return Denial(
                    Reason.QTY_STEP_INVALID,
                    f"{call.symbol}: quantity {_s(quantity)} {rule}",
                    {
                        "limit": "lot_size",
                        "symbol": call.symbol,
                        "quantity": _s(quantity),
                        "lot_size": _s(step),
                    },
                    violations=(FieldViolation("quantity", rule),),
                )
        tick = limits.tick_size
        if call.price is not None and tick is not None and not is_multiple(call.price, tick):
            rule = f"must be a multiple of the tick size {_s(tick)}"
            return Denial(
                Reason.PRICE_TICK_INVALID,
                f"{call.symbol}: price {_s(call.price)} {rule}",
                {
                    "limit": "tick_size",
                    "symbol": call.symbol,
                    "price": _s(call.price),
                    "tick_size": _s(tick),
                },
                violations=(FieldViolation("price", rule),),
            )
        return None

    return check


def notional_check(snapshot: Snapshot) -> Check:
    """Notional range; for market orders also the stale-reference policy.

    A market order is priced at the reference price. Without a fresh one, the
    symbol's policy decides: REFUSE_MARKET refuses it (reduce-only orders
    excepted: they cannot add risk), SKIP_BAND lets it through priced at the
    last known reference, or unchecked for notional when there is none.
    Reduce-only orders are exempt from the minimum notional (closing dust
    must stay possible).
    """

    def check(call: OrderCall, now_ms: int) -> Denial | None:
        if call.action is _CANCEL or call.quantity is None:
            return None
        spec = snapshot.symbols.get(call.symbol)
        if spec is None:
            return None
        limits = spec.limits
        basis = "limit_price"
        if call.price is not None:
            price = call.price
        elif call.action is _PLACE:  # a market order
            if not limits.uses_reference:
                return None
            reference = reference_price(snapshot, spec, now_ms)
            if reference is None or not reference.fresh:
                policy = stale_reference(limits, snapshot.products.get(spec.product))
                if policy is StaleReference.REFUSE_MARKET and not call.reduce_only:
                    return _no_reference(call, spec, reference, now_ms, snapshot)
                if reference is None:
                    return None
            price, basis = reference.price, f"reference_{reference.source}"
        else:  # an amend of the quantity only: its price is not known here
            return None
        low = None if call.reduce_only else limits.min_notional
        high = limits.max_notional
        if low is None and high is None:
            return None
        notional = EXACT.multiply(call.quantity, price)
        if (low is not None and notional < low) or (high is not None and notional > high):
            meta = {
                "limit": "notional",
                "symbol": call.symbol,
                "notional": _s(notional),
                "price_basis": basis,
            }
            bounds = []
            if low is not None:
                meta["min_notional"] = _s(low)
                bounds.append(f"at least {_s(low)}")
            if high is not None:
                meta["max_notional"] = _s(high)
                bounds.append(f"at most {_s(high)}")
            return Denial(
                Reason.ORDER_NOTIONAL_OUT_OF_RANGE,
                f"{call.symbol}: notional {_s(notional)} {spec.quote_asset} out of range: "
                f"must be {' and '.join(bounds)}",
                meta,
            )
        return None

    return check


def price_band_check(snapshot: Snapshot) -> Check:
    """A limit price more than the band's percentage away from the reference is refused.

    Exactly at the band's edge passes. Without a fresh reference the band is not
    applied (whatever the stale policy: it only decides about market orders).
    An amend carries no side, so its new price is held to the widest band either
    side allows (the exchange, which knows the side, still applies its own).
    """

    def check(call: OrderCall, now_ms: int) -> Denial | None:
        if call.price is None or call.action is _CANCEL:
            return None
        spec = snapshot.symbols.get(call.symbol)
        if spec is None or not spec.limits.has_band:
            return None
        reference = reference_price(snapshot, spec, now_ms)
        if reference is None or not reference.fresh:
            return None
        limits = spec.limits
        if call.action is _PLACE:
            buy = call.side == pb.SIDE_BUY
            side = "BUY" if buy else "SELL"
            up = limits.band_buy_up_pct if buy else limits.band_sell_up_pct
            down = limits.band_buy_down_pct if buy else limits.band_sell_down_pct
        else:
            side = "ANY"
            up = _widest(limits.band_buy_up_pct, limits.band_sell_up_pct)
            down = _widest(limits.band_buy_down_pct, limits.band_sell_down_pct)
        scaled = EXACT.multiply(call.price, HUNDRED)
        ref = reference.price
        above = up is not None and scaled > EXACT.multiply(ref, HUNDRED + up)
        below = down is not None and scaled < EXACT.multiply(ref, HUNDRED - down)
        if not (above or below):
            return None
        return _band_denial(call, side, reference, up, down, above)

    return check


def _widest(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None else max(a, b)


def _band_denial(
    call: OrderCall,
    side: str,
    reference: Reference,
    up: Decimal | None,
    down: Decimal | None,
    above: bool,
) -> Denial:
    assert call.price is not None
    ref = reference.price
    meta = {
        "limit": "price_band",
        "symbol": call.symbol,
        "side": side,
        "price": _s(call.price),
        "reference_price": _s(ref),
        "reference_source": reference.source,
    }
    if up is not None:
        meta["band_up_pct"] = _s(up)
        meta["band_high"] = _s(EXACT.divide(EXACT.multiply(ref, HUNDRED + up), HUNDRED))
    if down is not None:
        meta["band_down_pct"] = _s(down)
        meta["band_low"] = _s(EXACT.divide(EXACT.multiply(ref, HUNDRED - down), HUNDRED))
    pct, direction = (up, "above") if above else (down, "below")
    who = {"BUY": "buy", "SELL": "sell", "ANY": "amended"}[side]
    return Denial(
        Reason.PRICE_OUT_OF_BAND,
        f"{call.symbol}: {who} price {_s(call.price)} is more than {_s(pct or Decimal(0))}% "
        f"{direction} the reference price {_s(ref)} ({reference.source})",
        meta,
    )


def _no_reference(
    call: OrderCall,
    spec: SymbolSpec,
    reference: Reference | None,
    now_ms: int,
    snapshot: Snapshot,
) -> Denial:
    max_age = reference_max_age_ms(spec.limits, snapshot.products.get(spec.product))
    meta = {
        "limit": "reference_price",
        "symbol": call.symbol,
        "state": "missing" if reference is None else "stale",
        "max_age_ms": str(max_age),
        "stale_reference": StaleReference.REFUSE_MARKET.label,
    }
    if reference is None:
        detail = "there is no reference price yet"
    else:
        meta["age_ms"] = str(reference.age_ms(now_ms))
        meta["reference_price"] = _s(reference.price)
        detail = f"the reference price is {reference.age_ms(now_ms)} ms old (max {max_age} ms)"
    return Denial(
        Reason.REFERENCE_PRICE_UNAVAILABLE,
        f"{call.symbol}: market orders are refused while {detail}; "
        "send a limit order, or retry once the market trades",
        meta,
    )


def _s(value: Decimal) -> str:
    return format_decimal(value)
