"""Precedence: default -> product -> symbol -> account, file then runtime override at each scope."""

from decimal import Decimal

from gateway.counters.limits import (
    DEFAULT_SCOPE,
    CounterPolicy,
    LimitKind,
    LimitValue,
    Scope,
    ScopeRef,
    parse_value,
)
from gateway.counters.resolve import LimitResolver, override_id, parse_override_id
from gateway.model import FlagKind, SymbolSpec
from gateway.snapshot import Snapshot

K = LimitKind
SPOT = ScopeRef(Scope.PRODUCT, "spot")
PERP = ScopeRef(Scope.PRODUCT, "perpetual")
BTC = ScopeRef(Scope.SYMBOL, "BTC-USDT")
ALICE = ScopeRef(Scope.ACCOUNT, "alice")


def table(**values: str) -> dict[LimitKind, LimitValue]:
    return {K(name): parse_value(K(name), text) for name, text in values.items()}


def snapshot() -> Snapshot:
    return Snapshot(
        {
            "BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT"),
            "ETH-USDT": SymbolSpec("ETH-USDT", "spot", "ETH", "USDT"),
            "BTC-PERP": SymbolSpec("BTC-PERP", "perpetual", "BTC", "USDT"),
        }
    )


POLICY = CounterPolicy(
    tables={
        DEFAULT_SCOPE: table(
            order_rate="10/1s,100/10s", cancel_rate="20/1s", daily_open="1000", min_resting="1s"
        ),
        SPOT: table(order_rate="8/1s", daily_open="500"),
        PERP: table(min_resting="500ms", order_rate="1000/1d"),
        BTC: table(order_rate="5/1s", large_notional="100000", daily_open="50"),
        ALICE: table(order_rate="50/1s"),
    }
)


def override(snap: Snapshot, ref: ScopeRef, kind: LimitKind, value: str, version: int,
             expires_ms: int = 0) -> None:  # fmt: skip
    fields = {"value": value, "reason": "r", "actor": "a", "updated_ms": "1",
              "expires_ms": str(expires_ms), "version": str(version)}  # fmt: skip
    snap.apply(FlagKind.LIMIT, override_id(ref, kind), fields, version)


def windows(resolver: LimitResolver, account: str, symbol: str, kind: LimitKind) -> list[str]:
    return [f"{w.value}@{w.source}" for w in resolver.effective(account, symbol, 0).rate(kind)]


def test_most_specific_window_of_each_length_wins() -> None:
    r = LimitResolver(snapshot(), POLICY)
    assert windows(r, "bob", "ETH-USDT", K.ORDER_RATE) == [
        "8/1s@policy:product:spot",
        "100/10s@policy:default",
    ]
    assert windows(r, "bob", "BTC-USDT", K.ORDER_RATE) == [
        "5/1s@policy:symbol:BTC-USDT",
        "100/10s@policy:default",
    ]
    assert windows(r, "bob", "BTC-PERP", K.ORDER_RATE) == [
        "10/1s@policy:default",
        "100/10s@policy:default",
        "1000/1d@policy:product:perpetual",
    ]
    assert windows(r, "alice", "BTC-USDT", K.ORDER_RATE) == [
        "50/1s@policy:account:alice",
        "100/10s@policy:default",
    ]


def test_scalars_and_daily_open_scope() -> None:
    r = LimitResolver(snapshot(), POLICY)
    btc = r.effective("bob", "BTC-USDT", 0)
    assert btc.large_notional is not None and btc.large_notional.value == Decimal(100000)
    assert btc.daily_open is not None and btc.daily_open.value == 50
    assert str(btc.daily_open_scope) == "symbol:BTC-USDT"  # counted on its own
    eth = r.effective("bob", "ETH-USDT", 0)
    assert eth.large_notional is None
    assert eth.daily_open is not None and eth.daily_open.value == 500
    assert str(eth.daily_open_scope) == "product:spot"
    perp = r.effective("bob", "BTC-PERP", 0)
    assert perp.min_resting_ms is not None and perp.min_resting_ms.value == 500
    assert str(perp.daily_open_scope) == "product:perpetual"
    assert not perp.tally  # no cancel ratio anywhere


def test_runtime_override_beats_the_file_at_its_scope_and_is_beaten_by_more_specific() -> None:
    snap = snapshot()
    r = LimitResolver(snap, POLICY)
    override(snap, DEFAULT_SCOPE, K.ORDER_RATE, "3/1s,30/10s", 1)
    assert windows(r, "bob", "BTC-PERP", K.ORDER_RATE)[:2] == [
        "3/1s@admin:default",
        "30/10s@admin:default",
    ]
    # The symbol's file value is more specific than a default override.
    assert windows(r, "bob", "BTC-USDT", K.ORDER_RATE)[0] == "5/1s@policy:symbol:BTC-USDT"
    override(snap, ALICE, K.ORDER_RATE, "7/1s", 2)
    assert windows(r, "alice", "BTC-USDT", K.ORDER_RATE)[0] == "7/1s@admin:account:alice"
    override(snap, BTC, K.CANCEL_RATIO, "min_orders=10,max_ratio=0.5", 3)
    assert r.effective("bob", "ETH-USDT", 0).tally  # a ratio somewhere: tally everywhere
    # Removing the override restores the file's value.
    snap.apply(FlagKind.LIMIT, override_id(ALICE, K.ORDER_RATE), None, 4)
    assert windows(r, "alice", "BTC-USDT", K.ORDER_RATE)[0] == "50/1s@policy:account:alice"


def test_lapsed_override_no_longer_applies() -> None:
    snap = snapshot()
    r = LimitResolver(snap, POLICY)
    override(snap, ALICE, K.DAILY_OPEN, "3", 1, expires_ms=1000)
    limits = r.effective("alice", "ETH-USDT", 999)
    assert limits.daily_open is not None and limits.daily_open.value == 3
    limits = r.effective("alice", "ETH-USDT", 1000)
    assert limits.daily_open is not None and limits.daily_open.value == 500


def test_policy_swap_and_unreadable_override() -> None:
    snap = snapshot()
    r = LimitResolver(snap, POLICY)
    assert r.effective("bob", "ETH-USDT", 0).daily_open is not None
    override(snap, ALICE, K.DAILY_OPEN, "lots", 1)  # written by something else: skipped
    r.set_policy(CounterPolicy())
    assert r.effective("alice", "ETH-USDT", 0).empty


def test_override_ids_round_trip() -> None:
    for ref in (DEFAULT_SCOPE, SPOT, BTC, ScopeRef(Scope.ACCOUNT, "a:b@c")):
        assert parse_override_id(override_id(ref, K.MIN_RESTING)) == (ref, K.MIN_RESTING)
