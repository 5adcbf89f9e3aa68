"""Memberships in the snapshot: derived member lists, versions, and the effective state."""

from __future__ import annotations

from gateway.model import AccountState, FlagKind
from gateway.snapshot import Snapshot

M = FlagKind.GROUP_MEMBER
S = FlagKind.GROUP_STATE


def link(group: str, version: int = 1) -> dict[str, str]:
    return {
        "group": group,
        "reason": "r",
        "actor": "ops",
        "updated_ms": "5",
        "version": str(version),
    }


def state(value: AccountState, version: int = 1, expires_ms: int = 0) -> dict[str, str]:
    return {"value": str(int(value)), "reason": "r", "actor": "ops",
            "expires_ms": str(expires_ms), "version": str(version)}  # fmt: skip


def test_members_are_derived_from_the_accounts_records() -> None:
    snapshot = Snapshot()
    groups = snapshot.groups
    snapshot.apply(M, "bob", link("g1"), 1)
    snapshot.apply(M, "alice", link("g1"), 1)
    snapshot.apply(M, "carol", link("g2"), 1)
    assert groups.members_of("g1") == ("alice", "bob")
    assert groups.group_of("carol") == "g2" and groups.group_of("dave") == ""
    # Moving and unlinking update both groups.
    snapshot.apply(M, "bob", link("g2", 2), 2)
    assert groups.members_of("g1") == ("alice",) and groups.members_of("g2") == ("bob", "carol")
    snapshot.apply(M, "alice", None, 3)
    assert groups.members_of("g1") == () and groups.group_ids() == ["g2"]


def test_an_older_change_is_ignored() -> None:
    snapshot = Snapshot()
    snapshot.apply(M, "alice", link("g1", 5), 5)
    assert not snapshot.apply(M, "alice", None, 4)
    assert snapshot.groups.group_of("alice") == "g1"
    assert snapshot.apply(S, "g1", state(AccountState.FROZEN, 3), 3)
    assert not snapshot.apply(S, "g1", None, 2)
    assert snapshot.groups.state("g1", 0) is not None


def test_a_full_reload_rebuilds_members_and_tells_listeners() -> None:
    snapshot = Snapshot()
    reloads: list[int] = []
    snapshot.on_reload(lambda: reloads.append(1))
    snapshot.apply(M, "zed", link("g9"), 1)
    bad = snapshot.replace_all(
        {
            M: {"alice": link("g1"), "bob": link("g1"), "odd": {"group": "{bad}"}},
            S: {"g1": state(AccountState.REDUCE_ONLY)},
        }
    )
    assert bad == ["odd"]
    assert snapshot.groups.members_of("g1") == ("alice", "bob")
    assert snapshot.groups.group_of("zed") == ""
    assert snapshot.groups.state("g1", 0).value == AccountState.REDUCE_ONLY  # type: ignore[union-attr]
    assert reloads == [1]


def test_effective_state_is_the_most_restrictive_of_own_and_group() -> None:
    snapshot = Snapshot()
    groups = snapshot.groups
    snapshot.apply(M, "alice", link("g1"), 1)

    def effective(account: str) -> tuple[int, str] | None:
        found = groups.effective_state(snapshot.account_state(account, 10), account, 10)
        return None if found is None else (found[0].value, found[1])

    assert effective("alice") is None
    snapshot.apply(S, "g1", state(AccountState.REDUCE_ONLY), 1)
    assert effective("alice") == (AccountState.REDUCE_ONLY, "group")
    snapshot.apply(FlagKind.ACCOUNT_STATE, "alice", state(AccountState.FROZEN), 1)
    assert effective("alice") == (AccountState.FROZEN, "account")
    snapshot.apply(S, "g1", state(AccountState.DEACTIVATED, 2), 2)
    assert effective("alice") == (AccountState.DEACTIVATED, "group")
    # A tie goes to the account's own record.
    snapshot.apply(S, "g1", state(AccountState.FROZEN, 3), 3)
    assert effective("alice") == (AccountState.FROZEN, "account")
    # Unlinked, the member keeps only its own state.
    snapshot.apply(M, "alice", None, 2)
    assert effective("alice") == (AccountState.FROZEN, "account")


def test_group_states_lapse() -> None:
    snapshot = Snapshot()
    snapshot.apply(S, "g1", state(AccountState.FROZEN, expires_ms=100), 1)
    assert snapshot.groups.state("g1", 99) is not None
    assert snapshot.groups.state("g1", 100) is None
    assert snapshot.purge_lapsed(100) == 1
    assert "g1" not in snapshot.groups.states
