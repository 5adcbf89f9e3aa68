"""API keys: format, hashing, records, and the engine's first check (snapshot only)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.apikeys import (
    ApiKey,
    api_key_fields,
    api_key_from_fields,
    digest_of,
    new_key,
    split_key,
)
from gateway.auth import ApiKeyAuth, authorize, bearer_token, key_id_of
from gateway.engine import ORDER_METHODS, PreTradeEngine
from gateway.model import Action, Channel, FlagKind
from gateway.proxy import forwardable_metadata
from gateway.reasons import Denial, Reason
from gateway.snapshot import Snapshot
from gateway.validation import OrderCall
from tests.support.rpc import limit_order

NOW = 1_700_000_000_000
PLACE = ORDER_METHODS["/pretrade.v1.OrderEntry/PlaceOrder"]
CANCEL = ORDER_METHODS["/pretrade.v1.OrderEntry/CancelOrder"]


def issue(
    snapshot: Snapshot,
    *accounts: str,
    channel: Channel = Channel.PROGRAM,
    expires_ms: int = 0,
    revoked_ms: int = 0,
    version: int = 1,
) -> tuple[str, str]:
    key_id, api_key = new_key()
    secret = api_key.split(".")[1]
    key = ApiKey(key_id, digest_of(secret), frozenset(accounts), channel, revoked_ms=revoked_ms)
    fields = {
        **api_key_fields(key, "r", "a"),
        "expires_ms": str(expires_ms),
        "version": str(version),
    }
    assert snapshot.apply(FlagKind.API_KEY, key_id, fields, version)
    return key_id, api_key


def bearer(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


def problem(denial: Any) -> str:
    assert isinstance(denial, Denial) and denial.reason is Reason.UNAUTHENTICATED, denial
    return denial.metadata["problem"]


# -- format and records ---------------------------------------------------------------


def test_key_shape() -> None:
    key_id, api_key = new_key()
    assert split_key(api_key) == (key_id, api_key.split(".")[1])
    assert len(api_key) == 3 + 16 + 1 + 43 and key_id.startswith("pk_")
    assert new_key() != new_key()
    for bad in ("", key_id, f"{key_id}.", f"{key_id}.short", f"pk_XYZ.{'a' * 43}",
                f"{key_id}.{'a' * 42}!", f"{key_id}.{'a' * 44}", f".{'a' * 43}"):  # fmt: skip
        assert split_key(bad) is None, bad


def test_only_a_digest_is_stored() -> None:
    key_id, api_key = new_key()
    secret = api_key.split(".")[1]
    key = ApiKey(key_id, digest_of(secret), frozenset({"b", "a"}), Channel.INTERACTIVE, "bot")
    fields = api_key_fields(key, "why", "who")
    assert fields["digest"] == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in value for value in fields.values())
    assert fields["accounts"] == "a,b"
    assert api_key_from_fields(fields) == key


@pytest.mark.parametrize(
    "change",
    [
        {"key_id": "pk_nothex"},
        {"digest": "abc"},
        {"accounts": ""},
        {"channel": "telepathy"},
        {"issued_ms": "soon"},
    ],
)
def test_unreadable_key_records_are_refused(change: dict[str, str]) -> None:
    key_id, _ = new_key()
    fields = api_key_fields(ApiKey(key_id, "0" * 64, frozenset({"a"}), Channel.PROGRAM), "r", "a")
    with pytest.raises((KeyError, ValueError)):
        api_key_from_fields({**fields, **change})


def test_an_unreadable_record_is_skipped_on_load_not_trusted() -> None:
    snapshot = Snapshot()
    key_id, _ = new_key()
    good = api_key_fields(ApiKey(key_id, "0" * 64, frozenset({"a"}), Channel.PROGRAM), "r", "a")
    bad = {**good, "channel": "?"}
    skipped = snapshot.replace_all({FlagKind.API_KEY: {key_id: good, "pk_0000000000000000": bad}})
    assert skipped == ["pk_0000000000000000"]
    assert set(snapshot.ops[FlagKind.API_KEY]) == {key_id}


# -- the bearer credential --------------------------------------------------------------


def test_bearer_token_parsing() -> None:
    assert problem(bearer_token(None)) == "missing"
    assert problem(bearer_token([("x-other", "1")])) == "missing"
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "BEARER   abc  ")]) == "abc"
    for value in ("abc", "Basic abc", "Bearer", "Bearer " + "a" * 200):
        assert problem(bearer_token([("authorization", value)])) == "malformed", value
    two = [("authorization", "Bearer a"), ("authorization", "Bearer a")]
    assert problem(bearer_token(two)) == "malformed"
    assert problem(bearer_token([("authorization", b"Bearer a")])) == "malformed"


# -- ApiKeyAuth ---------------------------------------------------------------------------


def test_valid_key_and_its_failures() -> None:
    snapshot = Snapshot()
    clock = [NOW]
    auth = ApiKeyAuth(snapshot, clock=lambda: clock[0])
    key_id, api_key = issue(snapshot, "alice", expires_ms=NOW + 1000)
    key = auth.authenticate(bearer(api_key))
    assert isinstance(key, ApiKey) and key.key_id == key_id and key.accounts == {"alice"}
    secret = api_key.split(".")[1]
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert problem(auth.authenticate(bearer(f"{key_id}.{wrong}"))) == "unknown"
    assert problem(auth.authenticate(bearer(f"pk_{'0' * 16}.{secret}"))) == "unknown"
    assert problem(auth.authenticate(bearer(key_id))) == "malformed"
    clock[0] = NOW + 1000
    expired = auth.authenticate(bearer(api_key))
    assert problem(expired) == "expired" and expired.metadata["key_id"] == key_id  # type: ignore[union-attr]


def test_the_cache_never_outlives_the_record() -> None:
    snapshot = Snapshot()
    auth = ApiKeyAuth(snapshot, clock=lambda: NOW)
    key_id, api_key = issue(snapshot, "alice")
    assert isinstance(auth.authenticate(bearer(api_key)), ApiKey)
    assert api_key in auth._verified

    # Revoked: refused on the very next call, and forgotten.
    fields = dict(api_key_fields(auth.authenticate(bearer(api_key)), "r", "a"))  # type: ignore[arg-type]
    snapshot.apply(FlagKind.API_KEY, key_id, {**fields, "revoked_ms": str(NOW), "version": "2"}, 2)
    assert problem(auth.authenticate(bearer(api_key))) == "revoked"

    # Deleted by a full reload (no change event): the cached verification is not trusted.
    _, other_key = issue(snapshot, "bob")
    assert isinstance(auth.authenticate(bearer(other_key)), ApiKey)
    snapshot.replace_all({})
    assert problem(auth.authenticate(bearer(other_key))) == "unknown"
    assert other_key not in auth._verified

    # A record under the same id with another digest: the old secret no longer works.
    third_id, third_key = issue(snapshot, "carol")
    assert isinstance(auth.authenticate(bearer(third_key)), ApiKey)
    replaced = ApiKey(third_id, digest_of("x" * 43), frozenset({"carol"}), Channel.PROGRAM)
    fields = {**api_key_fields(replaced, "r", "a"), "version": "9"}
    snapshot.replace_all({FlagKind.API_KEY: {third_id: fields}})
    assert problem(auth.authenticate(bearer(third_key))) == "unknown"


def test_the_cache_is_bounded_and_only_holds_verified_keys() -> None:
    snapshot = Snapshot()
    auth = ApiKeyAuth(snapshot, clock=lambda: NOW, cache_size=3)
    keys = [issue(snapshot, "alice")[1] for _ in range(5)]
    for api_key in keys:
        assert isinstance(auth.authenticate(bearer(api_key)), ApiKey)
    assert len(auth._verified) == 3 and list(auth._verified) == keys[2:]
    for n in range(50):  # unknown keys never take a place in it
        auth.authenticate(bearer(f"pk_{n:016x}.{'a' * 43}"))
    assert list(auth._verified) == keys[2:]
    # Evicted keys still work: they are just verified again.
    assert isinstance(auth.authenticate(bearer(keys[0])), ApiKey)


def test_authorize_is_exact_membership() -> None:
    key = ApiKey(
        "pk_0123456789abcdef", "0" * 64, frozenset({"alice", "alice.sub1"}), Channel.PROGRAM
    )
    for account in ("alice", "alice.sub1"):
        assert authorize(key, OrderCall(Action.CANCEL, account, "BTC-USDT")) is None
    for account in ("ALICE", "alice.sub", "alice.sub1 ", "bob", "alice.sub10"):
        denial = authorize(key, OrderCall(Action.PLACE, account, "BTC-USDT"))
        assert denial is not None and denial.reason is Reason.ACCOUNT_MISMATCH
        assert denial.code.name == "PERMISSION_DENIED"


# -- in the engine ---------------------------------------------------------------------------


async def test_engine_checks_the_key_before_anything_else() -> None:
    snapshot = Snapshot()
    engine = PreTradeEngine(snapshot, clock=lambda: NOW, auth=ApiKeyAuth(snapshot, lambda: NOW))
    _, api_key = issue(snapshot, "alice")
    # Unauthenticated garbage learns nothing about the request's validity.
    assert problem(await engine.screen_bytes(PLACE, b"\xff\xff")) == "missing"
    assert problem(await engine.screen(PLACE, pb.PlaceOrderRequest())) == "missing"
    assert problem(engine.refuse_undecodable(PLACE, ())) == "missing"
    invalid = await engine.screen_bytes(PLACE, b"\xff\xff", bearer(api_key))
    assert invalid is not None and invalid.reason is Reason.INVALID_REQUEST
    assert engine.refuse_undecodable(PLACE, bearer(api_key)).reason is Reason.INVALID_REQUEST
    # Valid for its account; refused for another one, before the symbol is even looked at.
    mismatch = await engine.screen(PLACE, limit_order("bob", "NOPE"), bearer(api_key))
    assert mismatch is not None and mismatch.reason is Reason.ACCOUNT_MISMATCH
    unknown_symbol = await engine.screen(PLACE, limit_order("alice", "NOPE"), bearer(api_key))
    assert unknown_symbol is not None and unknown_symbol.reason is Reason.SYMBOL_UNKNOWN
    cancel = pb.CancelOrderRequest(account_id="bob", symbol="BTC-USDT", order_id="X-1")
    denied = await engine.screen(CANCEL, cancel, bearer(api_key))
    assert denied is not None and denied.reason is Reason.ACCOUNT_MISMATCH


async def test_key_channel_replaces_the_claimed_one() -> None:
    from gateway.model import SymbolSpec
    from gateway.symbol_limits import SymbolLimits

    spec = SymbolSpec(
        "ETH-USDT", "spot", "ETH", "USDT", SymbolLimits(program_trading_forbidden=True)
    )
    snapshot = Snapshot({"ETH-USDT": spec})
    engine = PreTradeEngine(snapshot, clock=lambda: NOW, auth=ApiKeyAuth(snapshot, lambda: NOW))
    _, program = issue(snapshot, "alice", channel=Channel.PROGRAM)
    _, person = issue(snapshot, "alice", channel=Channel.INTERACTIVE)
    order = limit_order("alice", "ETH-USDT")
    claim = (("x-pretrade-channel", "interactive"),)
    refused = await engine.screen(PLACE, order, bearer(program) + claim)
    assert refused is not None and refused.reason is Reason.PROGRAM_TRADING_FORBIDDEN
    # The claim is not even parsed: a bad one does not matter either.
    bad_claim = (("x-pretrade-channel", "robot"),)
    assert await engine.screen(PLACE, order, bearer(person) + bad_claim) is None


def test_proxy_metadata_keeps_the_key_and_names_it() -> None:
    _, api_key = new_key()
    key_id = api_key.split(".")[0]
    sent = (
        ("authorization", f"Bearer {api_key}"),
        ("x-pretrade-key-id", "pk_ffffffffffffffff"),
        ("x-desk", "emea"),
        ("user-agent", "x"),
    )
    assert forwardable_metadata(sent, authenticated=True) == (
        ("x-desk", "emea"),
        ("x-pretrade-key-id", key_id),
    )
    assert forwardable_metadata(sent) == (
        ("authorization", f"Bearer {api_key}"),
        ("x-desk", "emea"),
    )
    assert key_id_of(sent[:1]) == key_id and key_id_of(()) == ""
