"""Per-symbol order limits and per-product settings, parsed and validated in one place.

A symbol may declare a tick size, a lot size, quantity and notional ranges, a
price band per side, a leverage cap with notional brackets, how old its
reference price may get and what happens then, and whether program orders are
refused. Every limit is optional: an absent one is not checked by the gateway
(the exchange may still check it).

The policy loader (TOML) and the admin API (protobuf) both reduce their input to
the same plain *values* (decimals as strings, integers, bracket rows as
``(floor, cap, leverage)`` string/int tuples) and call :func:`limits_from_values`,
so both refuse the same mistakes with the same words. Redis keeps the values as
flat string fields (:meth:`SymbolLimits.to_fields`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.decimals import DecimalFormatError, format_decimal, parse_decimal

#: Highest leverage anything may declare (orders above it are malformed anyway).
MAX_LEVERAGE = 1000
#: Used when neither the symbol nor its product says how old a reference may be.
DEFAULT_REFERENCE_MAX_AGE_MS = 60_000
MAX_REFERENCE_AGE_MS = 24 * 3600 * 1000
#: Price bands above the reference are at most 1000% (11x); below it, under 100%.
MAX_BAND_UP_PCT = Decimal(1000)
HUNDRED = Decimal(100)


class StaleReference(enum.IntEnum):
    """What the price band does without a fresh reference price (mirrors the proto enum)."""

    REFUSE_MARKET = 1
    SKIP_BAND = 2

    @property
    def label(self) -> str:
        return self.name.lower()


DEFAULT_STALE_REFERENCE = StaleReference.REFUSE_MARKET
_STALE_BY_LABEL = {s.label: s for s in StaleReference}


class SelfTradePrevention(enum.IntEnum):
    """What happens to an order that would trade with its own group (mirrors the proto enum)."""

    EXPIRE_TAKER = 1
    NONE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


DEFAULT_STP_MODE = SelfTradePrevention.EXPIRE_TAKER
_STP_BY_LABEL = {s.label: s for s in SelfTradePrevention}


class LimitsError(ValueError):
    """Bad limit values: every ``(field, problem)`` found, so a caller can name them all."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in self.errors))


@dataclass(frozen=True, slots=True)
class LeverageBracket:
    """Orders with ``floor < notional <= cap`` may use at most ``max_leverage`` (the
    first row starts at 0 inclusive; ``cap=None`` only on the last row: no upper bound)."""

    floor: Decimal
    cap: Decimal | None
    max_leverage: int

    def as_row(self) -> tuple[str, str, int]:
        cap = "" if self.cap is None else format_decimal(self.cap)
        return format_decimal(self.floor), cap, self.max_leverage


Brackets = tuple[LeverageBracket, ...]
BracketRow = tuple[str, str, int]


def bracket_for(brackets: Brackets, notional: Decimal) -> LeverageBracket | None:
    """The row covering ``notional``; None when it is above the last cap."""
    for bracket in brackets:
        if bracket.cap is None or notional <= bracket.cap:
            return bracket
    return None


@dataclass(frozen=True, slots=True)
class LeverageLimit:
    """A cap and/or brackets: a symbol's declared leverage, or a run-time override."""

    max_leverage: int = 0  # 0: no flat cap
    brackets: Brackets = ()

    @property
    def empty(self) -> bool:
        return self.max_leverage == 0 and not self.brackets


