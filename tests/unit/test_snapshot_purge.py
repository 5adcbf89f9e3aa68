"""Lapsed records leave the snapshot; the purge visits only records with a TTL."""

from __future__ import annotations

from gateway.model import FlagKind
from gateway.snapshot import Snapshot


def fields(value: int, expires_ms: int) -> dict[str, str]:
    return {"value": str(value), "reason": "r", "actor": "a", "expires_ms": str(expires_ms)}


def test_purge_drops_what_lapsed_and_keeps_the_rest() -> None:
    snapshot = Snapshot()
    snapshot.apply(FlagKind.ACCOUNT_STATE, "lapsed", fields(3, 1_000), 1)
    snapshot.apply(FlagKind.ACCOUNT_STATE, "later", fields(3, 5_000), 1)
    snapshot.apply(FlagKind.ACCOUNT_STATE, "forever", fields(3, 0), 1)
    snapshot.apply(FlagKind.SYMBOL_STATUS, "BTC-USDT", fields(2, 1_000), 1)

    assert snapshot.purge_lapsed(2_000) == 2
    assert set(snapshot.accounts) == {"later", "forever"}
    assert snapshot.symbol_status == {}
    assert snapshot.purge_lapsed(2_000) == 0
    assert snapshot.purge_lapsed(10_000) == 1
    assert set(snapshot.accounts) == {"forever"}


def test_a_record_replaced_with_a_later_ttl_is_not_dropped_at_the_old_one() -> None:
    snapshot = Snapshot()
    snapshot.apply(FlagKind.ACCOUNT_STATE, "acct", fields(3, 1_000), 1)
    snapshot.apply(FlagKind.ACCOUNT_STATE, "acct", fields(3, 9_000), 2)
    assert snapshot.purge_lapsed(2_000) == 0
    assert "acct" in snapshot.accounts
    snapshot.apply(FlagKind.ACCOUNT_STATE, "acct", fields(3, 0), 3)
    assert snapshot.purge_lapsed(20_000) == 0
    assert "acct" in snapshot.accounts


def test_records_of_a_full_load_are_purged_too() -> None:
    snapshot = Snapshot()
    snapshot.replace_all(
        {
            FlagKind.ACCOUNT_STATE: {"a": fields(3, 1_000), "b": fields(3, 0)},
            FlagKind.SYMBOL_STATUS: {"ETH-USDT": fields(2, 1_500)},
        }
    )
    assert snapshot.purge_lapsed(2_000) == 2
    assert set(snapshot.accounts) == {"b"}
    assert snapshot.symbol_status == {}


def test_many_rewrites_of_one_record_keep_the_index_bounded() -> None:
    snapshot = Snapshot()
    for version in range(1, 5_000):
        snapshot.apply(FlagKind.ACCOUNT_STATE, "acct", fields(3, 1_000 + version), version)
    assert len(snapshot._expiries) <= 2 * 1 + 1024 + 1
    assert snapshot.purge_lapsed(5_000) == 0
    assert snapshot.purge_lapsed(10_000) == 1
