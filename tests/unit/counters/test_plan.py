"""What each call touches: the ops of its plan, without Redis."""

from decimal import Decimal

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.keys import counting_subject, day_key, order_record_key, rate_key
from gateway.counters.limits import DEFAULT_SCOPE, CounterPolicy, LimitKind, parse_value
from gateway.counters.plan import build_plan, build_usage_plan
from gateway.counters.resolve import LimitResolver
from gateway.model import Action, SymbolSpec
from gateway.snapshot import Snapshot
from gateway.validation import OrderCall

K = LimitKind
SUBJECT = counting_subject("alice")
FULL = {
    K.ORDER_RATE: "10/1s,5000/1d",
    K.CANCEL_RATE: "20/1s",
    K.LARGE_ORDER_RATE: "2/1s",
    K.LARGE_CANCEL_RATE: "3/1s",
    K.LARGE_NOTIONAL: "1000",
    K.DAILY_OPEN: "100",
    K.CANCEL_RATIO: "min_orders=10,max_ratio=0.9",
    K.MIN_RESTING: "500ms",
}


def plan_for(call: OrderCall, limits: dict[LimitKind, str] = FULL, price_of=None):  # type: ignore[no-untyped-def]
    policy = CounterPolicy(
        tables={DEFAULT_SCOPE: {k: parse_value(k, v) for k, v in limits.items()}}
    )
    snap = Snapshot({"BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT")})
    effective = LimitResolver(snap, policy).effective(call.account_id, call.symbol, 0)
    return build_plan(call, effective, SUBJECT, policy, price_of)


def place(**kw: object) -> OrderCall:
    values: dict[str, object] = dict(action=Action.PLACE, account_id="alice", symbol="BTC-USDT",
                                     order_type=pb.ORDER_TYPE_LIMIT, quantity=Decimal(1),
                                     price=Decimal(100))  # fmt: skip
    values.update(kw)
    return OrderCall(**values)  # type: ignore[arg-type]


def described(plan) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for (code, key, a, b, c), check in zip(plan.ops, plan.checks, strict=True):
        name = plan.keys[int(key) - 1] if key != "0" else "-"
        label = f"{check.kind.value}/{check.window}" if check else ""
        out.append(" ".join(x for x in (code, name, a, b, c, label) if x))
    return out


def test_small_place() -> None:
    plan = plan_for(place(client_order_id="c1"))
    assert described(plan) == [
        f"W {rate_key(SUBJECT, K.ORDER_RATE, 1000)} 10 1000 order_rate/1s",
        f"B {rate_key(SUBJECT, K.ORDER_RATE, 86_400_000, True)} 5000 86400000 order_rate/1d",
        f"D {day_key(SUBJECT)} 100 open:p:spot daily_open/day",
        f"T {day_key(SUBJECT)} orders",
        f"S {order_record_key(SUBJECT, 'alice', client_id='c1')} 1500 0",
    ]
    assert plan.record is not None and not plan.record.large and plan.record.ttl_ms == 1500
    assert len(set(plan.keys)) == len(plan.keys)


def test_large_reduce_only_place_without_client_id() -> None:
    plan = plan_for(place(quantity=Decimal(10), reduce_only=True))  # notional exactly 1000
    assert [d.split()[0] + " " + d.split()[-1] for d in described(plan)] == [
        "W order_rate/1s",
        "B order_rate/1d",
        "W large_order_rate/1s",
        "T orders",
    ]
    assert plan.record is not None and plan.record.large
    assert plan.record.ttl_ms == CounterPolicy().order_memory_ms


def test_just_below_threshold_is_not_large() -> None:
    plan = plan_for(place(quantity=Decimal("9.99")))
    assert not any(c and c.kind is K.LARGE_ORDER_RATE for c in plan.checks)


def test_market_orders_are_large_only_with_a_reference_price() -> None:
    market = place(order_type=pb.ORDER_TYPE_MARKET, price=None, quantity=Decimal(20))
    assert not any(c and c.kind is K.LARGE_ORDER_RATE for c in plan_for(market).checks)
    priced = plan_for(market, price_of=lambda symbol: Decimal(50))
    assert any(c and c.kind is K.LARGE_ORDER_RATE for c in priced.checks)


def test_cancel() -> None:
    call = OrderCall(Action.CANCEL, "alice", "BTC-USDT", order_id="X-1", client_order_id="c1")
    assert described(plan_for(call)) == [
        "O - 1 2",
        "M - 500 min_resting/500ms",
        f"W {rate_key(SUBJECT, K.CANCEL_RATE, 1000)} 20 1000 cancel_rate/1s",
        f"W {rate_key(SUBJECT, K.LARGE_CANCEL_RATE, 1000)} 3 1000 L large_cancel_rate/1s",
        f"R {day_key(SUBJECT)} 10 9 10 cancel_ratio/day",
        f"T {day_key(SUBJECT)} cancels",
    ]
    plan = plan_for(call)
    assert plan.keys[:2] == (
        order_record_key(SUBJECT, "alice", order_id="X-1"),
        order_record_key(SUBJECT, "alice", client_id="c1"),
    )


