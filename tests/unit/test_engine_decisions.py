"""The engine reports every decision to its sink; shadow mode is applied in one place."""

from __future__ import annotations

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.decisions import Decision, Outcome, RequestIds, Stage
from gateway.engine import ORDER_METHODS, PreTradeEngine
from gateway.killswitch import Scope, kill_switch_check, parse_scope_key, scope_key
from gateway.model import FlagKind, SymbolSpec
from gateway.reasons import Denial, Reason
from gateway.snapshot import Snapshot
from gateway.validation import OrderCall
from tests.support.rpc import limit_order

PLACE = ORDER_METHODS["/pretrade.v1.OrderEntry/PlaceOrder"]
CANCEL = ORDER_METHODS["/pretrade.v1.OrderEntry/CancelOrder"]
SPECS = {
    "BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT"),
    "BTC-PERP": SymbolSpec("BTC-PERP", "perpetual", "BTC", "USDT"),
}
NOW = 1_700_000_000_000


class Recorder:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.upstreams: list[tuple[str, float, str | None]] = []

    def decision(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def upstream(self, method: str, seconds: float, code: str | None) -> None:
        self.upstreams.append((method, seconds, code))


def flag(snapshot: Snapshot, kind: FlagKind, key: str, value: int = 1, expires_ms: int = 0) -> None:
    fields = {"value": str(value), "reason": "r", "actor": "ops", "updated_ms": str(NOW),
              "expires_ms": str(expires_ms), "version": "1"}  # fmt: skip
    snapshot.apply(kind, key, fields, 1)


def engine() -> tuple[PreTradeEngine, Recorder, Snapshot]:
    snapshot = Snapshot(SPECS)
    recorder = Recorder()
    return PreTradeEngine(snapshot, clock=lambda: NOW, sink=recorder), recorder, snapshot


async def test_accept_refuse_and_validation_are_reported() -> None:
    eng, rec, snapshot = engine()
    assert await eng.screen(PLACE, limit_order("alice"), request_id="rid-1") is None
    flag(snapshot, FlagKind.ACCOUNT_STATE, "alice", 3)  # FROZEN
    denial = await eng.screen(PLACE, limit_order("alice"))
    assert denial is not None and denial.reason is Reason.ACCOUNT_FROZEN
    assert (await eng.screen_bytes(PLACE, b"\xff\xff")) is not None
    bad = await eng.screen(PLACE, limit_order("bob", quantity="-1"))
    assert bad is not None and bad.reason is Reason.INVALID_REQUEST

    accept, refuse, garbage, invalid = rec.decisions
    assert (accept.request_id, accept.outcome, accept.denial, accept.stage) == (
        "rid-1",
        Outcome.ACCEPT,
        None,
        Stage.LOCAL,
    )
    assert (accept.method, accept.account_id, accept.symbol, accept.at_ms) == (
        "PlaceOrder",
        "alice",
        "BTC-USDT",
        NOW,
    )
    assert accept.redis_ns == 0 and accept.local_ns > 0
    assert refuse.outcome is Outcome.REFUSE and refuse.denial is denial and refuse.request_id
    assert (garbage.stage, garbage.account_id, garbage.call) == (Stage.VALIDATION, "", None)
    assert (invalid.stage, invalid.account_id, invalid.symbol) == (
        Stage.VALIDATION,
        "bob",
        "BTC-USDT",
    )
    assert len({d.request_id for d in rec.decisions}) == 4


async def test_shadowed_denial_lets_the_next_check_decide() -> None:
    eng, rec, snapshot = engine()
    flag(snapshot, FlagKind.ACCOUNT_STATE, "alice", 3)
    flag(snapshot, FlagKind.SYMBOL_STATUS, "BTC-USDT", 2)  # HALTED
    flag(snapshot, FlagKind.SHADOW, "ACCOUNT_FROZEN")
    denial = await eng.screen(PLACE, limit_order("alice"))
    assert denial is not None and denial.reason is Reason.SYMBOL_HALTED
    assert [d.reason for d in rec.decisions[-1].shadowed] == [Reason.ACCOUNT_FROZEN]
    flag(snapshot, FlagKind.SHADOW, "*")
    assert await eng.screen(PLACE, limit_order("alice")) is None
    last = rec.decisions[-1]
    assert last.outcome is Outcome.SHADOW and last.denial is not None
    assert [d.reason for d in last.shadowed] == [Reason.ACCOUNT_FROZEN, Reason.SYMBOL_HALTED]


async def test_shadow_lapses_and_never_covers_kill_switch_or_invalid() -> None:
    eng, _, snapshot = engine()
    flag(snapshot, FlagKind.ACCOUNT_STATE, "alice", 3)
    flag(snapshot, FlagKind.SHADOW, "ACCOUNT_FROZEN", expires_ms=NOW)  # lapsed at NOW
    assert await eng.screen(PLACE, limit_order("alice")) is not None
    flag(snapshot, FlagKind.SHADOW, "*")
    flag(snapshot, FlagKind.KILL_SWITCH, "venue")
    denial = await eng.screen(PLACE, limit_order("alice"))
    assert denial is not None and denial.reason is Reason.KILL_SWITCH
    assert not eng.shadow.covers(Reason.INVALID_REQUEST, NOW)


class RefusingCounters:
    """Stands in for the counter gate (its Redis side is tested against real Redis elsewhere)."""

    def __init__(self) -> None:
        self.calls: list[OrderCall] = []

    def plan(self, call: OrderCall) -> object:
        return object()  # anything but None: the call goes to consume()

    async def consume(self, call: OrderCall, plan: object) -> Denial:
        self.calls.append(call)
        return Denial(Reason.SYMBOL_HALTED, "stand-in for a counter refusal")


async def test_counter_step_is_timed_and_shadowable() -> None:
    eng, rec, snapshot = engine()
    gate = RefusingCounters()
    calls = gate.calls
    eng.counters = gate  # type: ignore[assignment]
    denial = await eng.screen(PLACE, limit_order("alice"))
    assert denial is not None and len(calls) == 1
    assert rec.decisions[-1].stage is Stage.REDIS and rec.decisions[-1].redis_ns > 0
    flag(snapshot, FlagKind.SHADOW, "SYMBOL_HALTED")
    assert await eng.screen(PLACE, limit_order("alice")) is None
    assert rec.decisions[-1].outcome is Outcome.SHADOW
    flag(snapshot, FlagKind.ACCOUNT_STATE, "bob", 3)
    assert await eng.screen(PLACE, limit_order("bob")) is not None
    assert len(calls) == 2, "a call refused locally must not reach Redis"
    assert rec.decisions[-1].stage is Stage.LOCAL


def test_request_ids_are_unique_and_prefixed() -> None:
    a, b = RequestIds(), RequestIds()
    ids = {a.next() for _ in range(1000)} | {b.next() for _ in range(1000)}
    assert len(ids) == 2000 and a.prefix != b.prefix


def test_scope_keys_round_trip() -> None:
    for scope, ident in (
        (Scope.VENUE, ""),
        (Scope.PRODUCT, "spot"),
        (Scope.ACCOUNT, "a:b"),
        (Scope.GROUP, "g"),
    ):
        assert parse_scope_key(scope_key(scope, ident)) == (scope, ident)


def call(action: str, account: str = "alice", symbol: str = "BTC-USDT") -> OrderCall:
    from gateway.model import Action

    return OrderCall(action=Action(action), account_id=account, symbol=symbol)


def test_kill_switch_check_scopes_and_cancels() -> None:
    snapshot = Snapshot(SPECS)
    check = kill_switch_check(snapshot)
    assert check(call("place"), NOW) is None
    flag(snapshot, FlagKind.KILL_SWITCH, "product:perpetual")
    assert check(call("place"), NOW) is None
    denial = check(call("amend", symbol="BTC-PERP"), NOW)
    assert denial is not None and denial.metadata == {
        "limit": "kill_switch",
        "scope": "product",
        "scope_id": "perpetual",
    }
    assert check(call("cancel", symbol="BTC-PERP"), NOW) is None
    flag(snapshot, FlagKind.KILL_SWITCH, "account:alice", expires_ms=NOW + 1)
    assert check(call("place"), NOW) is not None
    assert check(call("place"), NOW + 1) is None, "lapsed"
    assert check(call("place", account="bob"), NOW) is None
    flag(snapshot, FlagKind.KILL_SWITCH, "group:g1")
    assert check(call("place", account="bob"), NOW) is None, "no account is in a group yet"
    flag(snapshot, FlagKind.KILL_SWITCH, "venue")
    denial = check(call("place", account="bob", symbol="NOPE"), NOW)
    assert denial is not None and denial.metadata["scope"] == "venue"


async def test_cancel_passes_a_venue_kill_switch() -> None:
    eng, _, snapshot = engine()
    flag(snapshot, FlagKind.KILL_SWITCH, "venue")
    cancel = pb.CancelOrderRequest(account_id="alice", symbol="BTC-USDT", order_id="X-1")
    assert await eng.screen(CANCEL, cancel) is None
