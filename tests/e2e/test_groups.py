"""Linked accounts end to end, in both deployments: membership, group state, shared counters,
group leverage, self-trade prevention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import field_mask_pb2

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.model import FlagKind
from gateway.store.keys import flag_key
from tests.e2e.conftest import Deployment
from tests.support.rpc import limit_order, refused

FP = grpc.StatusCode.FAILED_PRECONDITION
WHY = {"reason": "same device", "actor": "ops"}


async def link(d: Deployment, *accounts: str, group: str = "") -> apb.LinkAccountsResponse:
    return await d.clients.admin.LinkAccounts(
        apb.LinkAccountsRequest(group_id=group, account_ids=accounts, **WHY)
    )


async def group_of(d: Deployment, account: str) -> apb.Group:
    return (await d.clients.admin.GetGroup(apb.GetGroupRequest(account_id=account))).group


async def wait_for(d: Deployment, account: str, test: Callable[[apb.Group], bool]) -> apb.Group:
    """Poll the account's group (bounded) until ``test`` holds: for what the feed brings."""
    for _ in range(250):
        group = await group_of(d, account)
        if test(group):
            return group
        await asyncio.sleep(0.02)
    raise AssertionError(f"group never got there: {group}")


def sell(account: str, price: str, **kw: object) -> pb.PlaceOrderRequest:
    return limit_order(account, side=pb.SIDE_SELL, price=price, **kw)


def buy(account: str, price: str, **kw: object) -> pb.PlaceOrderRequest:
    return limit_order(account, side=pb.SIDE_BUY, price=price, **kw)


# -- membership ---------------------------------------------------------------------


async def test_link_unlink_and_views(deployment: Deployment) -> None:
    admin = deployment.clients.admin
    linked = await link(deployment, "bob", "alice")
    group = linked.group
    assert group.group_id.startswith("g-") and list(linked.linked) == ["alice", "bob"]
    assert [m.account_id for m in group.members] == ["alice", "bob"]
    assert group.members[0].reason == "same device" and group.members[0].actor == "ops"
    assert group.counting_subject == f"grp:{group.group_id}"
    assert group.state == apb.ACCOUNT_STATE_ACTIVE

    # Without a group id, accounts join the group some of them are in.
    joined = await link(deployment, "carol", "alice")
    assert joined.group.group_id == group.group_id and list(joined.linked) == ["carol"]
    account = (await admin.GetAccount(apb.GetAccountRequest(account_id="carol"))).account
    assert account.group_id == group.group_id
    assert account.effective_state == apb.ACCOUNT_STATE_ACTIVE

    # A named group, and an account linked elsewhere refused.
    other = await link(deployment, "dave", "erin", group="desk-7")
    assert other.group.group_id == "desk-7"
    try:
        await link(deployment, "alice", group="desk-7")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == FP and f"alice ({group.group_id})" in (exc.details() or "")
    else:
        raise AssertionError("linked an account out of its group")
    with pytest.raises(grpc.aio.AioRpcError) as mixed:
        await link(deployment, "alice", "dave")
    assert mixed.value.code() == FP and "different groups" in (mixed.value.details() or "")

    listed = await admin.ListGroups(apb.ListGroupsRequest(page_size=1))
    assert [g.group_id for g in listed.groups] == ["desk-7"] and listed.next_page_token
    rest = await admin.ListGroups(apb.ListGroupsRequest(page_token=listed.next_page_token))
    assert [g.group_id for g in rest.groups] == [group.group_id] and not rest.next_page_token

    left = await admin.UnlinkAccount(apb.UnlinkAccountRequest(account_id="bob", **WHY))
    assert left.group_id == group.group_id
    assert [m.account_id for m in left.group.members] == ["alice", "carol"]
    account = (await admin.GetAccount(apb.GetAccountRequest(account_id="bob"))).account
    assert account.group_id == ""
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await admin.UnlinkAccount(apb.UnlinkAccountRequest(account_id="bob", **WHY))
    assert again.value.code() == FP
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.GetGroup(apb.GetGroupRequest(group_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_link_racing_another_gateway_is_all_or_nothing(
    deployment: Deployment, redis_url: str
) -> None:
    # bob was linked elsewhere by another gateway a moment ago: this one has not heard yet.
    redis = aioredis.Redis.from_url(redis_url)
    await redis.hset(
        flag_key(FlagKind.GROUP_MEMBER, "bob"), mapping={"group": "other", "version": "1"}
    )
    await redis.aclose()
    r = await refused(deployment.clients.admin.LinkAccounts(
        apb.LinkAccountsRequest(account_ids=["alice", "bob", "carol"], group_id="g1", **WHY)))  # fmt: skip
    assert r.code == FP and "bob (other)" in r.message and "nothing was linked" in r.message
    for account in ("alice", "carol"):
        shown = await deployment.clients.admin.GetAccount(apb.GetAccountRequest(account_id=account))
        assert shown.account.group_id == ""


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (apb.LinkAccountsRequest(account_ids=[], **WHY), {"account_ids"}),
        (apb.LinkAccountsRequest(account_ids=["alice", "b{d}"], **WHY), {"account_ids[1]"}),
        (
            apb.LinkAccountsRequest(account_ids=["alice", "bob"], group_id="no spaces", **WHY),
            {"group_id"},
        ),
        (apb.LinkAccountsRequest(account_ids=["alice", "bob"]), {"reason", "actor"}),
        (apb.LinkAccountsRequest(account_ids=["alice"], **WHY), {"account_ids"}),
        (apb.LinkAccountsRequest(account_ids=["alice", "alice"], **WHY), {"account_ids"}),
        (apb.LinkAccountsRequest(account_ids=[f"a{n}" for n in range(51)], **WHY), {"account_ids"}),
    ],
)
async def test_link_validation(
    deployment: Deployment, request_: apb.LinkAccountsRequest, fields: set[str]
) -> None:
    r = await refused(deployment.clients.admin.LinkAccounts(request_))
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and set(r.bad_fields) == fields