@dataclass(frozen=True, slots=True)
class SymbolLimits:
    tick_size: Decimal | None = None
    lot_size: Decimal | None = None
    min_quantity: Decimal | None = None
    max_quantity: Decimal | None = None
    min_notional: Decimal | None = None
    max_notional: Decimal | None = None
    band_buy_up_pct: Decimal | None = None
    band_buy_down_pct: Decimal | None = None
    band_sell_up_pct: Decimal | None = None
    band_sell_down_pct: Decimal | None = None
    max_leverage: int = 0
    leverage_brackets: Brackets = ()
    reference_max_age_ms: int = 0  # 0: the product's, else the default
    stale_reference: StaleReference | None = None  # None: the product's, else the default
    program_trading_forbidden: bool = False
    stp_mode: SelfTradePrevention | None = None  # None: DEFAULT_STP_MODE

    @property
    def has_band(self) -> bool:
        # Read for every order with a price: plain tests, not a generator (~0.5 us).
        return not (
            self.band_buy_up_pct is None
            and self.band_buy_down_pct is None
            and self.band_sell_up_pct is None
            and self.band_sell_down_pct is None
        )

    @property
    def uses_reference(self) -> bool:
        """Whether any check of this symbol needs a reference price (band, notional, brackets)."""
        return (
            self.has_band
            or self.min_notional is not None
            or self.max_notional is not None
            or bool(self.leverage_brackets)
        )

    @property
    def leverage(self) -> LeverageLimit:
        return LeverageLimit(self.max_leverage, self.leverage_brackets)

    def to_values(self) -> dict[str, Any]:
        """The plain values :func:`limits_from_values` takes (absent limits as ``""``/0)."""
        values: dict[str, Any] = {name: _text(getattr(self, name)) for name in DECIMAL_FIELDS}
        values["max_leverage"] = self.max_leverage
        values["leverage_brackets"] = [b.as_row() for b in self.leverage_brackets]
        values["reference_max_age_ms"] = self.reference_max_age_ms
        values["stale_reference"] = self.stale_reference.label if self.stale_reference else ""
        values["program_trading_forbidden"] = self.program_trading_forbidden
        values["stp_mode"] = self.stp_mode.label if self.stp_mode else ""
        return values

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for a Redis hash (only what is set)."""
        out: dict[str, str] = {}
        for name, value in self.to_values().items():
            if name == "leverage_brackets":
                text = encode_brackets(value)
            elif isinstance(value, bool):
                text = "1" if value else ""
            elif isinstance(value, int):
                text = str(value) if value else ""
            else:
                text = value
            if text:
                out[name] = text
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> SymbolLimits:
        """Inverse of :meth:`to_fields`; raises :class:`LimitsError` (a ValueError) if bad."""
        values: dict[str, Any] = {name: fields.get(name, "") for name in DECIMAL_FIELDS}
        for name in ("max_leverage", "reference_max_age_ms"):
            try:
                values[name] = int(fields.get(name) or 0)
            except ValueError:
                raise LimitsError([(name, "must be an integer")]) from None
        values["leverage_brackets"] = decode_brackets(fields.get("leverage_brackets", ""))
        values["stale_reference"] = fields.get("stale_reference", "")
        values["program_trading_forbidden"] = fields.get("program_trading_forbidden") == "1"
        values["stp_mode"] = fields.get("stp_mode", "")
        return limits_from_values(values)


DECIMAL_FIELDS = (
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
)
#: Every limit field, in declaration order (also the SymbolSpec proto field names).
LIMIT_FIELDS = (
    *DECIMAL_FIELDS,
    "max_leverage",
    "leverage_brackets",
    "reference_max_age_ms",
    "stale_reference",
    "program_trading_forbidden",
    "stp_mode",
)


@dataclass(frozen=True, slots=True)
class ProductSpec:
    """Settings shared by every symbol of a product (``[[product]]`` in the policy)."""

    product: str
    program_trading_forbidden: bool = False
    reference_max_age_ms: int = 0
    stale_reference: StaleReference | None = None


def reference_max_age_ms(limits: SymbolLimits, product: ProductSpec | None) -> int:
    if limits.reference_max_age_ms:
        return limits.reference_max_age_ms
    if product is not None and product.reference_max_age_ms:
        return product.reference_max_age_ms
    return DEFAULT_REFERENCE_MAX_AGE_MS


def stale_reference(limits: SymbolLimits, product: ProductSpec | None) -> StaleReference:
    if limits.stale_reference is not None:
        return limits.stale_reference
    if product is not None and product.stale_reference is not None:
        return product.stale_reference
    return DEFAULT_STALE_REFERENCE


def program_trading_ban(limits: SymbolLimits, product: ProductSpec | None) -> str | None:
    """Who forbids program orders here: ``"symbol"``, ``"product"`` or None."""
    if limits.program_trading_forbidden:
        return "symbol"
    if product is not None and product.program_trading_forbidden:
        return "product"
    return None


# -- building and validating ---------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def add(self, name: str, problem: str) -> None:
        self.errors.append((name, problem))

    def positive(self, name: str, text: Any) -> Decimal | None:
        if text is None or text == "":
            return None
        if not isinstance(text, str):
            self.add(
                name, 'must be a decimal string such as "0.01" (not a number: floats are inexact)'
            )
            return None
        try:
            value = parse_decimal(text)
        except DecimalFormatError as exc:
            self.add(name, str(exc))
            return None
        if value <= 0:
            self.add(name, "must be greater than zero")
            return None
        return value

    def integer(self, name: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(name, "must be an integer")
            return 0
        if value != 0 and not low <= value <= high:
            self.add(name, f"must be between {low} and {high} (0: not set)")
            return 0
        return value


def limits_from_values(values: Mapping[str, Any]) -> SymbolLimits:
    """Build and validate limits from plain values; raise :class:`LimitsError` naming each
    bad field. Missing keys mean "not set"."""
    c = _Collector()
    decimals = {name: c.positive(name, values.get(name)) for name in DECIMAL_FIELDS}
    _check_range(c, decimals, "min_quantity", "max_quantity")
    _check_range(c, decimals, "min_notional", "max_notional")
    for side in ("buy", "sell"):
        up, down = f"band_{side}_up_pct", f"band_{side}_down_pct"
        up_pct, down_pct = decimals[up], decimals[down]
        if up_pct is not None and up_pct > MAX_BAND_UP_PCT:
            c.add(up, f"must be at most {MAX_BAND_UP_PCT}")
        if down_pct is not None and down_pct >= HUNDRED:
            c.add(down, "must be below 100 (a price cannot fall by 100% or more)")
    max_leverage = c.integer("max_leverage", values.get("max_leverage", 0), 1, MAX_LEVERAGE)
    brackets = _brackets(c, "leverage_brackets", values.get("leverage_brackets") or ())
    max_age = c.integer(
        "reference_max_age_ms", values.get("reference_max_age_ms", 0), 1, MAX_REFERENCE_AGE_MS
    )
    stale = parse_stale_reference(c, "stale_reference", values.get("stale_reference", ""))
    forbidden = values.get("program_trading_forbidden", False)
    if not isinstance(forbidden, bool):
        c.add("program_trading_forbidden", "must be true or false")
        forbidden = False
    stp = parse_stp_mode(c, "stp_mode", values.get("stp_mode", ""))
    if c.errors:
        raise LimitsError(c.errors)
    return SymbolLimits(
        tick_size=decimals["tick_size"],
        lot_size=decimals["lot_size"],
        min_quantity=decimals["min_quantity"],
        max_quantity=decimals["max_quantity"],
        min_notional=decimals["min_notional"],
        max_notional=decimals["max_notional"],
        band_buy_up_pct=decimals["band_buy_up_pct"],
        band_buy_down_pct=decimals["band_buy_down_pct"],
        band_sell_up_pct=decimals["band_sell_up_pct"],
        band_sell_down_pct=decimals["band_sell_down_pct"],
        max_leverage=max_leverage,
        leverage_brackets=brackets,
        reference_max_age_ms=max_age,
        stale_reference=stale,
        program_trading_forbidden=forbidden,
        stp_mode=stp,
    )


def parse_stp_mode(c: _Collector, name: str, value: Any) -> SelfTradePrevention | None:
    if value in ("", None, 0):
        return None
    if isinstance(value, SelfTradePrevention):
        return value
    if isinstance(value, str) and value in _STP_BY_LABEL:
        return _STP_BY_LABEL[value]
    c.add(name, f"must be one of {', '.join(_STP_BY_LABEL)}")
    return None


def stp_mode(limits: SymbolLimits) -> SelfTradePrevention:
    return limits.stp_mode if limits.stp_mode is not None else DEFAULT_STP_MODE


def leverage_limit_from_values(
    max_leverage: Any, rows: Sequence[Any], prefix: str = ""
) -> LeverageLimit:
    """A run-time leverage limit (cap and/or brackets); raises :class:`LimitsError`."""
    c = _Collector()
    cap = c.integer(f"{prefix}max_leverage", max_leverage, 1, MAX_LEVERAGE)
    brackets = _brackets(c, f"{prefix}brackets", rows)
    if c.errors:
        raise LimitsError(c.errors)
    return LeverageLimit(cap, brackets)


def parse_stale_reference(c: _Collector | None, name: str, value: Any) -> StaleReference | None:
    if value in ("", None, 0):
        return None
    if isinstance(value, StaleReference):
        return value
    if isinstance(value, str) and value in _STALE_BY_LABEL:
        return _STALE_BY_LABEL[value]
    problem = f"must be one of {', '.join(_STALE_BY_LABEL)}"
    if c is None:
        raise LimitsError([(name, problem)])
    c.add(name, problem)
    return None


def _check_range(c: _Collector, values: Mapping[str, Decimal | None], low: str, high: str) -> None:
    lo, hi = values[low], values[high]
    if lo is not None and hi is not None and lo > hi:
        c.add(low, f"must not exceed {high} ({format_decimal(hi)})")


def _brackets(c: _Collector, name: str, rows: Any) -> Brackets:
    """Rows must start at 0, be contiguous (each floor is the previous cap), have
    floor < cap, a cap on every row but the last, and leverage that never rises."""
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        c.add(name, "must be a list of (notional_floor, notional_cap, max_leverage) rows")
        return ()
    out: list[LeverageBracket] = []
    errors_before = len(c.errors)
    for index, row in enumerate(rows):
        where = f"{name}[{index}]"
        if not isinstance(row, tuple | list) or len(row) != 3:
            c.add(where, "must be (notional_floor, notional_cap, max_leverage)")
            continue
        floor_text, cap_text, leverage = row
        floor = _nonnegative(c, f"{where}.notional_floor", floor_text)
        cap = None if cap_text == "" else c.positive(f"{where}.notional_cap", cap_text)
        if isinstance(leverage, bool) or not isinstance(leverage, int):
            c.add(f"{where}.max_leverage", "must be an integer")
            continue
        if not 1 <= leverage <= MAX_LEVERAGE:
            c.add(f"{where}.max_leverage", f"must be between 1 and {MAX_LEVERAGE}")
            continue
        if floor is None:
            continue
        last = index == len(rows) - 1
        if cap is None and not last:
            c.add(f"{where}.notional_cap", "required on every row but the last")
            continue
        if cap is not None and floor >= cap:
            c.add(f"{where}.notional_cap", "must be above notional_floor")
            continue
        expected = Decimal(0) if not out else out[-1].cap
        if expected is not None and floor != expected:
            wanted = format_decimal(expected)
            problem = "the first row must start at 0" if not out else f"must be {wanted}"
            c.add(f"{where}.notional_floor", f"{problem}: rows are contiguous, no gap or overlap")
            continue
        if out and leverage > out[-1].max_leverage:
            c.add(f"{where}.max_leverage", "must not exceed the previous row's (bigger: lower)")
            continue
        out.append(LeverageBracket(floor, cap, leverage))
    if len(c.errors) != errors_before:
        return ()
    return tuple(out)


def _nonnegative(c: _Collector, name: str, text: Any) -> Decimal | None:
    if not isinstance(text, str) or not text:
        c.add(name, 'required: a decimal string such as "0" or "50000"')
        return None
    try:
        return parse_decimal(text)
    except DecimalFormatError as exc:
        c.add(name, str(exc))
        return None


def encode_brackets(rows: Sequence[BracketRow]) -> str:
    """``"0,50000,125;50000,,100"``: rows separated by ``;``, an empty cap for "unbounded"."""
    return ";".join(f"{floor},{cap},{leverage}" for floor, cap, leverage in rows)


def decode_brackets(text: str) -> list[tuple[str, str, int]]:
    rows: list[tuple[str, str, int]] = []
    if not text:
        return rows
    for part in text.split(";"):
        pieces = part.split(",")
        if len(pieces) != 3:
            raise LimitsError([("leverage_brackets", f"bad row {part!r}")])
        try:
            leverage = int(pieces[2])
        except ValueError:
            raise LimitsError([("leverage_brackets", f"bad row {part!r}")]) from None
        rows.append((pieces[0], pieces[1], leverage))
    return rows


def _text(value: Decimal | None) -> str:
    return "" if value is None else format_decimal(value)


__all__ = [
    "DEFAULT_REFERENCE_MAX_AGE_MS",
    "DEFAULT_STALE_REFERENCE",
    "LIMIT_FIELDS",
    "LeverageBracket",
    "LeverageLimit",
    "LimitsError",
    "ProductSpec",
    "SelfTradePrevention",
    "StaleReference",
    "SymbolLimits",
    "bracket_for",
    "leverage_limit_from_values",
    "limits_from_values",
    "program_trading_ban",
    "reference_max_age_ms",
    "stale_reference",
    "stp_mode",
]
