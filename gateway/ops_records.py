"""Run-time limits set through the admin API, as Redis stores them and the snapshot holds them.

Four kinds, all with the usual provenance (reason, actor, version) and an
optional TTL: an account's leverage cap, a linked group's, a symbol's run-time
leverage limit, and a symbol's reference price pinned by ops. Values are
decoded once, when a record reaches the snapshot, so the hot path reads typed
values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from gateway.apikeys import ApiKey, api_key_from_fields
from gateway.decimals import format_decimal, parse_positive_decimal
from gateway.model import FlagKind
from gateway.symbol_limits import (
    MAX_LEVERAGE,
    LeverageLimit,
    LimitsError,
    decode_brackets,
    encode_brackets,
    leverage_limit_from_values,
)

T = TypeVar("T")
Fields = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class OpsRecord(Generic[T]):
    value: T
    reason: str
    actor: str
    updated_ms: int
    expires_ms: int  # 0: no expiry
    version: int

    def in_force(self, now_ms: int) -> bool:
        return self.expires_ms == 0 or now_ms < self.expires_ms


def _record(fields: Fields, value: T) -> OpsRecord[T]:
    return OpsRecord(
        value=value,
        reason=fields.get("reason", ""),
        actor=fields.get("actor", ""),
        updated_ms=int(fields.get("updated_ms", "0")),
        expires_ms=int(fields.get("expires_ms", "0")),
        version=int(fields.get("version", "0")),
    )


def account_leverage_from_fields(fields: Fields) -> OpsRecord[int]:
    cap = int(fields["value"])
    if not 1 <= cap <= MAX_LEVERAGE:
        raise ValueError(f"account leverage cap out of range: {cap}")
    return _record(fields, cap)


def symbol_leverage_from_fields(fields: Fields) -> OpsRecord[LeverageLimit]:
    limit = leverage_limit_from_values(
        int(fields.get("max_leverage") or 0), decode_brackets(fields.get("brackets", ""))
    )
    if limit.empty:
        raise LimitsError([("max_leverage", "a leverage limit needs a cap or brackets")])
    return _record(fields, limit)


def reference_price_from_fields(fields: Fields) -> OpsRecord[Decimal]:
    return _record(fields, parse_positive_decimal(fields["price"]))


def api_key_record_from_fields(fields: Fields) -> OpsRecord[ApiKey]:
    return _record(fields, api_key_from_fields(fields))


#: How the snapshot decodes each kind of ops record.
OPS_DECODERS: Mapping[FlagKind, Callable[[Fields], OpsRecord[Any]]] = {
    FlagKind.ACCOUNT_LEVERAGE: account_leverage_from_fields,
    FlagKind.SYMBOL_LEVERAGE: symbol_leverage_from_fields,
    FlagKind.REFERENCE_PRICE: reference_price_from_fields,
    FlagKind.GROUP_LEVERAGE: account_leverage_from_fields,
    FlagKind.API_KEY: api_key_record_from_fields,
}


def account_leverage_fields(cap: int, reason: str, actor: str) -> dict[str, str]:
    return {"value": str(cap), "reason": reason, "actor": actor}


def symbol_leverage_fields(limit: LeverageLimit, reason: str, actor: str) -> dict[str, str]:
    fields = {"reason": reason, "actor": actor}
    if limit.max_leverage:
        fields["max_leverage"] = str(limit.max_leverage)
    if limit.brackets:
        fields["brackets"] = encode_brackets([b.as_row() for b in limit.brackets])
    return fields


def reference_price_fields(price: Decimal, reason: str, actor: str) -> dict[str, str]:
    return {"price": format_decimal(price), "reason": reason, "actor": actor}