async def test_group_validation(deployment: Deployment) -> None:
    admin = deployment.clients.admin
    r = await refused(admin.GetGroup(apb.GetGroupRequest()))
    assert set(r.bad_fields) == {"target"}
    r = await refused(admin.SetAccountState(apb.SetAccountStateRequest(
        account_id="alice", group_id="g1", state=apb.ACCOUNT_STATE_FROZEN, **WHY)))  # fmt: skip
    assert set(r.bad_fields) == {"account_id"}
    r = await refused(admin.SetAccountState(apb.SetAccountStateRequest(
        group_id="g1", state=apb.ACCOUNT_STATE_FROZEN, **WHY)))  # fmt: skip
    assert r.code == grpc.StatusCode.NOT_FOUND
    r = await refused(admin.SetLeverageLimit(apb.SetLeverageLimitRequest(
        group_id="g1", max_leverage=3, **WHY)))  # fmt: skip
    assert r.code == grpc.StatusCode.NOT_FOUND
    r = await refused(admin.ListGroups(apb.ListGroupsRequest(page_size=5000)))
    assert set(r.bad_fields) == {"page_size"}


# -- group state ---------------------------------------------------------------------


async def test_group_state_reaches_every_member_and_stays_with_the_group(
    deployment: Deployment,
) -> None:
    admin, orders = deployment.clients.admin, deployment.clients.orders
    group_id = (await link(deployment, "alice", "bob")).group.group_id
    resting = await orders.PlaceOrder(buy("bob", "90"))

    frozen = await admin.SetAccountState(apb.SetAccountStateRequest(
        group_id=group_id, state=apb.ACCOUNT_STATE_FROZEN, **WHY))  # fmt: skip
    assert frozen.previous_state == apb.ACCOUNT_STATE_ACTIVE
    assert frozen.group.state == apb.ACCOUNT_STATE_FROZEN and not frozen.HasField("account")
    for account in ("alice", "bob"):
        r = await refused(orders.PlaceOrder(buy(account, "95")))
        assert (r.code, r.reason) == (FP, "ACCOUNT_FROZEN")
        assert r.metadata == {"limit": "account_state", "account_id": account,
                              "state": "FROZEN", "scope": "group"}  # fmt: skip
        assert "group is frozen" in r.message
    # Cancels pass; other accounts trade on.
    await orders.CancelOrder(pb.CancelOrderRequest(account_id="bob", symbol="BTC-USDT",
                                                   order_id=resting.order_id))  # fmt: skip
    await orders.PlaceOrder(buy("carol", "95"))
    shown = (await admin.GetAccount(apb.GetAccountRequest(account_id="alice"))).account
    assert (shown.state, shown.effective_state) == (
        apb.ACCOUNT_STATE_ACTIVE,
        apb.ACCOUNT_STATE_FROZEN,
    )
    listed = await admin.ListGroups(apb.ListGroupsRequest(restricted_only=True))
    assert [g.group_id for g in listed.groups] == [group_id]

    # Unlinked, a member keeps only its own state.
    await admin.UnlinkAccount(apb.UnlinkAccountRequest(account_id="bob", **WHY))
    await orders.PlaceOrder(buy("bob", "95"))

    # The most restrictive of own and group state applies.
    await admin.SetAccountState(apb.SetAccountStateRequest(
        account_id="alice", state=apb.ACCOUNT_STATE_REDUCE_ONLY, **WHY))  # fmt: skip
    assert (await refused(orders.PlaceOrder(buy("alice", "95")))).reason == "ACCOUNT_FROZEN"
    await admin.SetAccountState(apb.SetAccountStateRequest(
        group_id=group_id, state=apb.ACCOUNT_STATE_ACTIVE, **WHY))  # fmt: skip
    r = await refused(orders.PlaceOrder(buy("alice", "95")))
    assert r.reason == "ACCOUNT_REDUCE_ONLY" and "scope" not in r.metadata


