"""Versioned records: any interleaving of messages and reloads converges on the newest."""

from gateway.model import AccountState, FlagKind, SymbolSpec
from gateway.snapshot import Snapshot


def fields(state: AccountState, version: int, expires_ms: int = 0) -> dict[str, str]:
    return {"value": str(int(state)), "reason": "r", "actor": "a", "updated_ms": "1",
            "expires_ms": str(expires_ms), "version": str(version)}  # fmt: skip


def test_older_records_never_replace_newer() -> None:
    snap = Snapshot()
    assert snap.apply(FlagKind.ACCOUNT_STATE, "a", fields(AccountState.FROZEN, 5), 5)
    assert not snap.apply(FlagKind.ACCOUNT_STATE, "a", fields(AccountState.ACTIVE, 4), 4)
    assert snap.accounts["a"].value == AccountState.FROZEN
    assert not snap.apply(FlagKind.ACCOUNT_STATE, "a", None, 3)  # a stale delete
    assert "a" in snap.accounts
    assert snap.apply(FlagKind.ACCOUNT_STATE, "a", None, 6)
    assert "a" not in snap.accounts


def test_reload_then_replay_of_queued_messages() -> None:
    snap = Snapshot()
    snap.replace_all({FlagKind.ACCOUNT_STATE: {"a": fields(AccountState.FROZEN, 10)}})
    # Messages published before the load read the key arrive after it: ignored.
    snap.apply(FlagKind.ACCOUNT_STATE, "a", fields(AccountState.REDUCE_ONLY, 9), 9)
    assert snap.accounts["a"].value == AccountState.FROZEN


def test_expired_records_are_not_in_force() -> None:
    snap = Snapshot()
    snap.apply(FlagKind.ACCOUNT_STATE, "a", fields(AccountState.FROZEN, 1, expires_ms=1000), 1)
    assert snap.account_state("a", 999) is not None
    assert snap.account_state("a", 1000) is None
    assert snap.purge_lapsed(1000) == 1


def test_admin_spec_overrides_policy_and_falls_back() -> None:
    policy = {"X": SymbolSpec("X", "spot", "A", "B")}
    snap = Snapshot(policy)
    admin = {
        "symbol": "X",
        "product": "perpetual",
        "base_asset": "A",
        "quote_asset": "B",
        "version": "2",
    }
    snap.apply(FlagKind.SYMBOL_SPEC, "X", admin, 2)
    assert snap.symbols["X"].product == "perpetual" and snap.spec_source("X") == "admin"
    snap.apply(FlagKind.SYMBOL_SPEC, "X", None, 3)
    assert snap.symbols["X"].product == "spot" and snap.spec_source("X") == "policy"


def test_unreadable_records_are_skipped_and_reported() -> None:
    snap = Snapshot()
    bad = snap.replace_all(
        {FlagKind.ACCOUNT_STATE: {"ok": fields(AccountState.FROZEN, 1), "bad": {"value": "x"}}}
    )
    assert bad == ["bad"] and list(snap.accounts) == ["ok"]


def test_account_reads_follow_every_change_after_being_read() -> None:
    """Reads go through a memo of recent accounts: changes, lapses and reloads reach them."""
    snap = Snapshot()
    assert snap.account_state("a", 100) is None  # read (and remembered) while active
    snap.apply(FlagKind.ACCOUNT_STATE, "a", fields(AccountState.FROZEN, 5, expires_ms=200), 5)
    frozen = snap.account_state("a", 100)
    assert frozen is not None and frozen.value == AccountState.FROZEN
    snap.purge_lapsed(300)
    assert snap.account_state("a", 300) is None
    snap.replace_all({FlagKind.ACCOUNT_STATE: {"a": fields(AccountState.REDUCE_ONLY, 9)}})
    reduce_only = snap.account_state("a", 300)
    assert reduce_only is not None and reduce_only.value == AccountState.REDUCE_ONLY
    snap.apply(FlagKind.ACCOUNT_STATE, "a", None, 10)
    assert snap.account_state("a", 300) is None


def test_every_reload_listener_runs_even_when_one_fails() -> None:
    snap = Snapshot()
    heard: list[str] = []

    def failing() -> None:
        heard.append("failing")
        raise RuntimeError("a defect in a listener")

    snap.on_reload(failing)
    snap.on_reload(lambda: heard.append("second"))
    try:
        snap.replace_all({})
    except RuntimeError:
        pass
    else:
        raise AssertionError("the listener's failure was swallowed")
    assert heard == ["failing", "second"]
