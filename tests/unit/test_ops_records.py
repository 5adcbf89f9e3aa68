"""Run-time limits in the snapshot: versioned like every flag, decoded once, lapse on time."""

from __future__ import annotations

from decimal import Decimal

from gateway.model import FlagKind
from gateway.snapshot import Snapshot


def rec(version: int, expires_ms: int = 0, **fields: str) -> dict[str, str]:
    return {"reason": "r", "actor": "a", "updated_ms": "1", "expires_ms": str(expires_ms),
            "version": str(version), **fields}  # fmt: skip


def test_versions_order_ops_records() -> None:
    snap = Snapshot()
    assert snap.apply(FlagKind.ACCOUNT_LEVERAGE, "a", rec(5, value="10"), 5)
    assert not snap.apply(FlagKind.ACCOUNT_LEVERAGE, "a", rec(4, value="20"), 4)
    record = snap.ops_record(FlagKind.ACCOUNT_LEVERAGE, "a", 0)
    assert record is not None and record.value == 10
    assert not snap.apply(FlagKind.ACCOUNT_LEVERAGE, "a", None, 3)
    assert snap.apply(FlagKind.ACCOUNT_LEVERAGE, "a", None, 6)
    assert snap.ops_record(FlagKind.ACCOUNT_LEVERAGE, "a", 0) is None


def test_values_are_decoded_and_lapse() -> None:
    snap = Snapshot()
    snap.apply(FlagKind.REFERENCE_PRICE, "X", rec(1, expires_ms=100, price="64000.5"), 1)
    snap.apply(
        FlagKind.SYMBOL_LEVERAGE, "X", rec(1, max_leverage="20", brackets="0,10,20;10,,5"), 1
    )
    price = snap.ops_record(FlagKind.REFERENCE_PRICE, "X", 99)
    assert price is not None and price.value == Decimal("64000.5")
    assert snap.ops_record(FlagKind.REFERENCE_PRICE, "X", 100) is None
    limit = snap.ops_record(FlagKind.SYMBOL_LEVERAGE, "X", 0)
    assert limit is not None and limit.value.brackets[1].cap is None
    assert snap.purge_lapsed(100) == 1


def test_reload_replaces_ops_records_and_skips_bad_ones() -> None:
    snap = Snapshot()
    snap.apply(FlagKind.ACCOUNT_LEVERAGE, "gone", rec(1, value="3"), 1)
    snap.trade_prices.observe("X", Decimal("1"), 1)
    bad = snap.replace_all(
        {
            FlagKind.ACCOUNT_LEVERAGE: {"a": rec(2, value="7"), "b": rec(2, value="0")},
            FlagKind.REFERENCE_PRICE: {"X": rec(2, price="NaN")},
            FlagKind.SYMBOL_LEVERAGE: {"Y": rec(2, brackets="5,10,3")},
        }
    )
    assert sorted(bad) == ["X", "Y", "b"]
    assert list(snap.ops[FlagKind.ACCOUNT_LEVERAGE]) == ["a"]
    assert snap.trade_prices.get("X") is not None  # the gateway's own, not from Redis
