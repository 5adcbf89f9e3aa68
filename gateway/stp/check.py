"""The self-trade check, and what an accepted call tells the own-order book.

The check is local (no Redis, no network): the caller's group, then the best
resting order of the group on the other side of the symbol, from
:class:`~gateway.stp.book.OwnOrders`. A limit order crosses when its price
reaches that order's (a buy at or above the best own ask, a sell at or below
the best own bid); a market order crosses any. The gateway does not see the
book's depth, so it refuses every order that *could* trade with its own group,
even one that other orders in between would fill first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf.message import DecodeError, Message

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.gate import Admission
from gateway.decimals import DecimalFormatError, format_decimal, parse_positive_decimal
from gateway.model import Action
from gateway.reasons import Denial, Reason
from gateway.stp.book import BUY, Resting
from gateway.symbol_limits import SelfTradePrevention, stp_mode
from gateway.validation import OrderCall

if TYPE_CHECKING:
    from gateway.checks import Check
    from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.stp")

_OPEN = frozenset({pb.ORDER_STATUS_NEW, pb.ORDER_STATUS_PARTIALLY_FILLED})
_DONE = frozenset({pb.ORDER_STATUS_FILLED, pb.ORDER_STATUS_CANCELED, pb.ORDER_STATUS_EXPIRED})


def crosses(side: int, price: Decimal | None, resting_price: Decimal) -> bool:
    """Whether an order on ``side`` at ``price`` (None: market) reaches ``resting_price``."""
    if price is None:
        return True
    return price >= resting_price if side == BUY else price <= resting_price


def self_trade_check(snapshot: Snapshot) -> Check:
    groups = snapshot.groups
    book = snapshot.own_orders

    def check(call: OrderCall, now_ms: int) -> Denial | None:
        if call.action is Action.CANCEL:
            return None
        group = groups.group_of(call.account_id)
        if not group:
            return None
        spec = snapshot.symbols.get(call.symbol)
        if spec is None or stp_mode(spec.limits) is SelfTradePrevention.NONE:
            return None
        if call.action is Action.PLACE:
            side, price = call.side, call.price
        else:
            # An amend carries no side: only an order this gateway keeps has a known one,
            # and only a new price can make it cross.
            if call.price is None:
                return None
            own = book.find(call.account_id, call.order_id, call.client_order_id)
            if own is None:
                return None
            side, price = own.side, call.price
        resting = book.best_opposite(groups.members_of(group), call.symbol, side)
        if resting is None or not crosses(side, price, resting.price):
            return None
        return _denial(call, side, price, resting)

    return check


def _denial(call: OrderCall, side: int, price: Decimal | None, resting: Resting) -> Denial:
    side_text = "buy" if side == BUY else "sell"
    shown = "market" if price is None else format_decimal(price)
    own = resting.account_id == call.account_id
    whose = "your own resting order" if own else "a resting order of a linked account"
    return Denial(
        Reason.SELF_TRADE,
        f"{call.symbol}: the {side_text} at {shown} would trade against {whose} "
        f"({resting.order_id} at {format_decimal(resting.price)}): refused (self-trade "
        "prevention, expire taker); the resting order stays",
        {
            "limit": "self_trade",
            "symbol": call.symbol,
            "account_id": call.account_id,
            "side": side_text,
            "price": shown,
            "conflicting_order_id": resting.order_id,
            "conflicting_price": format_decimal(resting.price),
            "mode": SelfTradePrevention.EXPIRE_TAKER.label,
        },
    )


# -- accepted calls -------------------------------------------------------------------


class ObservedAdmission(Admission):
    """An admission that also tells the own-order book what the upstream answered."""

    __slots__ = ("_inner", "_observe", "_response_type")

    def __init__(
        self,
        inner: Admission,
        observe: Callable[[Any], None],
        response_type: type[Message],
    ) -> None:
        super().__init__(inner.metadata)
        self._inner = inner
        self._observe = observe
        self._response_type = response_type

    def accepted(self, response: Any) -> None:
        self._inner.accepted(response)
        try:
            self._observe(response)
        except (ValueError, DecimalFormatError) as exc:  # an odd answer must not fail the call
            log.warning("stp.bad_response", error=str(exc))

    def accepted_bytes(self, raw: bytes) -> None:
        try:
            response = self._response_type.FromString(raw)
        except DecodeError:
            return
        self.accepted(response)

    def failed(self, code: grpc.StatusCode) -> None:
        self._inner.failed(code)


def observe_admission(
    snapshot: Snapshot, call: OrderCall, admission: Admission, response_type: type[Message]
) -> Admission:
    """``admission``, wrapped to feed the own-order book when the caller is linked."""
    observe = _observer(snapshot, call)
    if observe is None:
        return admission
    return ObservedAdmission(admission, observe, response_type)


def _observer(snapshot: Snapshot, call: OrderCall) -> Callable[[Any], None] | None:
    if not snapshot.groups.group_of(call.account_id):
        return None
    book = snapshot.own_orders
    if call.action is Action.PLACE:
        if call.price is None:
            return None  # market orders never rest
        price = call.price

        def placed(response: Any) -> None:
            if not response.order_id:
                return
            if response.status in _OPEN:
                resting = Resting(
                    response.order_id,
                    call.account_id,
                    call.symbol,
                    call.side,
                    price,
                    call.client_order_id,
                )
                book.upsert(resting, only_new=True)
            elif response.status in _DONE:
                book.close(response.order_id)

        return placed
    if call.action is Action.AMEND:

        def amended(response: Any) -> None:
            if response.status in _DONE:
                book.close(response.order_id)
                return
            held = book.find(call.account_id, response.order_id)
            if held is not None and response.status in _OPEN and response.price:
                moved = dataclasses.replace(held, price=parse_positive_decimal(response.price))
                book.upsert(moved)

        return amended

    def cancelled(response: Any) -> None:
        order_id = response.order_id
        if not order_id:
            held = book.find(call.account_id, call.order_id, call.client_order_id)
            order_id = held.order_id if held is not None else call.order_id
        if order_id:
            book.close(order_id)

    return cancelled
