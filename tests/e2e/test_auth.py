"""API keys and admin credentials end to end, in both deployments with authentication on.

Every way of acting for another account is tried and must be refused without
reaching the exchange: no key, a malformed or unknown key, a wrong secret, a
key of another account or of a sub-account, a revoked key, an expired key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import errors_pb2
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from tests.e2e.conftest import ADMIN_TOKEN, Secured
from tests.support.rpc import Refusal, limit_order, refused

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def cancel(account: str, order_id: str, symbol: str = "BTC-USDT") -> pb.CancelOrderRequest:
    return pb.CancelOrderRequest(account_id=account, symbol=symbol, order_id=order_id)


def amend(account: str, order_id: str, price: str = "101") -> pb.AmendOrderRequest:
    return pb.AmendOrderRequest(
        account_id=account, symbol="BTC-USDT", order_id=order_id, price=price
    )


def assert_unauthenticated(r: Refusal, problem: str) -> None:
    assert (r.code, r.domain, r.reason) == (UNAUTH, "pretrade.v1", "UNAUTHENTICATED"), r
    assert r.metadata["problem"] == problem, r


def assert_mismatch(r: Refusal, key_id: str, account: str) -> None:
    assert (r.code, r.reason) == (DENIED, "ACCOUNT_MISMATCH"), r
    assert r.metadata == {"limit": "api_key", "key_id": key_id, "account_id": account}


async def test_a_key_trades_for_its_account(secured: Secured) -> None:
    issued = await secured.issue("alice", label="alice's app")
    assert issued.api_key.startswith(issued.key.key_id + ".")
    assert list(issued.key.account_ids) == ["alice"]
    assert issued.key.channel == apb.ORDER_CHANNEL_INTERACTIVE and not issued.key.revoked
    orders = secured.orders(issued.api_key)
    placed = await orders.PlaceOrder(limit_order("alice"), timeout=5)
    amended = await orders.AmendOrder(amend("alice", placed.order_id), timeout=5)
    assert amended.order_id
    cancelled = await orders.CancelOrder(cancel("alice", placed.order_id), timeout=5)
    assert cancelled.status == pb.ORDER_STATUS_CANCELED


async def test_no_key_is_refused_before_anything_else(secured: Secured) -> None:
    before = secured.exchange.engine.sequence
    orders = secured.orders(None)
    for call in (
        orders.PlaceOrder(limit_order("alice")),
        orders.CancelOrder(cancel("alice", "X-1")),
        orders.AmendOrder(amend("alice", "X-1")),
        # Even a malformed request: the credential is checked first.
        orders.PlaceOrder(pb.PlaceOrderRequest(account_id="", quantity="NaN")),
    ):
        r = await refused(call)
        assert_unauthenticated(r, "missing")
        assert "authorization: Bearer" in r.message
    assert secured.exchange.engine.sequence == before


async def test_bad_credentials_are_unauthenticated(secured: Secured) -> None:
    issued = await secured.issue("alice")
    key_id, secret = issued.api_key.split(".")
    flipped = ("A" if secret[0] != "A" else "B") + secret[1:]
    other = (await secured.issue("alice")).key.key_id
    cases = {
        f"{key_id}.{flipped}": "unknown",  # wrong secret
        f"{other}.{secret}": "unknown",  # a secret under another key's id
        "pk_0000000000000000." + secret: "unknown",  # no such key
        key_id: "malformed",  # the id alone
        secret: "malformed",
        "": "malformed",
        issued.api_key + "x": "malformed",
        "x" * 5000: "malformed",
    }
    before = secured.exchange.engine.sequence
    for credential, problem in cases.items():
        orders = secured.orders(None)
        metadata = (("authorization", f"Bearer {credential}"),)
        r = await refused(orders.PlaceOrder(limit_order("alice"), metadata=metadata, timeout=5))
        assert_unauthenticated(r, problem)
        assert secret not in r.message and "key_id" not in r.metadata
    for metadata in (
        (("authorization", issued.api_key),),  # no scheme
        (("authorization", f"Basic {issued.api_key}"),),
        # Two credentials: which one counts would be a guess.
        (("authorization", f"Bearer {issued.api_key}"), ("authorization", "Bearer x")),
    ):
        r = await refused(secured.orders(None).PlaceOrder(limit_order("alice"), metadata=metadata))
        assert_unauthenticated(r, "malformed")
    # The scheme is case-insensitive, as in HTTP.
    ok = (("authorization", f"bearer {issued.api_key}"),)
    await secured.orders(None).PlaceOrder(limit_order("alice"), metadata=ok, timeout=5)
    assert secured.exchange.engine.sequence == before + 1


async def test_a_key_cannot_act_for_another_account(secured: Secured) -> None:
    alice = await secured.issue("alice")
    bob = await secured.issue("bob")
    resting = await secured.orders(alice.api_key).PlaceOrder(limit_order("alice"), timeout=5)
    before = secured.exchange.engine.sequence

    as_bob = secured.orders(bob.api_key)
    bob_id = bob.key.key_id
    assert_mismatch(await refused(as_bob.PlaceOrder(limit_order("alice"))), bob_id, "alice")
    # Cancels too, or anyone could cancel anyone's orders.
    assert_mismatch(
        await refused(as_bob.CancelOrder(cancel("alice", resting.order_id))), bob_id, "alice"
    )
    assert_mismatch(
        await refused(as_bob.AmendOrder(amend("alice", resting.order_id))), bob_id, "alice"
    )
    assert secured.exchange.engine.sequence == before
    assert [o.order_id for o in secured.exchange.engine.open_orders("alice")] == [resting.order_id]


async def test_sub_account_keys(secured: Secured) -> None:
    """A key for an account and its sub-accounts covers them all; a sub-account's key
    covers only that sub-account, never its parent or its siblings."""
    parent = await secured.issue("alice", "alice.sub1", "alice.sub2")
    sub1 = await secured.issue("alice.sub1")
    for account in ("alice", "alice.sub1", "alice.sub2"):
        await secured.orders(parent.api_key).PlaceOrder(limit_order(account), timeout=5)
    as_sub1 = secured.orders(sub1.api_key)
    await as_sub1.PlaceOrder(limit_order("alice.sub1"), timeout=5)
    for account in ("alice", "alice.sub2", "alice.sub10", "alice.sub1.x"):
        r = await refused(as_sub1.PlaceOrder(limit_order(account)))
        assert_mismatch(r, sub1.key.key_id, account)


async def test_revoked_key_is_refused_at_once(secured: Secured) -> None:
    issued = await secured.issue("alice")
    orders = secured.orders(issued.api_key)
    placed = await orders.PlaceOrder(limit_order("alice"), timeout=5)  # verified and cached

    revoked = await secured.admin.RevokeApiKey(
        apb.RevokeApiKeyRequest(key_id=issued.key.key_id, reason="leaked", actor="sec"), timeout=5
    )
    assert revoked.key.revoked and revoked.key.revoked_by == "sec" and not revoked.already_revoked
    before = secured.exchange.engine.sequence
    for call in (
        orders.PlaceOrder(limit_order("alice")),
        orders.CancelOrder(cancel("alice", placed.order_id)),
    ):
        r = await refused(call)
        assert_unauthenticated(r, "revoked")
        assert r.metadata["key_id"] == issued.key.key_id
    assert secured.exchange.engine.sequence == before

    again = await secured.admin.RevokeApiKey(
        apb.RevokeApiKeyRequest(key_id=issued.key.key_id, reason="again", actor="sec"), timeout=5
    )
    assert again.already_revoked and again.key.revoke_reason == "leaked"
    missing = await refused(
        secured.admin.RevokeApiKey(
            apb.RevokeApiKeyRequest(key_id="pk_0123456789abcdef", reason="x", actor="y")
        )
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_expired_key_is_refused(secured: Secured) -> None:
    ttl = duration_pb2.Duration(nanos=300_000_000)
    issued = await secured.issue("alice", ttl=ttl)
    assert issued.key.HasField("expires_at")
    orders = secured.orders(issued.api_key)
    r = None
    for _ in range(100):  # bounded: the key lapses 300 ms after issue
        try:
            await orders.PlaceOrder(limit_order("alice"), timeout=5)
        except grpc.aio.AioRpcError:
            r = await refused(orders.PlaceOrder(limit_order("alice")))
            break
        await asyncio.sleep(0.05)
    assert r is not None, "the key never expired"
    assert r.code == UNAUTH and r.metadata["problem"] in ("expired", "unknown")


async def test_key_channel_overrides_the_metadata(secured: Secured) -> None:
    """The program-trading rule sees the key's channel; the caller's claim is ignored."""
    await secured.admin.UpsertSymbol(
        apb.UpsertSymbolRequest(
            spec=apb.SymbolSpec(symbol="ETH-USDT", program_trading_forbidden=True),
            update_mask=field_mask_pb2.FieldMask(paths=["program_trading_forbidden"]),
            reason="2.11",
            actor="ops",
        ),
        timeout=5,
    )
    bot = await secured.issue("alice", channel=apb.ORDER_CHANNEL_PROGRAM)
    person = await secured.issue("alice", channel=apb.ORDER_CHANNEL_INTERACTIVE)
    claims: list[Any] = [None, (("x-pretrade-channel", "interactive"),)]
    for claim in claims:
        r = await refused(
            secured.orders(bot.api_key).PlaceOrder(limit_order(symbol="ETH-USDT"), metadata=claim)
        )
        assert (r.reason, r.metadata["channel"]) == ("PROGRAM_TRADING_FORBIDDEN", "program")
    for claim in [None, (("x-pretrade-channel", "program"),)]:
        await secured.orders(person.api_key).PlaceOrder(
            limit_order(symbol="ETH-USDT", price="2000"), metadata=claim, timeout=5
        )


async def test_admin_needs_its_credential(secured: Secured) -> None:
    alice = await secured.issue("alice")
    request = apb.GetAccountRequest(account_id="alice")
    for token in (None, "wrong-token-0123456789", alice.api_key, ADMIN_TOKEN + "x", ""):
        try:
            await secured.admin_as(token).GetAccount(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == UNAUTH, (token, exc)
        else:
            raise AssertionError(f"admin answered with credential {token!r}")
    # Changes too: nothing is applied.
    change = apb.SetAccountStateRequest(
        account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="x", actor="y"
    )
    r = await refused(secured.admin_as(None).SetAccountState(change))
    assert r.code == UNAUTH
    issue = apb.IssueApiKeyRequest(
        account_ids=["mallory"], channel=apb.ORDER_CHANNEL_PROGRAM, reason="x", actor="y"
    )
    r = await refused(secured.admin_as(alice.api_key).IssueApiKey(issue))
    assert r.code == UNAUTH
    account = (await secured.admin.GetAccount(request, timeout=5)).account
    assert account.state == apb.ACCOUNT_STATE_ACTIVE
    listed = await secured.admin.ListApiKeys(apb.ListApiKeysRequest(), timeout=5)
    assert [list(k.account_ids) for k in listed.keys] == [["alice"]]
    # The audit trail has the one change that was made, with the verified principal.
    trail = await secured.admin.ListAdminActions(apb.ListAdminActionsRequest(), timeout=5)
    assert [(a.action, a.actor, a.principal) for a in trail.actions] == [
        ("issue_api_key", "tests", f"token:{secured.token_name}")
    ]
    assert alice.api_key.split(".")[1] not in str(trail)


@pytest.mark.parametrize("credential", ["none", "admin_token", "api_key"])
async def test_admin_rpcs_are_not_served_on_the_order_port(
    secured: Secured, credential: str
) -> None:
    from gateway.client import open_channel

    bearer = {"none": None, "admin_token": ADMIN_TOKEN, "api_key": None}[credential]
    if credential == "api_key":
        bearer = (await secured.issue("alice")).api_key
    async with open_channel(secured.order_address, bearer=bearer) as channel:
        for method in ("SetAccountState", "IssueApiKey", "RevokeApiKey", "ListApiKeys"):
            call = channel.unary_unary(f"/pretrade.v1.Admin/{method}")
            try:
                await call(b"", timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, (method, exc)
            else:
                raise AssertionError(f"{method} answered on the order-entry port")


async def test_issue_validation(secured: Secured) -> None:
    admin = secured.admin

    async def bad(**fields: Any) -> dict[str, str]:
        values: dict[str, Any] = {
            "account_ids": ["alice"],
            "channel": apb.ORDER_CHANNEL_PROGRAM,
            "reason": "r",
            "actor": "a",
        }
        values.update(fields)
        r = await refused(admin.IssueApiKey(apb.IssueApiKeyRequest(**values)))
        assert r.code == grpc.StatusCode.INVALID_ARGUMENT
        return r.bad_fields

    assert set(await bad(account_ids=[])) == {"account_ids"}
    assert set(await bad(account_ids=["alice", "bad account"])) == {"account_ids[1]"}
    assert set(await bad(account_ids=["alice", "alice"])) == {"account_ids[1]"}
    assert set(await bad(account_ids=[f"a{i}" for i in range(101)])) == {"account_ids"}
    assert set(await bad(channel=apb.ORDER_CHANNEL_UNSPECIFIED)) == {"channel"}
    assert set(await bad(channel=7)) == {"channel"}
    assert set(await bad(label="x" * 257)) == {"label"}
    assert set(await bad(reason="", actor=" ")) == {"reason", "actor"}
    assert set(await bad(ttl=duration_pb2.Duration(seconds=-1))) == {"ttl"}
    listed = await admin.ListApiKeys(apb.ListApiKeysRequest(), timeout=5)
    assert list(listed.keys) == []  # nothing half-applied
    r = await refused(admin.RevokeApiKey(apb.RevokeApiKeyRequest(key_id="pk_x", reason="r")))
    assert set(r.bad_fields) == {"key_id", "actor"}


async def test_list_keys(secured: Secured) -> None:
    admin = secured.admin
    a = await secured.issue("alice", label="one")
    b = await secured.issue("alice", "bob", channel=apb.ORDER_CHANNEL_PROGRAM)
    c = await secured.issue("carol")
    await admin.RevokeApiKey(
        apb.RevokeApiKeyRequest(key_id=c.key.key_id, reason="r", actor="a"), timeout=5
    )
    listed = await admin.ListApiKeys(apb.ListApiKeysRequest(), timeout=5)
    assert sorted(k.key_id for k in listed.keys) == sorted([a.key.key_id, b.key.key_id])
    for key in listed.keys:
        # Never the secret, nor anything derived from it.
        text = str(key)
        assert a.api_key.split(".")[1] not in text and b.api_key.split(".")[1] not in text
    bobs = await admin.ListApiKeys(apb.ListApiKeysRequest(account_id="bob"), timeout=5)
    assert [k.key_id for k in bobs.keys] == [b.key.key_id]
    everything = await admin.ListApiKeys(apb.ListApiKeysRequest(include_revoked=True), timeout=5)
    assert len(everything.keys) == 3
    first = await admin.ListApiKeys(
        apb.ListApiKeysRequest(include_revoked=True, page_size=2), timeout=5
    )
    rest = await admin.ListApiKeys(
        apb.ListApiKeysRequest(include_revoked=True, page_size=2, page_token=first.next_page_token),
        timeout=5,
    )
    assert len(first.keys) == 2 and len(rest.keys) == 1 and not rest.next_page_token
    assert sorted(k.key_id for k in [*first.keys, *rest.keys]) == sorted(
        k.key_id for k in everything.keys
    )


async def test_key_refusals_are_in_the_audit_trail(secured: Secured) -> None:
    from tests.support.ops import request_id_of

    bob = await secured.issue("bob")
    ids = {}
    for reason, orders in (("UNAUTHENTICATED", secured.orders(None)),
                           ("ACCOUNT_MISMATCH", secured.orders(bob.api_key))):  # fmt: skip
        ids[reason], error = await request_id_of(orders.PlaceOrder(limit_order("alice")))
        assert error is not None and ids[reason]
    await secured.keeper.ops.audit.flush()
    reply = await secured.admin.ListDecisions(
        apb.ListDecisionsRequest(decision=apb.DECISION_REFUSE), timeout=5
    )
    records = {r.request_id: r for r in reply.decisions}
    for reason, request_id in ids.items():
        record = records[request_id]
        assert (errors_pb2.Reason.Name(record.reason), record.stage) == (
            f"REASON_{reason}",
            "auth",
        )
    mismatch = records[ids["ACCOUNT_MISMATCH"]]
    assert (mismatch.account_id, mismatch.detail["key_id"]) == ("alice", bob.key.key_id)
    assert bob.api_key.split(".")[1] not in str(reply)


async def test_key_checks_cannot_be_shadowed(secured: Secured) -> None:
    for rule in ("UNAUTHENTICATED", "ACCOUNT_MISMATCH"):
        r = await refused(
            secured.admin.SetShadow(
                apb.SetShadowRequest(rule=rule, enabled=True, reason="r", actor="a"), timeout=5
            )
        )
        assert r.code == grpc.StatusCode.INVALID_ARGUMENT, rule
    await secured.admin.SetShadow(
        apb.SetShadowRequest(rule="*", enabled=True, reason="dry run", actor="a"), timeout=5
    )
    bob = await secured.issue("bob")
    before = secured.exchange.engine.sequence
    assert_unauthenticated(await refused(secured.orders(None).PlaceOrder(limit_order())), "missing")
    assert_mismatch(
        await refused(secured.orders(bob.api_key).PlaceOrder(limit_order("alice"))),
        bob.key.key_id,
        "alice",
    )
    assert secured.exchange.engine.sequence == before