def test_amend_large_known_unknown_and_small() -> None:
    both = OrderCall(Action.AMEND, "alice", "BTC-USDT", order_id="X-1",
                     quantity=Decimal(20), price=Decimal(100))  # fmt: skip
    steps = [d.split()[0] for d in described(plan_for(both))]
    assert steps == ["O", "M", "W", "B", "W", "U"]
    only_price = OrderCall(Action.AMEND, "alice", "BTC-USDT", order_id="X-1", price=Decimal(1))
    assert described(plan_for(only_price))[-1].endswith("L large_order_rate/1s")
    small = OrderCall(Action.AMEND, "alice", "BTC-USDT", order_id="X-1",
                      quantity=Decimal(1), price=Decimal(1))  # fmt: skip
    assert [d.split()[0] for d in described(plan_for(small))] == ["O", "M", "W", "B", "U"]
    assert described(plan_for(small))[-1].endswith(" 0")


def test_nothing_configured_means_nothing_to_do() -> None:
    call = place()
    assert plan_for(call, {}).empty
    assert plan_for(call, {K.CANCEL_RATE: "1/1s"}).empty  # a place touches no cancel cap


def test_usage_plan_reads_every_counter() -> None:
    policy = CounterPolicy(tables={DEFAULT_SCOPE: {k: parse_value(k, v) for k, v in FULL.items()}})
    snap = Snapshot({"BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT")})
    limits = LimitResolver(snap, policy).effective("alice", "BTC-USDT", 0)
    plan = build_usage_plan(limits, SUBJECT, policy)
    assert [f"{c.kind.value}/{c.window}" for c in plan.checks if c] == [
        "order_rate/1s", "order_rate/1d", "cancel_rate/1s", "large_order_rate/1s",
        "large_cancel_rate/1s", "daily_open/day", "cancel_ratio/day",
    ]  # fmt: skip


def test_a_place_with_a_client_order_id_carries_its_retry_record() -> None:
    from gateway.counters.keys import idempotency_key
    from gateway.reliability.idempotency import FREE_RETRIES

    policy = CounterPolicy(
        tables={DEFAULT_SCOPE: {K.ORDER_RATE: parse_value(K.ORDER_RATE, "5/1s")}}
    )
    snap = Snapshot({"BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT")})
    limits = LimitResolver(snap, policy).effective("alice", "BTC-USDT", 0)
    key = idempotency_key(SUBJECT, "alice", "c-1")
    plan = build_plan(place(client_order_id="c-1"), limits, SUBJECT, policy, idempotency_ms=60_000)
    assert plan.idempotency_key == key
    assert described(plan)[-1] == f"I {key} 60000 {FREE_RETRIES}"
    # Off, without a client order id, or when the place spends nothing: no record.
    assert not build_plan(place(client_order_id="c-1"), limits, SUBJECT, policy).idempotency_key
    assert not build_plan(place(), limits, SUBJECT, policy, idempotency_ms=60_000).idempotency_key
    cancels_only = CounterPolicy(
        tables={DEFAULT_SCOPE: {K.CANCEL_RATE: parse_value(K.CANCEL_RATE, "5/1s")}}
    )
    limits = LimitResolver(snap, cancels_only).effective("alice", "BTC-USDT", 0)
    plan = build_plan(
        place(client_order_id="c-1"), limits, SUBJECT, cancels_only, idempotency_ms=1000
    )
    assert not plan.idempotency_key


def test_places_sharing_one_limits_object_each_get_their_own_plan() -> None:
    """What places have in common is built once per limits object; what differs (the
    subject, large or not, reduce-only or not, the client order id) never leaks from one
    plan into another."""
    policy = CounterPolicy(tables={DEFAULT_SCOPE: {k: parse_value(k, v) for k, v in FULL.items()}})
    snap = Snapshot({"BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT")})
    limits = LimitResolver(snap, policy).effective("alice", "BTC-USDT", 0)
    bob = counting_subject("bob")

    def fresh(call: OrderCall, subject: str = SUBJECT, idempotency_ms: int = 0) -> list[str]:
        # Another resolver: limits equal in value but another object, so nothing is reused.
        other = LimitResolver(snap, policy).effective(call.account_id, "BTC-USDT", 0)
        return described(build_plan(call, other, subject, policy, None, idempotency_ms))

    calls = [
        (place(), SUBJECT, 0),
        (place(account_id="bob"), bob, 0),
        (place(quantity=Decimal(10)), SUBJECT, 0),  # large
        (place(reduce_only=True), SUBJECT, 0),
        (place(client_order_id="c-1"), SUBJECT, 60_000),
        (place(client_order_id="c-2", account_id="bob"), bob, 60_000),
        (place(), SUBJECT, 60_000),
    ]
    for _ in range(2):  # the second round finds every common part already built
        for call, subject, idempotency_ms in calls:
            plan = build_plan(call, limits, subject, policy, None, idempotency_ms)
            assert described(plan) == fresh(call, subject, idempotency_ms)
            assert all(subject in key for key in plan.keys)
            assert plan.record is not None and plan.record.account_id == call.account_id
    retried = build_plan(place(client_order_id="c-3"), limits, SUBJECT, policy, None, 1000)
    assert [d.split()[0] for d in described(retried)] == ["W", "B", "D", "T", "S", "I"]
    assert retried.idempotency_key.endswith("c-3")
    assert [d.split()[0] for d in described(build_plan(place(), limits, SUBJECT, policy))] == [
        "W", "B", "D", "T",
    ]  # fmt: skip
