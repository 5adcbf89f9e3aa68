"""The behavioural limits: what can be limited, how a value is written, where it is declared.

One text syntax serves the policy files, the admin API and the CLI:

* rate caps (``order_rate``, ``cancel_rate``, ``large_order_rate``,
  ``large_cancel_rate``): windows ``"<limit>/<window>"``, e.g. ``"10/1s"``;
  several at once as a TOML array or, in one string, comma-separated
  (``"10/1s,100/10s,200000/1d"``);
* ``large_notional``: a decimal in the quote asset (``"250000"``);
* ``daily_open``: a count of position-opening orders per day (``5000``);
* ``cancel_ratio``: ``"min_orders=100,max_ratio=0.95"`` (or a TOML table);
* ``min_resting``: a duration (``"500ms"``).

Durations take ``ms``, ``s``, ``m``, ``h`` and ``d``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from gateway.decimals import DecimalFormatError, format_decimal, parse_positive_decimal


class LimitKind(enum.StrEnum):
    ORDER_RATE = "order_rate"
    CANCEL_RATE = "cancel_rate"
    LARGE_ORDER_RATE = "large_order_rate"
    LARGE_CANCEL_RATE = "large_cancel_rate"
    LARGE_NOTIONAL = "large_notional"
    DAILY_OPEN = "daily_open"
    CANCEL_RATIO = "cancel_ratio"
    MIN_RESTING = "min_resting"


RATE_KINDS = frozenset(
    {
        LimitKind.ORDER_RATE,
        LimitKind.CANCEL_RATE,
        LimitKind.LARGE_ORDER_RATE,
        LimitKind.LARGE_CANCEL_RATE,
    }
)


class Scope(enum.StrEnum):
    """Where a limit is declared, least specific first; the most specific declaration wins."""

    DEFAULT = "default"
    PRODUCT = "product"
    SYMBOL = "symbol"
    ACCOUNT = "account"


SCOPE_ORDER = (Scope.DEFAULT, Scope.PRODUCT, Scope.SYMBOL, Scope.ACCOUNT)

MAX_LIMIT = 1_000_000_000
MAX_WINDOW_MS = 31 * 86_400_000
MAX_RESTING_MS = 3_600_000
MAX_RATIO = Decimal(1000)
RATIO_FRACTION_DIGITS = 6

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"([1-9][0-9]{0,9})(ms|s|m|h|d)")
_WINDOW = re.compile(r"([1-9][0-9]{0,9})/([1-9][0-9]{0,9}(?:ms|s|m|h|d))")


class LimitValueError(ValueError):
    """A limit value that cannot be used; the message says what is expected."""


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """At most ``limit`` calls in any interval of ``window_ms`` (a sliding window)."""

    window_ms: int
    limit: int

    @property
    def window_text(self) -> str:
        return format_duration(self.window_ms)

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_text}"


@dataclass(frozen=True, slots=True)
class CancelRatio:
    """Once ``min_orders`` orders were placed today, cancels/orders may not exceed ``max_ratio``."""

    min_orders: int
    max_ratio: Decimal

    @property
    def fraction(self) -> tuple[int, int]:
        """``max_ratio`` as an exact integer fraction (numerator, denominator)."""
        return self.max_ratio.as_integer_ratio()

    def __str__(self) -> str:
        return f"min_orders={self.min_orders},max_ratio={format_decimal(self.max_ratio)}"


Windows: TypeAlias = tuple[Window, ...]
LimitValue: TypeAlias = Windows | Decimal | int | CancelRatio


def format_duration(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_duration(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise LimitValueError(f"not a duration: {text!r} (use e.g. 500ms, 1s, 10s, 1m, 1h, 1d)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_windows(raw: Any) -> Windows:
    """``"10/1s"``, ``"10/1s,100/10s"`` or ``["10/1s", "100/10s"]``; sorted by window."""
    if isinstance(raw, str):
        items: list[Any] = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise LimitValueError('rate windows: expected e.g. ["10/1s", "100/10s"]')
    if not items:
        raise LimitValueError('rate windows: at least one, e.g. "10/1s"')
    windows: dict[int, Window] = {}
    for item in items:
        if not isinstance(item, str):
            raise LimitValueError(f'rate window {item!r}: expected a string such as "10/1s"')
        match = _WINDOW.fullmatch(item.strip())
        if match is None:
            raise LimitValueError(
                f'rate window {item!r}: expected "<limit>/<window>" such as "10/1s" or "200000/1d"'
            )
        limit, window_ms = int(match.group(1)), parse_duration(match.group(2))
        if limit > MAX_LIMIT:
            raise LimitValueError(f"rate window {item!r}: limit at most {MAX_LIMIT}")
        if window_ms > MAX_WINDOW_MS:
            raise LimitValueError(f"rate window {item!r}: window at most 31d")
        if window_ms in windows:
            raise LimitValueError(f"rate window {item!r}: window {match.group(2)} given twice")
        windows[window_ms] = Window(window_ms, limit)
    return tuple(sorted(windows.values()))


def parse_value(kind: LimitKind, raw: Any) -> LimitValue:
    """Parse a value from a policy file (TOML types) or from text (admin API, CLI)."""
    if kind in RATE_KINDS:
        return parse_windows(raw)
    if kind is LimitKind.LARGE_NOTIONAL:
        return _positive_decimal(raw, "large_notional")
    if kind is LimitKind.DAILY_OPEN:
        return _count(raw, "daily_open", minimum=0)
    if kind is LimitKind.MIN_RESTING:
        ms = parse_duration(raw) if isinstance(raw, str) else _count(raw, "min_resting", 1)
        if ms > MAX_RESTING_MS:
            raise LimitValueError("min_resting: at most 1h")
        return ms
    return _cancel_ratio(raw)


def format_value(kind: LimitKind, value: LimitValue) -> str:
    """The canonical text of a value; ``parse_value(kind, format_value(kind, v)) == v``."""
    if kind in RATE_KINDS:
        assert isinstance(value, tuple)
        return ",".join(str(w) for w in value)
    if kind is LimitKind.LARGE_NOTIONAL:
        assert isinstance(value, Decimal)
        return format_decimal(value)
    if kind is LimitKind.MIN_RESTING:
        assert isinstance(value, int)
        return format_duration(value)
    return str(value)


def _positive_decimal(raw: Any, name: str) -> Decimal:
    if isinstance(raw, bool):
        raise LimitValueError(f'{name}: expected a decimal such as "250000"')
    if isinstance(raw, int):
        raw = str(raw)
    elif isinstance(raw, Decimal):
        raw = format(raw, "f")
    if not isinstance(raw, str):
        raise LimitValueError(f'{name}: expected a decimal such as "250000"')
    try:
        return parse_positive_decimal(raw)
    except DecimalFormatError as exc:
        raise LimitValueError(f"{name}: {exc}") from None


def _count(raw: Any, name: str, minimum: int) -> int:
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not minimum <= raw <= MAX_LIMIT:
        raise LimitValueError(f"{name}: expected a whole number from {minimum} to {MAX_LIMIT}")
    return raw


def _cancel_ratio(raw: Any) -> CancelRatio:
    expected = 'cancel_ratio: expected "min_orders=<n>,max_ratio=<decimal>"'
    if isinstance(raw, str):
        parts: dict[str, Any] = {}
        for item in raw.split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise LimitValueError(expected)
            parts[name.strip()] = value.strip()
        raw = parts
    if not isinstance(raw, Mapping) or set(raw) != {"min_orders", "max_ratio"}:
        raise LimitValueError(expected)
    min_orders = _count(raw["min_orders"], "cancel_ratio.min_orders", minimum=1)
    ratio = raw["max_ratio"]
    if isinstance(ratio, str):
        try:
            ratio = Decimal(ratio)
        except InvalidOperation:
            raise LimitValueError("cancel_ratio.max_ratio: expected a decimal") from None
    elif isinstance(ratio, int) and not isinstance(ratio, bool):
        ratio = Decimal(ratio)
    if not isinstance(ratio, Decimal) or not ratio.is_finite():
        raise LimitValueError("cancel_ratio.max_ratio: expected a decimal such as 0.95")
    exponent = ratio.as_tuple().exponent
    if not 0 < ratio <= MAX_RATIO or (
        isinstance(exponent, int) and -exponent > RATIO_FRACTION_DIGITS
    ):
        raise LimitValueError(
            f"cancel_ratio.max_ratio: above 0, at most {MAX_RATIO}, "
            f"at most {RATIO_FRACTION_DIGITS} decimal places"
        )
    return CancelRatio(min_orders, ratio)


@dataclass(frozen=True, slots=True)
class ScopeRef:
    """One place a limit can be declared: the default, a product, a symbol or an account."""

    scope: Scope
    key: str = ""

    def __str__(self) -> str:
        return self.scope.value if self.scope is Scope.DEFAULT else f"{self.scope}:{self.key}"


DEFAULT_SCOPE = ScopeRef(Scope.DEFAULT)

LimitTable: TypeAlias = Mapping[LimitKind, LimitValue]


@dataclass(frozen=True, slots=True)
class CounterPolicy:
    """The ``[counters]`` settings and the ``[limits...]`` tables of the policy files."""

    tables: Mapping[ScopeRef, LimitTable] = field(default_factory=dict)
    #: Daily counters roll over at this offset from 00:00 UTC (ms).
    day_start_ms: int = 0
    #: How long the gateway remembers a large order (to count its cancel as large).
    order_memory_ms: int = 86_400_000
    #: Longest wait for the counter store before the failure policy decides; None:
    #: the gateway's ``--redis-timeout-ms`` (see gateway.reliability).
    timeout_ms: int | None = None

    def table(self, ref: ScopeRef) -> LimitTable:
        return self.tables.get(ref, {})

    @property
    def empty(self) -> bool:
        return not any(self.tables.values())