async def test_group_deactivation_refuses_cancels_too(deployment: Deployment) -> None:
    group_id = (await link(deployment, "alice", "bob")).group.group_id
    order = await deployment.clients.orders.PlaceOrder(buy("alice", "90"))
    await deployment.clients.admin.SetAccountState(apb.SetAccountStateRequest(
        group_id=group_id, state=apb.ACCOUNT_STATE_DEACTIVATED, **WHY))  # fmt: skip
    r = await refused(deployment.clients.orders.CancelOrder(pb.CancelOrderRequest(
        account_id="alice", symbol="BTC-USDT", order_id=order.order_id)))  # fmt: skip
    assert (r.code, r.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_DEACTIVATED")


# -- counters and leverage --------------------------------------------------------------


async def test_counters_are_shared_by_the_group(deployment: Deployment) -> None:
    admin, orders = deployment.clients.admin, deployment.clients.orders
    await admin.SetLimit(apb.SetLimitRequest(
        scope=apb.LIMIT_SCOPE_DEFAULT, kind=apb.LIMIT_KIND_ORDER_RATE, value="3/1m", **WHY))  # fmt: skip
    group_id = (await link(deployment, "alice", "bob")).group.group_id
    await orders.PlaceOrder(buy("alice", "90"))
    await orders.PlaceOrder(buy("bob", "91"))
    await orders.PlaceOrder(buy("alice", "92"))
    r = await refused(orders.PlaceOrder(buy("bob", "93")))
    assert r.reason == "ORDER_RATE_EXCEEDED" and r.metadata["subject"] == f"grp:{group_id}"
    assert r.metadata["account_id"] == "bob" and r.metadata["count"] == "3"
    await orders.PlaceOrder(buy("carol", "93"))  # not linked: its own budget
    limits = await admin.GetEffectiveLimits(apb.GetEffectiveLimitsRequest(
        account_id="bob", symbol="BTC-USDT", include_usage=True))  # fmt: skip
    assert limits.counting_subject == f"grp:{group_id}"
    assert [(x.window, x.current) for x in limits.limits] == [("1m", 3)]


async def test_a_group_leverage_cap_only_lowers(deployment: Deployment) -> None:
    admin, orders = deployment.clients.admin, deployment.clients.orders
    group_id = (await link(deployment, "alice", "bob")).group.group_id
    perp = {"symbol": "BTC-USDT-PERP", "quantity": "1", "price": "100"}
    response = await admin.SetLeverageLimit(apb.SetLeverageLimitRequest(
        group_id=group_id, max_leverage=5, **WHY))  # fmt: skip
    assert response.limit.max_leverage == 5
    r = await refused(orders.PlaceOrder(limit_order("bob", leverage=6, **perp)))
    assert r.reason == "LEVERAGE_EXCEEDED"
    assert (r.metadata["bound_by"], r.metadata["max_leverage"]) == ("group_override", "5")
    await orders.PlaceOrder(limit_order("bob", leverage=5, **perp))
    await orders.PlaceOrder(limit_order("carol", leverage=20, **perp))
    assert (await group_of(deployment, "alice")).leverage_limit.max_leverage == 5
    # A looser group cap does not raise the symbol's.
    await admin.SetLeverageLimit(
        apb.SetLeverageLimitRequest(group_id=group_id, max_leverage=500, **WHY)
    )
    r = await refused(orders.PlaceOrder(limit_order("alice", leverage=126, **perp)))
    assert (r.metadata["bound_by"], r.metadata["max_leverage"]) == ("symbol", "125")
    # The account's own cap still applies inside a group.
    await admin.SetLeverageLimit(
        apb.SetLeverageLimitRequest(account_id="alice", max_leverage=2, **WHY)
    )
    r = await refused(orders.PlaceOrder(limit_order("alice", leverage=3, **perp)))
    assert r.metadata["bound_by"] == "account_override"
    await admin.SetLeverageLimit(apb.SetLeverageLimitRequest(group_id=group_id, clear=True, **WHY))
    assert not (await group_of(deployment, "alice")).HasField("leverage_limit")


# -- self-trade prevention ------------------------------------------------------------


async def test_self_trade_between_linked_accounts_is_refused(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    await link(deployment, "alice", "bob")
    ask = await orders.PlaceOrder(sell("alice", "100"))
    assert ask.status == pb.ORDER_STATUS_NEW

    r = await refused(orders.PlaceOrder(buy("bob", "100")))
    assert (r.code, r.reason) == (FP, "SELF_TRADE")
    assert r.metadata["conflicting_order_id"] == ask.order_id
    assert (r.metadata["conflicting_price"], r.metadata["side"]) == ("100", "buy")
    r = await refused(orders.PlaceOrder(limit_order("bob", type=pb.ORDER_TYPE_MARKET, price="")))
    assert r.reason == "SELF_TRADE" and r.metadata["price"] == "market"
    # Below the ask, bob's bid rests; alice selling into it is refused the same way.
    bid = await orders.PlaceOrder(buy("bob", "99"))
    assert bid.status == pb.ORDER_STATUS_NEW
    r = await refused(orders.PlaceOrder(sell("alice", "98")))
    assert r.metadata["conflicting_order_id"] == bid.order_id
    # An amend that would cross is refused too.
    r = await refused(orders.AmendOrder(pb.AmendOrderRequest(
        account_id="bob", symbol="BTC-USDT", order_id=bid.order_id, price="100.5")))  # fmt: skip
    assert r.reason == "SELF_TRADE" and r.metadata["conflicting_order_id"] == ask.order_id
    assert deployment.exchange.engine.best_ask("BTC-USDT") == 100  # nothing traded
    assert deployment.exchange.engine.position("bob", "BTC-USDT") == 0

    # An unlinked account trades with alice as usual: her ask fills, on the exchange's feed.
    filled = await orders.PlaceOrder(buy("carol", "100"))
    assert filled.status == pb.ORDER_STATUS_FILLED
    await wait_for(deployment, "bob", lambda g: g.tracked_orders == 1)  # bob's bid only
    taken = await orders.PlaceOrder(buy("bob", "100", quantity="0.5"))
    assert taken.status == pb.ORDER_STATUS_NEW  # no refusal once the resting order filled

    # A cancelled resting order no longer refuses anything.
    ask2 = await orders.PlaceOrder(sell("alice", "101"))
    assert (await refused(orders.PlaceOrder(buy("bob", "101")))).reason == "SELF_TRADE"
    await orders.CancelOrder(pb.CancelOrderRequest(account_id="alice", symbol="BTC-USDT",
                                                   order_id=ask2.order_id))  # fmt: skip
    assert (await orders.PlaceOrder(buy("bob", "101"))).status == pb.ORDER_STATUS_NEW


async def test_unlinked_accounts_and_stp_off_trade_freely(deployment: Deployment) -> None:
    admin, orders = deployment.clients.admin, deployment.clients.orders
    await orders.PlaceOrder(sell("alice", "100"))
    assert (await orders.PlaceOrder(buy("bob", "100"))).status == pb.ORDER_STATUS_FILLED
    await link(deployment, "alice", "bob")
    await admin.UpsertSymbol(apb.UpsertSymbolRequest(
        spec=apb.SymbolSpec(symbol="BTC-USDT", stp_mode=apb.SELF_TRADE_PREVENTION_NONE),
        update_mask=field_mask_pb2.FieldMask(paths=["stp_mode"]), **WHY))  # fmt: skip
    shown = await admin.GetSymbol(apb.GetSymbolRequest(symbol="BTC-USDT"))
    assert shown.symbol.spec.stp_mode == apb.SELF_TRADE_PREVENTION_NONE
    await orders.PlaceOrder(sell("alice", "100"))
    assert (await orders.PlaceOrder(buy("bob", "100"))).status == pb.ORDER_STATUS_FILLED


async def test_orders_resting_before_the_link_are_found(deployment: Deployment) -> None:
    orders = deployment.clients.orders
    ask = await orders.PlaceOrder(sell("alice", "100", client_order_id="a-1"))
    await link(deployment, "alice", "bob")
    # Read from the exchange's open orders (ExecutionFeed.ListOpenOrders) in the background.
    await wait_for(deployment, "alice", lambda g: g.tracked_orders == 1)
    r = await refused(orders.PlaceOrder(buy("bob", "100")))
    assert r.metadata["conflicting_order_id"] == ask.order_id
    # An amend by client order id is checked too (alice's bid would cross... her own ask).
    bid = await orders.PlaceOrder(buy("alice", "90", client_order_id="a-2"))
    r = await refused(orders.AmendOrder(pb.AmendOrderRequest(
        account_id="alice", symbol="BTC-USDT", client_order_id="a-2", price="100")))  # fmt: skip
    assert r.reason == "SELF_TRADE" and "your own resting order" in r.message
    assert bid.status == pb.ORDER_STATUS_NEW
