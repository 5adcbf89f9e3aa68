"""Turn one call and the limits that apply to it into the counter script's plan.

Pure: no I/O, so what a call touches is unit-tested without Redis. The plan is
the script's whole input (keys and ops, see ``gateway/store/lua/counters.lua``)
plus, for each op that checks something, what it checks, so the answer can be
read back into a refusal or a remaining budget.

What a call touches:

* place: every ``order_rate`` window; ``large_order_rate`` when large;
  ``daily_open`` unless reduce-only; the day's order tally; with a client
  order id, the record of when it was admitted (for resting time, large cancels)
  and, with idempotency on, the retry record (see gateway/reliability/idempotency.py);
* cancel: what is remembered of the order; ``min_resting``; ``cancel_rate``;
  ``large_cancel_rate`` if the order is remembered as large; ``cancel_ratio``;
  the day's cancel tally;
* amend: the order record; ``min_resting``; ``order_rate``; ``large_order_rate``
  when the new notional is large (or, when the amend does not give both
  quantity and price, when the order is remembered as large).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.keys import day_key, idempotency_key, order_record_key, rate_key
from gateway.counters.limits import (
    CounterPolicy,
    LimitKind,
    Scope,
    ScopeRef,
    Window,
    format_duration,
)
from gateway.counters.resolve import EffectiveLimits, Sourced
from gateway.decimals import format_decimal
from gateway.model import Action
from gateway.records import IdentityMemo, hot_record
from gateway.reliability.idempotency import FREE_RETRIES
from gateway.validation import OrderCall

ReferencePrice = Callable[[str], Decimal | None]

#: Windows with a limit up to this are kept as a sliding log (exact, one entry
#: per call in the window); larger ones in BUCKETS sub-windows (bounded memory).
LOG_MAX = 1000
#: Sub-windows of a bucketed window (mirrors ``BUCKETS`` in counters.lua).
BUCKETS = 500
#: Extra life of a resting-time record beyond the resting time itself.
RECORD_MARGIN_MS = 1000
DAY = "day"
#: Ops that spend a budget or a tally: a place with none of them needs no retry record.
_SPENDS = frozenset({"W", "B", "D", "T"})


@dataclass(frozen=True, slots=True)
class Check:
    """What one op of the plan limits (None for ops that only read or write)."""

    kind: LimitKind
    #: ``"1s"``, ``"10s"``... for rate caps, ``"day"`` for daily limits, ``""`` otherwise.
    window: str
    #: Where the limit comes from, e.g. ``policy:default``.
    source: str
    #: For ``daily_open``: what is counted, ``product:spot`` or ``symbol:BTC-USDT``.
    counted: str = ""
    #: Settings of the limit worth showing in a refusal (``cancel_ratio``).
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    """What to remember about a placed order once the exchange has accepted it."""

    subject: str
    account_id: str
    large: bool
    ttl_ms: int


@hot_record
class CounterPlan:
    subject: str
    keys: tuple[str, ...]
    #: Ops of five strings each: op, key index (1-based), a, b, c.
    ops: tuple[tuple[str, str, str, str, str], ...]
    checks: tuple[Check | None, ...]
    day_start_ms: int
    record: PlacementRecord | None = None
    #: The retry record of a place with a client order id ("" when none).
    idempotency_key: str = ""

    @property
    def empty(self) -> bool:
        """Nothing to check, consume or remember (a plan with only a record still runs,
        for the admission time)."""
        return not self.ops and self.record is None

    def args(self) -> list[str]:
        return [field for op in self.ops for field in op]


class _Builder:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, str] = {}
        self.ops: list[tuple[str, str, str, str, str]] = []
        self.checks: list[Check | None] = []

    def key(self, name: str) -> str:
        index = self._index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._index[name] = str(len(self.keys))
        return index

    def op(
        self,
        code: str,
        key: str = "0",
        a: str = "",
        b: str = "",
        c: str = "",
        check: Check | None = None,
    ) -> None:
        self.ops.append((code, key, a, b, c))
        self.checks.append(check)


def build_plan(
    call: OrderCall,
    limits: EffectiveLimits,
    subject: str,
    policy: CounterPolicy,
    reference_price: ReferencePrice | None = None,
    idempotency_ms: int = 0,
) -> CounterPlan:
    if call.action is Action.PLACE:
        return _place_plan(call, limits, subject, policy, reference_price, idempotency_ms)
    b = _Builder()
    if call.action is Action.CANCEL:
        _cancel(b, call, limits, subject)
    else:
        _amend(b, call, limits, subject, policy)
    return CounterPlan(
        subject=subject,
        keys=tuple(b.keys),
        ops=tuple(b.ops),
        checks=tuple(b.checks),
        day_start_ms=policy.day_start_ms,
    )


@hot_record
class _PlaceCounts:
    """The part of a place's plan that depends only on its limits, its counting subject,
    whether it is large and whether it is reduce-only: every budget and tally it spends."""

    keys: tuple[str, ...]
    ops: tuple[tuple[str, str, str, str, str], ...]
    checks: tuple[Check | None, ...]
    spends: bool


#: :class:`_PlaceCounts` by the limits' identity (the resolver shares one limits object
#: per symbol, or per account with limits of its own) and (subject, large, reduce-only):
#: a bot placing again and again builds that part of its plan once.
_PLACE_COUNTS: IdentityMemo[EffectiveLimits, _PlaceCounts] = IdentityMemo(65_536)


def _place_plan(
    call: OrderCall,
    limits: EffectiveLimits,
    subject: str,
    policy: CounterPolicy,
    reference_price: ReferencePrice | None,
    idempotency_ms: int,
) -> CounterPlan:
    """The budgets and tallies (memoised), then what only this order has: the record of
    its admission and its retry record, both keyed by its client order id."""
    large = False
    if limits.large_notional is not None:
        price = call.price
        if price is None and call.order_type == pb.ORDER_TYPE_MARKET and reference_price:
            price = reference_price(call.symbol)
        large = _is_large(limits, call.quantity, price)
    tag = (subject, large, call.reduce_only)
    counts = _PLACE_COUNTS.get(limits, tag)
    if counts is None:
        counts = _PLACE_COUNTS.put(
            limits, _place_counts(limits, subject, large, call.reduce_only), tag
        )
    ttl_ms = _record_ttl(limits, large, policy)
    record = None if ttl_ms is None else PlacementRecord(subject, call.account_id, large, ttl_ms)
    client_id = call.client_order_id
    retry = bool(idempotency_ms and client_id and counts.spends)
    if not client_id or (record is None and not retry):
        return CounterPlan(
            subject, counts.keys, counts.ops, counts.checks, policy.day_start_ms, record
        )
    keys, ops, checks = list(counts.keys), list(counts.ops), list(counts.checks)
    if record is not None:
        # Remembered at admission already, so a cancel by client order id sent
        # before the exchange has answered still sees the order's age.
        keys.append(order_record_key(subject, call.account_id, client_id=client_id))
        ops.append(("S", str(len(keys)), str(record.ttl_ms), "1" if large else "0", ""))
        checks.append(None)
    retry_key = ""
    if retry:
        retry_key = idempotency_key(subject, call.account_id, client_id)
        keys.append(retry_key)
        ops.append(("I", str(len(keys)), str(idempotency_ms), str(FREE_RETRIES), ""))
        checks.append(None)
    return CounterPlan(
        subject, tuple(keys), tuple(ops), tuple(checks), policy.day_start_ms, record, retry_key
    )


def _place_counts(
    limits: EffectiveLimits, subject: str, large: bool, reduce_only: bool
) -> _PlaceCounts:
    b = _Builder()
    _windows(b, subject, limits, LimitKind.ORDER_RATE)
    if large:
        _windows(b, subject, limits, LimitKind.LARGE_ORDER_RATE)
    if not reduce_only:
        _daily_open(b, subject, limits)
    if limits.tally:
        b.op("T", b.key(day_key(subject)), "orders")
    spends = any(op[0] in _SPENDS for op in b.ops)
    return _PlaceCounts(tuple(b.keys), tuple(b.ops), tuple(b.checks), spends)


def _cancel(b: _Builder, call: OrderCall, limits: EffectiveLimits, subject: str) -> None:
    large_cancels = limits.rate(LimitKind.LARGE_CANCEL_RATE)
    if limits.min_resting_ms is not None or large_cancels:
        _read_record(b, call, subject)
    _min_resting(b, limits)
    _windows(b, subject, limits, LimitKind.CANCEL_RATE)
    _windows(b, subject, limits, LimitKind.LARGE_CANCEL_RATE, only_if_large=True)
    _cancel_ratio(b, subject, limits)
    if limits.tally:
        b.op("T", b.key(day_key(subject)), "cancels")


def _amend(
    b: _Builder, call: OrderCall, limits: EffectiveLimits, subject: str, policy: CounterPolicy
) -> None:
    large: bool | None = None  # None: the amend alone does not tell
    if call.quantity is not None and call.price is not None:
        large = _is_large(limits, call.quantity, call.price)
    large_orders = limits.rate(LimitKind.LARGE_ORDER_RATE)
    track = limits.large_notional is not None and bool(limits.rate(LimitKind.LARGE_CANCEL_RATE))
    if limits.min_resting_ms is not None or (large is None and large_orders):
        _read_record(b, call, subject)
    _min_resting(b, limits)
    _windows(b, subject, limits, LimitKind.ORDER_RATE)
    if large is None:
        _windows(b, subject, limits, LimitKind.LARGE_ORDER_RATE, only_if_large=True)
    elif large:
        _windows(b, subject, limits, LimitKind.LARGE_ORDER_RATE)
    if large is not None and track:
        for key in filter(None, _record_keys(call, subject)):
            b.op("U", b.key(key), str(policy.order_memory_ms), "1" if large else "0")


def _windows(
    b: _Builder,
    subject: str,
    limits: EffectiveLimits,
    kind: LimitKind,
    only_if_large: bool = False,
) -> None:
    large = "L" if only_if_large else ""
    for code, window_ms, bucketed, limit, window, check in _window_ops(limits.rate(kind), kind):
        b.op(
            code, b.key(_rate_key(subject, kind, window_ms, bucketed)), limit, window, large, check
        )


#: What every call with the same rate windows shares (everything but the subject's
#: keys), by the windows tuple's identity: the tuples live as long as the resolver
#: caches their limits.
_WindowOp = tuple[str, int, bool, str, str, Check]
_WINDOW_OPS: IdentityMemo[tuple[Sourced[Window], ...], list[_WindowOp]] = IdentityMemo(4096)


def _window_ops(windows: tuple[Sourced[Window], ...], kind: LimitKind) -> list[_WindowOp]:
    found = _WINDOW_OPS.get(windows, kind)
    if found is not None:
        return found
    ops = []
    for sourced in windows:
        window = sourced.value
        bucketed = window.limit > LOG_MAX
        ops.append(
            (
                "B" if bucketed else "W",
                window.window_ms,
                bucketed,
                str(window.limit),
                str(window.window_ms),
                Check(kind, window.window_text, sourced.source),
            )
        )
    return _WINDOW_OPS.put(windows, ops, kind)


@functools.lru_cache(maxsize=65_536)
def _rate_key(subject: str, kind: LimitKind, window_ms: int, bucketed: bool) -> str:
    return rate_key(subject, kind, window_ms, bucketed)


def _daily_open(b: _Builder, subject: str, limits: EffectiveLimits) -> None:
    if limits.daily_open is not None:
        counted = limits.daily_open_scope
        b.op(
            "D",
            b.key(day_key(subject)),
            str(limits.daily_open.value),
            _open_field(counted),
            check=Check(LimitKind.DAILY_OPEN, DAY, limits.daily_open.source, str(counted)),
        )


def _cancel_ratio(b: _Builder, subject: str, limits: EffectiveLimits) -> None:
    ratio = limits.cancel_ratio
    if ratio is not None:
        num, den = ratio.value.fraction
        detail = (
            ("max_ratio", format_decimal(ratio.value.max_ratio)),
            ("min_orders", str(ratio.value.min_orders)),
        )
        b.op(
            "R",
            b.key(day_key(subject)),
            str(ratio.value.min_orders),
            str(num),
            str(den),
            check=Check(LimitKind.CANCEL_RATIO, DAY, ratio.source, detail=detail),
        )


def _min_resting(b: _Builder, limits: EffectiveLimits) -> None:
    if limits.min_resting_ms is not None:
        ms = limits.min_resting_ms.value
        b.op(
            "M",
            "0",
            str(ms),
            check=Check(LimitKind.MIN_RESTING, format_duration(ms), limits.min_resting_ms.source),
        )


def _read_record(b: _Builder, call: OrderCall, subject: str) -> None:
    by_id, by_client = _record_keys(call, subject)
    b.op("O", "0", b.key(by_id) if by_id else "0", b.key(by_client) if by_client else "0")


def _record_keys(call: OrderCall, subject: str) -> tuple[str, str]:
    """The order's record keys by order id and by client order id ("" when not given)."""
    account = call.account_id
    by_id = order_record_key(subject, account, order_id=call.order_id) if call.order_id else ""
    by_client = ""
    if call.client_order_id:
        by_client = order_record_key(subject, account, client_id=call.client_order_id)
    return by_id, by_client


