"""Audit trail, request ids, kill switch, shadow mode and metrics, in both deployments."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import errors_pb2
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from tests.support.ops import OpsDeployment, eventually, ops_deployment, request_id_of, scrape
from tests.support.rpc import limit_order, refused

R = errors_pb2.Reason
VENUE, PRODUCT, ACCOUNT, GROUP = (
    apb.KILL_SWITCH_SCOPE_VENUE,
    apb.KILL_SWITCH_SCOPE_PRODUCT,
    apb.KILL_SWITCH_SCOPE_ACCOUNT,
    apb.KILL_SWITCH_SCOPE_GROUP,
)


@pytest.fixture(params=["proxy", "interceptor"])
async def d(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[OpsDeployment]:
    async with ops_deployment(request.param, redis_url) as deployment:
        yield deployment


async def decisions(d: OpsDeployment, **filters: object) -> list[apb.DecisionRecord]:
    await d.flush()
    reply = await d.clients.admin.ListDecisions(apb.ListDecisionsRequest(**filters))  # type: ignore[arg-type]
    return list(reply.decisions)


def kill(scope: int, ident: str = "", ttl_ms: int | None = None) -> apb.KillSwitchRequest:
    request = apb.KillSwitchRequest(scope=scope, id=ident, reason="incident 42", actor="ops")  # type: ignore[arg-type]
    if ttl_ms is not None:
        request.ttl.CopyFrom(
            duration_pb2.Duration(seconds=ttl_ms // 1000, nanos=(ttl_ms % 1000) * 10**6)
        )
    return request


def release(scope: int, ident: str = "") -> apb.ReleaseKillSwitchRequest:
    return apb.ReleaseKillSwitchRequest(scope=scope, id=ident, reason="resolved", actor="ops")  # type: ignore[arg-type]


# -- request ids and the audit trail -------------------------------------------------------


async def test_request_id_on_accepts_and_refusals_matches_the_audit_record(
    d: OpsDeployment,
) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    accepted_id, error = await request_id_of(orders.PlaceOrder(limit_order("bob")))
    assert error is None and accepted_id
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="kyc", actor="ops"
        )
    )
    refused_id, error = await request_id_of(orders.PlaceOrder(limit_order("alice")))
    assert isinstance(error, grpc.aio.AioRpcError) and refused_id and refused_id != accepted_id

    records = {r.request_id: r for r in await decisions(d)}
    refusal = records[refused_id]
    assert refusal.decision == apb.DECISION_REFUSE
    assert refusal.reason == R.Value("REASON_ACCOUNT_FROZEN")
    assert (refusal.account_id, refusal.symbol, refusal.method) == (
        "alice",
        "BTC-USDT",
        "PlaceOrder",
    )
    assert refusal.limit == "account_state"
    assert dict(refusal.detail) == {
        "limit": "account_state",
        "account_id": "alice",
        "state": "FROZEN",
    }
    assert refusal.policy_version == d.keeper.policy.version
    assert refusal.instance == d.keeper.ops.instance
    assert refusal.stage == "local"
    assert refusal.time.ToMilliseconds() > 0
    accept = records[accepted_id]
    assert accept.decision == apb.DECISION_ACCEPT and accept.reason == 0


async def _ignore_refusal(call: Any) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call


async def test_every_refusal_kind_is_recorded(d: OpsDeployment) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="frozen", state=apb.ACCOUNT_STATE_FROZEN, reason="r", actor="ops"
        )
    )
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="reducer", state=apb.ACCOUNT_STATE_REDUCE_ONLY, reason="r", actor="ops"
        )
    )
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="gone", state=apb.ACCOUNT_STATE_DEACTIVATED, reason="r", actor="ops"
        )
    )
    for symbol, status in (
        ("ETH-USDT", apb.SYMBOL_STATUS_HALTED),
        ("SOL-USDT", apb.SYMBOL_STATUS_REDUCE_ONLY),
        ("ETH-USDT-PERP", apb.SYMBOL_STATUS_DELISTED),
    ):
        await admin.SetSymbolStatus(
            apb.SetSymbolStatusRequest(symbol=symbol, status=status, reason="r", actor="ops")
        )  # type: ignore[arg-type]
    await admin.KillSwitch(kill(ACCOUNT, "killed"))
    # Order sanity: a pinned reference price for the band, a symbol closed to programs.
    await admin.SetReferencePrice(
        apb.SetReferencePriceRequest(symbol="BTC-USDT", price="100", reason="r", actor="ops")
    )
    await admin.UpsertSymbol(
        apb.UpsertSymbolRequest(
            spec=apb.SymbolSpec(
                symbol="ADA-USDT", product="spot", base_asset="ADA", quote_asset="USDT",
                program_trading_forbidden=True,
            ),
            reason="r", actor="ops",
        )
    )  # fmt: skip
    # Behavioural limits, one account each.
    for account, kind, value in (
        ("rate", apb.LIMIT_KIND_ORDER_RATE, "1/1h"),
        ("cancels", apb.LIMIT_KIND_CANCEL_RATE, "1/1h"),
        ("large", apb.LIMIT_KIND_LARGE_NOTIONAL, "1000"),
        ("large", apb.LIMIT_KIND_LARGE_ORDER_RATE, "1/1h"),
        ("daily", apb.LIMIT_KIND_DAILY_OPEN, "1"),
        ("ratio", apb.LIMIT_KIND_CANCEL_RATIO, "min_orders=1,max_ratio=0.5"),
        ("hft", apb.LIMIT_KIND_MIN_RESTING, "1h"),
    ):
        await admin.SetLimit(
            apb.SetLimitRequest(
                scope=apb.LIMIT_SCOPE_ACCOUNT, key=account, kind=kind, value=value,  # type: ignore[arg-type]
                reason="r", actor="ops",
            )
        )  # fmt: skip

    def cancel(account: str, **ref: str) -> Any:
        request = pb.CancelOrderRequest(account_id=account, symbol="BTC-USDT", **ref)
        return orders.CancelOrder(request)

    # Linked accounts: wash's resting ask, then trade's crossing bid is a self-trade.
    await admin.LinkAccounts(
        apb.LinkAccountsRequest(account_ids=["wash", "trade"], reason="same device", actor="ops")
    )
    await orders.PlaceOrder(limit_order("wash", side=pb.SIDE_SELL, price="101"))
    # Calls that use up a budget first, so that the case after them is refused.
    await orders.PlaceOrder(limit_order("rate"))
    await _ignore_refusal(cancel("cancels", order_id="X-404"))
    await orders.PlaceOrder(limit_order("large", quantity="11"))
    await orders.PlaceOrder(limit_order("daily"))
    await orders.PlaceOrder(limit_order("ratio"))
    await orders.PlaceOrder(limit_order("hft", client_order_id="young"))
    cases: dict[str, Any] = {
        "INVALID_REQUEST": lambda: orders.PlaceOrder(limit_order("bob", quantity="NaN")),
        "ACCOUNT_FROZEN": lambda: orders.PlaceOrder(limit_order("frozen")),
        "ACCOUNT_REDUCE_ONLY": lambda: orders.PlaceOrder(limit_order("reducer")),
        "ACCOUNT_DEACTIVATED": lambda: orders.PlaceOrder(limit_order("gone")),
        "SYMBOL_UNKNOWN": lambda: orders.PlaceOrder(limit_order("bob", "DOGE-USDT")),
        "SYMBOL_HALTED": lambda: orders.PlaceOrder(limit_order("bob", "ETH-USDT")),
        "SYMBOL_REDUCE_ONLY": lambda: orders.PlaceOrder(limit_order("bob", "SOL-USDT")),
        "SYMBOL_DELISTED": lambda: orders.PlaceOrder(limit_order("bob", "ETH-USDT-PERP")),
        "KILL_SWITCH": lambda: orders.PlaceOrder(limit_order("killed")),
        "LEVERAGE_EXCEEDED": lambda: orders.PlaceOrder(
            limit_order("bob", "BTC-USDT-PERP", quantity="0.01", price="60000", leverage=200)
        ),
        "ORDER_QTY_OUT_OF_RANGE": lambda: orders.PlaceOrder(limit_order("bob", quantity="10000")),
        "ORDER_NOTIONAL_OUT_OF_RANGE": lambda: orders.PlaceOrder(
            limit_order("bob", quantity="0.00001")
        ),
        "PRICE_TICK_INVALID": lambda: orders.PlaceOrder(limit_order("bob", price="100.001")),
        "QTY_STEP_INVALID": lambda: orders.PlaceOrder(limit_order("bob", quantity="0.000011")),
        "PRICE_OUT_OF_BAND": lambda: orders.PlaceOrder(limit_order("bob", price="200")),
        "REFERENCE_PRICE_UNAVAILABLE": lambda: orders.PlaceOrder(
            limit_order(
                "bob", "BTC-USDT-PERP", type=pb.ORDER_TYPE_MARKET, price="", quantity="0.01"
            )
        ),
        "PROGRAM_TRADING_FORBIDDEN": lambda: orders.PlaceOrder(
            limit_order("bob", "ADA-USDT", quantity="10", price="1")
        ),
        "ORDER_RATE_EXCEEDED": lambda: orders.PlaceOrder(limit_order("rate")),
        "CANCEL_RATE_EXCEEDED": lambda: cancel("cancels", order_id="X-405"),
        "LARGE_ORDER_RATE_EXCEEDED": lambda: orders.PlaceOrder(limit_order("large", quantity="11")),
        "DAILY_POSITION_LIMIT": lambda: orders.PlaceOrder(limit_order("daily")),
        "CANCEL_RATIO_EXCEEDED": lambda: cancel("ratio", order_id="X-406"),
        "MIN_RESTING_TIME": lambda: cancel("hft", client_order_id="young"),
        "SELF_TRADE": lambda: orders.PlaceOrder(limit_order("trade", price="101")),
    }
    # Reasons that need an outage are recorded by the fault tests, not here; the key
    # checks (authentication is off here) by tests/e2e/test_auth.py.
    needs_outage = {"COUNTERS_UNAVAILABLE", "STORE_UNAVAILABLE"}
    needs_auth = {"UNAUTHENTICATED", "ACCOUNT_MISMATCH"}
    all_reasons = {n.removeprefix("REASON_") for n in R.keys()} - {"UNSPECIFIED"}
    assert set(cases) == all_reasons - needs_outage - needs_auth, "a reason has no case"
    ids = {}
    for reason, make_call in cases.items():
        ids[reason], error = await request_id_of(make_call())
        assert error is not None, reason
    # A malformed message on the wire (the proxy parses bytes itself).
    records = {r.request_id: r for r in await decisions(d, decision=apb.DECISION_REFUSE)}
    for reason, request_id in ids.items():
        record = records[request_id]
        assert R.Name(record.reason) == f"REASON_{reason}", reason
        assert record.message
    assert records[ids["INVALID_REQUEST"]].stage == "validation"
    assert records[ids["INVALID_REQUEST"]].account_id == "bob"
    assert dict(records[ids["KILL_SWITCH"]].detail) == {
        "limit": "kill_switch",
        "scope": "account",
        "scope_id": "killed",
    }
    _ = orders


async def test_list_filters_and_paging(d: OpsDeployment) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    await admin.SetSymbolStatus(
        apb.SetSymbolStatusRequest(
            symbol="ETH-USDT", status=apb.SYMBOL_STATUS_HALTED, reason="r", actor="ops"
        )
    )
    for i in range(7):
        await refused(orders.PlaceOrder(limit_order(f"acct-{i % 2}", "ETH-USDT")))
    await orders.PlaceOrder(limit_order("acct-0", "BTC-USDT"))
    await d.flush()

    assert len(await decisions(d, account_id="acct-0")) == 5  # 4 refusals, 1 accept
    assert len(await decisions(d, account_id="acct-0", decision=apb.DECISION_REFUSE)) == 4
    assert len(await decisions(d, symbol="ETH-USDT", reason=R.Value("REASON_SYMBOL_HALTED"))) == 7
    assert await decisions(d, reason=R.Value("REASON_ACCOUNT_FROZEN")) == []
    assert await decisions(d, group_id="g1") == []

    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await admin.ListDecisions(
            apb.ListDecisionsRequest(symbol="ETH-USDT", page_size=3, page_token=token)
        )
        assert len(page.decisions) <= 3
        seen.extend(r.id for r in page.decisions)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, key=lambda i: tuple(map(int, i.split("-"))), reverse=True), (
        "newest first"
    )

    # Time range: everything is after a minute ago, nothing is before it.
    minute_ago = timestamp_pb2.Timestamp()
    minute_ago.GetCurrentTime()
    minute_ago.FromMilliseconds(minute_ago.ToMilliseconds() - 60_000)
    assert len(await decisions(d, symbol="ETH-USDT", since=minute_ago)) == 7
    assert await decisions(d, symbol="ETH-USDT", until=minute_ago) == []


async def test_upstream_errors_carry_the_request_id(d: OpsDeployment) -> None:
    call = d.clients.orders.CancelOrder(
        pb.CancelOrderRequest(account_id="bob", symbol="BTC-USDT", order_id="X-404")
    )
    request_id, error = await request_id_of(call)
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.NOT_FOUND
    assert request_id
    from prometheus_client import generate_latest

    text = generate_latest(d.keeper.ops.metrics.registry).decode()
    assert 'pretrade_upstream_errors_total{code="NOT_FOUND",method="CancelOrder"} 1.0' in text


async def test_list_rejects_bad_arguments(d: OpsDeployment) -> None:
    admin = d.clients.admin
    r = await refused(
        admin.ListDecisions(apb.ListDecisionsRequest(page_size=5000, page_token="nope"))
    )
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(r.bad_fields) == {"page_size", "page_token"}
    r = await refused(admin.ListDecisions(apb.ListDecisionsRequest(reason=999)))  # type: ignore[arg-type]
    assert set(r.bad_fields) == {"reason"}


async def test_watch_decisions_live(d: OpsDeployment) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    received: list[apb.DecisionRecord] = []

    async def collect() -> None:
        async for record in stream:
            received.append(record)
            if len(received) == 2:
                return

    await refused(orders.PlaceOrder(limit_order("before", "DOGE-USDT")))
    await d.flush()  # recorded before the watch: not part of it
    stream = admin.WatchDecisions(apb.WatchDecisionsRequest(decision=apb.DECISION_REFUSE))
    await stream.wait_for_connection()  # headers: the watch has fixed its start
    task = asyncio.create_task(collect())
    await orders.PlaceOrder(limit_order("bob"))  # accepted: filtered out
    await refused(orders.PlaceOrder(limit_order("bob", "DOGE-USDT")))
    await refused(orders.PlaceOrder(limit_order("carol", quantity="-1")))
    await asyncio.wait_for(task, timeout=10)
    stream.cancel()
    assert [(r.account_id, R.Name(r.reason)) for r in received] == [
        ("bob", "REASON_SYMBOL_UNKNOWN"),
        ("carol", "REASON_INVALID_REQUEST"),
    ]

    # Resuming after a known id replays what came after it.
    replay = admin.WatchDecisions(apb.WatchDecisionsRequest(after_id=received[0].id))
    first = await asyncio.wait_for(replay.read(), timeout=10)
    replay.cancel()
    assert first.id == received[1].id


async def test_every_admin_action_is_recorded(d: OpsDeployment) -> None:
    admin = d.clients.admin
    calls = [
        ("set_account_state", "alice", lambda: admin.SetAccountState(apb.SetAccountStateRequest(
            account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="kyc", actor="ann"))),
        ("set_symbol_status", "ETH-USDT", lambda: admin.SetSymbolStatus(apb.SetSymbolStatusRequest(
            symbol="ETH-USDT", status=apb.SYMBOL_STATUS_HALTED, reason="vol", actor="ann"))),
        ("upsert_symbol", "DOGE-USDT", lambda: admin.UpsertSymbol(apb.UpsertSymbolRequest(
            spec=apb.SymbolSpec(symbol="DOGE-USDT", product="spot", base_asset="DOGE", quote_asset="USDT"),
            reason="listing", actor="ann"))),
        ("kill_switch", "product:perpetual", lambda: admin.KillSwitch(kill(PRODUCT, "perpetual", ttl_ms=60_000))),
        ("release_kill_switch", "product:perpetual", lambda: admin.ReleaseKillSwitch(release(PRODUCT, "perpetual"))),
        ("set_shadow", "SYMBOL_HALTED", lambda: admin.SetShadow(apb.SetShadowRequest(
            rule="SYMBOL_HALTED", enabled=True, reason="trial", actor="ann"))),
        ("set_leverage_limit", "account_id:alice", lambda: admin.SetLeverageLimit(apb.SetLeverageLimitRequest(
            account_id="alice", max_leverage=5, reason="risk", actor="ann"))),
        ("set_reference_price", "BTC-USDT", lambda: admin.SetReferencePrice(apb.SetReferencePriceRequest(
            symbol="BTC-USDT", price="60000", reason="bad index", actor="ann"))),
        ("set_limit", "account:alice:order_rate", lambda: admin.SetLimit(apb.SetLimitRequest(
            scope=apb.LIMIT_SCOPE_ACCOUNT, key="alice", kind=apb.LIMIT_KIND_ORDER_RATE,
            value="5/1s", reason="abuse", actor="ann"))),
        ("remove_limit", "account:alice:order_rate", lambda: admin.RemoveLimit(apb.RemoveLimitRequest(
            scope=apb.LIMIT_SCOPE_ACCOUNT, key="alice", kind=apb.LIMIT_KIND_ORDER_RATE,
            reason="cleared", actor="ann"))),
    ]  # fmt: skip
    ids = []
    for _, _, call in calls:
        request_id, error = await request_id_of(call())  # one after the other
        assert error is None and request_id
        ids.append(request_id)
    listed = list((await admin.ListAdminActions(apb.ListAdminActionsRequest())).actions)
    assert [(a.action, a.target) for a in reversed(listed)] == [(c[0], c[1]) for c in calls]
    assert [a.request_id for a in reversed(listed)] == ids
    by_action = {a.action: a for a in listed}
    frozen = by_action["set_account_state"]
    assert (frozen.actor, frozen.reason, frozen.old_value, frozen.new_value) == (
        "ann",
        "kyc",
        "ACTIVE",
        "FROZEN",
    )
    assert json.loads(by_action["upsert_symbol"].new_value)["base_asset"] == "DOGE"
    assert by_action["upsert_symbol"].old_value == ""
    engaged = by_action["kill_switch"]
    assert (engaged.old_value, engaged.new_value, engaged.ttl_ms) == ("released", "engaged", 60_000)
    assert by_action["release_kill_switch"].old_value == "engaged"
    assert (
        by_action["set_reference_price"].old_value,
        by_action["set_reference_price"].new_value,
    ) == ("", "60000")
    assert (by_action["set_limit"].new_value, by_action["remove_limit"].old_value) == (
        "5/1s",
        "5/1s",
    )
    assert (by_action["set_shadow"].old_value, by_action["set_shadow"].new_value) == (
        "enforce",
        "shadow",
    )
    only = await admin.ListAdminActions(apb.ListAdminActionsRequest(action="kill_switch"))
    assert [a.target for a in only.actions] == ["product:perpetual"]
    by_target = await admin.ListAdminActions(
        apb.ListAdminActionsRequest(target="alice", actor="ann")
    )
    assert [a.action for a in by_target.actions] == ["set_account_state"]


# -- kill switch -----------------------------------------------------------------------------


async def _outcome(d: OpsDeployment, account: str, symbol: str) -> str:
    try:
        await d.clients.orders.PlaceOrder(limit_order(account, symbol))
    except grpc.aio.AioRpcError as exc:
        from tests.support.rpc import refusal

        return refusal(exc).reason
    return "ok"


@pytest.mark.parametrize(
    ("scope", "ident", "halted", "free"),
    [
        (VENUE, "", [("alice", "BTC-USDT"), ("bob", "BTC-USDT-PERP")], []),
        (
            PRODUCT,
            "perpetual",
            [("alice", "BTC-USDT-PERP"), ("bob", "ETH-USDT-PERP")],
            [("alice", "BTC-USDT")],
        ),
        (
            ACCOUNT,
            "alice",
            [("alice", "BTC-USDT"), ("alice", "BTC-USDT-PERP")],
            [("bob", "BTC-USDT")],
        ),
    ],
    ids=["venue", "product", "account"],
)
async def test_kill_switch_scopes(
    d: OpsDeployment,
    scope: int,
    ident: str,
    halted: list[tuple[str, str]],
    free: list[tuple[str, str]],
) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    resting = await orders.PlaceOrder(
        limit_order("alice", halted[0][1] if halted[0][0] == "alice" else "BTC-USDT")
    )
    response = await admin.KillSwitch(kill(scope, ident))
    assert response.kill_switch.scope == scope and response.kill_switch.id == ident
    assert not response.was_engaged and response.kill_switch.actor == "ops"
    for account, symbol in halted:
        assert await _outcome(d, account, symbol) == "KILL_SWITCH", (account, symbol)
    for account, symbol in free:
        assert await _outcome(d, account, symbol) == "ok", (account, symbol)
    # Cancels pass; amends do not.
    symbol = halted[0][1] if halted[0][0] == "alice" else "BTC-USDT"
    amend = await refused(
        orders.AmendOrder(
            pb.AmendOrderRequest(
                account_id="alice", symbol=symbol, order_id=resting.order_id, price="99"
            )
        )
    )
    assert amend.reason == "KILL_SWITCH" and amend.code == grpc.StatusCode.FAILED_PRECONDITION
    cancelled = await orders.CancelOrder(
        pb.CancelOrderRequest(account_id="alice", symbol=symbol, order_id=resting.order_id)
    )
    assert cancelled.status == pb.ORDER_STATUS_CANCELED

    listed = await admin.ListKillSwitches(apb.ListKillSwitchesRequest())
    assert [(k.scope, k.id) for k in listed.kill_switches] == [(scope, ident)]
    released = await admin.ReleaseKillSwitch(release(scope, ident))
    assert released.was_engaged and released.released.reason == "incident 42"
    for account, symbol in halted:
        assert await _outcome(d, account, symbol) == "ok"
    again = await admin.ReleaseKillSwitch(release(scope, ident))
    assert not again.was_engaged


async def test_kill_switch_group_scope_is_recorded_and_says_so(d: OpsDeployment) -> None:
    response = await d.clients.admin.KillSwitch(kill(GROUP, "desk-7"))
    assert "no account" in response.note
    listed = await d.clients.admin.ListKillSwitches(apb.ListKillSwitchesRequest())
    assert [(k.scope, k.id) for k in listed.kill_switches] == [(GROUP, "desk-7")]
    assert await _outcome(d, "alice", "BTC-USDT") == "ok"


async def test_kill_switch_ttl_and_validation(d: OpsDeployment) -> None:
    admin = d.clients.admin
    response = await admin.KillSwitch(kill(VENUE, ttl_ms=300))
    assert response.kill_switch.HasField("expires_at")
    await eventually(lambda: _outcome(d, "alice", "BTC-USDT"), lambda o: o == "ok")
    assert await _outcome(d, "alice", "BTC-USDT") == "ok"

    r = await refused(
        admin.KillSwitch(apb.KillSwitchRequest(scope=VENUE, id="x", reason="", actor="ops"))
    )
    assert set(r.bad_fields) == {"id", "reason"}
    r = await refused(admin.KillSwitch(apb.KillSwitchRequest(reason="r", actor="ops")))
    assert set(r.bad_fields) == {"scope"}
    r = await refused(
        admin.KillSwitch(apb.KillSwitchRequest(scope=ACCOUNT, reason="r", actor="ops"))
    )
    assert set(r.bad_fields) == {"id"}
    r = await refused(admin.KillSwitch(kill(PRODUCT, "futures")))
    assert r.code == grpc.StatusCode.NOT_FOUND
    assert (await admin.ListKillSwitches(apb.ListKillSwitchesRequest())).kill_switches == []


# -- shadow mode ---------------------------------------------------------------------------------


async def test_shadow_rule_records_but_does_not_refuse(d: OpsDeployment) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="new rule", actor="ops"
        )
    )
    set_reply = await admin.SetShadow(
        apb.SetShadowRequest(rule="ACCOUNT_FROZEN", enabled=True, reason="trial", actor="ops")
    )
    assert set_reply.rule.rule == "ACCOUNT_FROZEN" and not set_reply.was_enabled

    shadow_id, error = await request_id_of(orders.PlaceOrder(limit_order("alice")))
    assert error is None, "a shadowed rule refused"
    # Another rule still refuses, and the shadowed one is recorded with it.
    await admin.SetSymbolStatus(
        apb.SetSymbolStatusRequest(
            symbol="ETH-USDT", status=apb.SYMBOL_STATUS_HALTED, reason="r", actor="ops"
        )
    )
    both_id, error = await request_id_of(orders.PlaceOrder(limit_order("alice", "ETH-USDT")))
    assert error is not None

    records = {r.request_id: r for r in await decisions(d, account_id="alice")}
    shadow = records[shadow_id]
    assert shadow.decision == apb.DECISION_SHADOW
    assert shadow.reason == R.Value("REASON_ACCOUNT_FROZEN")
    assert list(shadow.shadowed) == [R.Value("REASON_ACCOUNT_FROZEN")]
    both = records[both_id]
    assert (both.decision, both.reason) == (apb.DECISION_REFUSE, R.Value("REASON_SYMBOL_HALTED"))
    assert list(both.shadowed) == [R.Value("REASON_ACCOUNT_FROZEN")]
    assert [r.request_id for r in await decisions(d, reason=R.Value("REASON_ACCOUNT_FROZEN"))] == [
        both_id,
        shadow_id,
    ]

    listed = await admin.ListShadowRules(apb.ListShadowRulesRequest())
    assert [r.rule for r in listed.rules] == ["ACCOUNT_FROZEN"]
    assert "KILL_SWITCH" not in listed.shadowable and "INVALID_REQUEST" not in listed.shadowable
    off = await admin.SetShadow(
        apb.SetShadowRequest(rule="ACCOUNT_FROZEN", enabled=False, reason="done", actor="ops")
    )
    assert off.was_enabled and not off.HasField("rule")
    assert (await refused(orders.PlaceOrder(limit_order("alice")))).reason == "ACCOUNT_FROZEN"


async def test_global_shadow_spares_the_kill_switch_and_malformed_input(d: OpsDeployment) -> None:
    orders, admin = d.clients.orders, d.clients.admin
    await admin.SetShadow(
        apb.SetShadowRequest(rule="*", enabled=True, reason="dry run", actor="ops")
    )
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="alice", state=apb.ACCOUNT_STATE_DEACTIVATED, reason="r", actor="ops"
        )
    )
    await orders.PlaceOrder(limit_order("alice"))  # would be ACCOUNT_DEACTIVATED
    assert (
        await refused(orders.PlaceOrder(limit_order("alice", quantity="x")))
    ).reason == "INVALID_REQUEST"
    await admin.KillSwitch(kill(VENUE))
    assert (await refused(orders.PlaceOrder(limit_order("bob")))).reason == "KILL_SWITCH"

    r = await refused(
        admin.SetShadow(
            apb.SetShadowRequest(rule="KILL_SWITCH", enabled=True, reason="r", actor="ops")
        )
    )
    assert set(r.bad_fields) == {"rule"}
    r = await refused(
        admin.SetShadow(apb.SetShadowRequest(rule="NOPE", enabled=True, reason="r", actor="ops"))
    )
    assert set(r.bad_fields) == {"rule"}


# -- metrics ---------------------------------------------------------------------------------------


async def test_metrics_after_a_known_sequence(redis_url: str) -> None:
    async with ops_deployment("proxy", redis_url, metrics_listen="127.0.0.1:0") as d:
        assert d.metrics_port
        orders, admin = d.clients.orders, d.clients.admin
        for _ in range(3):
            await orders.PlaceOrder(limit_order("bob"))
        await admin.SetAccountState(
            apb.SetAccountStateRequest(
                account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="r", actor="ops"
            )
        )
        for _ in range(2):
            await refused(orders.PlaceOrder(limit_order("alice")))
        await refused(orders.PlaceOrder(limit_order("bob", quantity="0")))
        await refused(
            orders.CancelOrder(
                pb.CancelOrderRequest(account_id="bob", symbol="BTC-USDT", order_id="X-999")
            )
        )  # upstream NOT_FOUND
        await admin.SetShadow(
            apb.SetShadowRequest(rule="ACCOUNT_FROZEN", enabled=True, reason="trial", actor="ops")
        )
        await orders.PlaceOrder(limit_order("alice"))
        await admin.KillSwitch(kill(ACCOUNT, "zed"))
        await d.flush()

        m = await asyncio.to_thread(scrape, d.metrics_port)
        assert m['pretrade_decisions_total{decision="accept",method="PlaceOrder",reason=""}'] == 3
        assert (
            m[
                'pretrade_decisions_total{decision="refuse",method="PlaceOrder",reason="ACCOUNT_FROZEN"}'
            ]
            == 2
        )
        assert (
            m[
                'pretrade_decisions_total{decision="refuse",method="PlaceOrder",reason="INVALID_REQUEST"}'
            ]
            == 1
        )
        assert m['pretrade_decisions_total{decision="accept",method="CancelOrder",reason=""}'] == 1
        assert (
            m[
                'pretrade_decisions_total{decision="shadow",method="PlaceOrder",reason="ACCOUNT_FROZEN"}'
            ]
            == 1
        )
        assert m['pretrade_shadow_hits_total{reason="ACCOUNT_FROZEN"}'] == 1
        assert m['pretrade_decision_seconds_count{path="local"}'] == 8
        assert m.get('pretrade_decision_seconds_count{path="redis"}', 0) == 0
        assert m['pretrade_upstream_seconds_count{method="PlaceOrder"}'] == 4
        assert m['pretrade_upstream_errors_total{code="NOT_FOUND",method="CancelOrder"}'] == 1
        assert m['pretrade_audit_written_total{stream="decisions"}'] == 8
        assert m['pretrade_audit_written_total{stream="admin"}'] == 3
        # The decisions' audit batches, timed; no counter call on this policy.
        assert m['pretrade_redis_call_seconds_count{op="audit"}'] >= 1
        assert m['pretrade_redis_call_seconds_count{op="counters"}'] == 0
        assert m["pretrade_audit_backlog{}"] == 0
        assert m.get('pretrade_audit_dropped_total{cause="queue_full"}', 0) == 0
        assert m["pretrade_snapshot_synced{}"] == 1
        assert m["pretrade_kill_switches_engaged{}"] == 1
        assert m["pretrade_shadow_rules{}"] == 1
        assert m['pretrade_flag_propagation_seconds_count{kind="account_state"}'] >= 1
        assert m["pretrade_snapshot_age_seconds{}"] >= 0
        info = [k for k in m if k.startswith("pretrade_gateway_info")]
        assert len(info) == 1 and d.keeper.policy.version in info[0]
        assert not any("alice" in key or "bob" in key for key in m), (
            "account ids must not be labels"
        )