def _is_large(limits: EffectiveLimits, quantity: Decimal | None, price: Decimal | None) -> bool:
    threshold = limits.large_notional
    if threshold is None or quantity is None or price is None:
        return False
    with localcontext() as exact:
        exact.prec = 80  # 18+18 digits times 18+18 digits: never rounded
        return quantity * price >= threshold.value


def _record_ttl(limits: EffectiveLimits, large: bool, policy: CounterPolicy) -> int | None:
    """How long to remember a placed order, or None when nothing needs it."""
    ttl = 0
    if limits.min_resting_ms is not None:
        ttl = limits.min_resting_ms.value + RECORD_MARGIN_MS
    if large and limits.rate(LimitKind.LARGE_CANCEL_RATE):
        ttl = max(ttl, policy.order_memory_ms)
    return ttl or None


def _open_field(counted: ScopeRef) -> str:
    prefix = "s" if counted.scope is Scope.SYMBOL else "p"
    return f"open:{prefix}:{counted.key}"


def build_usage_plan(limits: EffectiveLimits, subject: str, policy: CounterPolicy) -> CounterPlan:
    """A plan that reads every counter the limits define (for ``peek``: ops and support)."""
    b = _Builder()
    for kind in (
        LimitKind.ORDER_RATE,
        LimitKind.CANCEL_RATE,
        LimitKind.LARGE_ORDER_RATE,
        LimitKind.LARGE_CANCEL_RATE,
    ):
        _windows(b, subject, limits, kind)
    _daily_open(b, subject, limits)
    _cancel_ratio(b, subject, limits)
    return CounterPlan(subject, tuple(b.keys), tuple(b.ops), tuple(b.checks), policy.day_start_ms)
