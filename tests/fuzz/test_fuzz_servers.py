"""Property-based fuzzing of running gateways (proxy and interceptor, authentication on).

Hypothesis drives request fields, raw bytes and credentials at a real server
whose upstream records every call it gets. For every input: the server answers
(no crash, no hang), a refusal is a known reason with its fixed status code,
malformed input is INVALID_ARGUMENT (UNAUTHENTICATED without a valid key), and
nothing refused ever reaches the upstream. Example counts are bounded so the
suite stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc import aio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.reasons import STATUS_BY_REASON, Reason
from gateway.validation import parse_amend, parse_cancel, parse_place
from tests.support.recording import RecordingExchange
from tests.support.rpc import refusal

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
ACCOUNTS = ("alice", "bob")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
CALL_TIMEOUT_S = 10.0
#: A server that crashed, hung or leaked an exception answers with one of these.
BROKEN = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
}


@dataclass
class Target:
    kind: str
    order_address: str
    admin_address: str
    recorder: RecordingExchange
    api_key: str
    loop: asyncio.AbstractEventLoop
    channel: aio.Channel
    admin_channel: aio.Channel

    def call(self, path: str, raw: bytes, metadata: Any) -> aio.AioRpcError | bytes:
        """One unary call; the servers run on the same loop while it waits."""
        return self.loop.run_until_complete(_unary(self.channel, path, raw, metadata))

    def call_admin(self, path: str, raw: bytes, metadata: Any, streaming: bool) -> Any:
        if not streaming:
            return self.loop.run_until_complete(_unary(self.admin_channel, path, raw, metadata))
        return self.loop.run_until_complete(_stream(self.admin_channel, path, raw, metadata))

    @property
    def authorised(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)


async def _unary(
    channel: aio.Channel, path: str, raw: bytes, metadata: Any
) -> aio.AioRpcError | bytes:
    try:
        response: bytes = await channel.unary_unary(path)(
            raw, timeout=CALL_TIMEOUT_S, metadata=metadata
        )
    except aio.AioRpcError as exc:
        return exc
    return response


async def _stream(channel: aio.Channel, path: str, raw: bytes, metadata: Any) -> Any:
    try:
        async for _ in channel.unary_stream(path)(
            raw, timeout=STREAM_DEADLINE_S, metadata=metadata
        ):
            pass
    except aio.AioRpcError as exc:
        return exc
    return b""


async def _start(
    kind: str, redis_url: str, tmp: pathlib.Path, stack: contextlib.AsyncExitStack
) -> tuple[str, str, RecordingExchange]:
    from gateway.server import SERVER_OPTIONS
    from tests.support.recording import recording_upstream
    from tests.support.servers import running_gateway, test_settings

    if kind == "proxy":
        recorder, upstream = await stack.enter_async_context(recording_upstream())
        settings = test_settings(
            redis_url,
            auth=True,
            admin_token=ADMIN_TOKEN,
            admin_token_file=tmp / "unused",
            upstream=upstream,
        )
        gateway, _ = await stack.enter_async_context(running_gateway(settings))
        return f"127.0.0.1:{gateway.order_port}", f"127.0.0.1:{gateway.admin_port}", recorder

    from gateway import Gatekeeper, PreTradeInterceptor, load_policy
    from gateway.admin import AdminService
    from gateway.admin_auth import AdminCredentials, AdminGuard
    from tests.support.servers import POLICY

    keeper = await Gatekeeper.open(redis_url, load_policy(POLICY))
    stack.push_async_callback(keeper.close)
    recorder = RecordingExchange()
    server = aio.server(interceptors=[PreTradeInterceptor(keeper.engine)], options=SERVER_OPTIONS)
    order_entry_pb2_grpc.add_OrderEntryServicer_to_server(recorder, server)
    order_port = server.add_insecure_port("127.0.0.1:0")
    admin = aio.server(
        interceptors=[AdminGuard(AdminCredentials({"ops": ADMIN_TOKEN}))], options=SERVER_OPTIONS
    )
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(keeper), admin)
    admin_port = admin.add_insecure_port("127.0.0.1:0")
    await server.start()
    await admin.start()
    stack.push_async_callback(server.stop, 0)
    stack.push_async_callback(admin.stop, 0)
    return f"127.0.0.1:{order_port}", f"127.0.0.1:{admin_port}", recorder


async def _issue_key(admin_address: str) -> str:
    async with aio.insecure_channel(admin_address) as channel:
        issued = await admin_pb2_grpc.AdminStub(channel).IssueApiKey(
            apb.IssueApiKeyRequest(
                account_ids=ACCOUNTS,
                channel=apb.ORDER_CHANNEL_INTERACTIVE,
                reason="fuzz",
                actor="fuzz",
            ),
            metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
            timeout=CALL_TIMEOUT_S,
        )
    return issued.api_key


async def _channels(order: str, admin: str) -> tuple[aio.Channel, aio.Channel]:
    return aio.insecure_channel(order), aio.insecure_channel(admin)


@pytest.fixture(params=["proxy", "interceptor"])
def target(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: pathlib.Path
) -> Iterator[Target]:
    """Servers and clients on one event loop of this (synchronous) test's own: hypothesis
    drives it one call at a time, and no loop or gRPC object crosses a thread."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        run = loop.run_until_complete
        order, admin, recorder = run(_start(request.param, redis_url, tmp_path, stack))
        api_key = run(_issue_key(admin))
        channel, admin_channel = run(_channels(order, admin))
        stack.push_async_callback(channel.close, None)
        stack.push_async_callback(admin_channel.close, None)
        yield Target(request.param, order, admin, recorder, api_key, loop, channel, admin_channel)
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


# -- strategies --------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
_NASTY_NUMBERS = [
    "", "0", "1", "0.1", "00.1", "1.", ".1", "-1", "+1", "1e3", "1E+999999999", "NaN", "nan",
    "sNaN", "Infinity", "-inf", "0x10", "1_000", "\u0661", "\uff11", " 1", "1 ", "1\x00",
    "9" * 19, "0." + "9" * 19, "9" * 18 + "." + "9" * 18, "1" * 5000,
]  # fmt: skip
_numbers = st.one_of(
    st.sampled_from(_NASTY_NUMBERS),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(0, 10**40).map(str),
    st.floats().map(repr),
    _text,
)
_enums = st.one_of(st.integers(0, 4), st.integers(-(2**31), 2**31 - 1))
_ids = st.one_of(st.sampled_from(["", "X-1", "c-1"]), _text)

#: Mostly sensible values, so that many requests get past validation to the checks.
_SANE: dict[str, Any] = {
    "account_id": st.sampled_from([*ACCOUNTS, "mallory"]),
    "symbol": st.sampled_from(
        ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BTC-USDT-PERP", "ETH-USDT-PERP", "NOPE-USDT"]
    ),
    "side": st.sampled_from([pb.SIDE_BUY, pb.SIDE_SELL]),
    "type": st.sampled_from([pb.ORDER_TYPE_LIMIT, pb.ORDER_TYPE_LIMIT, pb.ORDER_TYPE_MARKET]),
    "quantity": st.sampled_from(["0.001", "0.01", "0.5", "1", "2.5", "1000"]),
    "price": st.sampled_from(["0.01", "100", "2000", "60000", "65000.5"]),
    "leverage": st.integers(0, 150),
    "reduce_only": st.booleans(),
    "client_order_id": st.one_of(st.just(""), st.integers(1, 99).map("c-{}".format)),
    "time_in_force": st.sampled_from(list(pb.TimeInForce.values())),
    "order_id": st.sampled_from(["X-1", "R-1", "R-2"]),
}
#: Hostile values, a few of which replace sensible ones in each request.
_HOSTILE: dict[str, Any] = {
    "account_id": _text,
    "symbol": _text,
    "side": _enums,
    "type": _enums,
    "quantity": _numbers,
    "price": _numbers,
    "leverage": st.integers(0, 2**32 - 1),
    "client_order_id": _ids,
    "time_in_force": _enums,
    "order_id": _ids,
}


def fuzzed(message_type: Any, fields: list[str]) -> Any:
    """Requests of ``message_type`` with sane values and 0-3 hostile ones."""
    hostile = sorted(f for f in fields if f in _HOSTILE)

    @st.composite
    def build(draw: Any) -> Any:
        values = {name: draw(_SANE[name]) for name in fields}
        for name in draw(st.sets(st.sampled_from(hostile), max_size=3)):
            values[name] = draw(_HOSTILE[name])
        if message_type is pb.AmendOrderRequest and draw(st.booleans()):
            values[draw(st.sampled_from(["quantity", "price"]))] = ""
        return message_type(**values)

    return build()


place_requests = fuzzed(
    pb.PlaceOrderRequest,
    ["account_id", "symbol", "side", "type", "quantity", "price", "leverage", "reduce_only",
     "client_order_id", "time_in_force"],
)  # fmt: skip
cancel_requests = fuzzed(
    pb.CancelOrderRequest, ["account_id", "symbol", "order_id", "client_order_id"]
)
amend_requests = fuzzed(
    pb.AmendOrderRequest,
    ["account_id", "symbol", "order_id", "client_order_id", "quantity", "price"],
)

METHODS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "PlaceOrder": (place_requests, parse_place),
    "CancelOrder": (cancel_requests, parse_cancel),
    "AmendOrder": (amend_requests, parse_amend),
}


# -- the oracle ----------------------------------------------------------------------


def judge(
    target: Target, outcome: aio.AioRpcError | bytes, forwarded_before: int, valid: bool
) -> None:
    """Every answer is an acceptance that was forwarded, or a known refusal that was not."""
    forwarded = len(target.recorder.calls) - forwarded_before
    if isinstance(outcome, bytes):
        assert valid, "a request the gateway calls malformed was accepted"
        assert forwarded == 1
        return
    code = outcome.code()
    assert code not in BROKEN, (code, outcome)
    assert forwarded == 0, f"refused ({code}) but forwarded"
    got = refusal(outcome)
    assert got.domain == "pretrade.v1", got
    reason = Reason(got.reason)
    assert STATUS_BY_REASON[reason] == code, got
    if not valid:
        assert code == grpc.StatusCode.INVALID_ARGUMENT and got.bad_fields, got
    elif code == grpc.StatusCode.INVALID_ARGUMENT:
        raise AssertionError(f"a valid request was called malformed: {got}")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_request_fields(target: Target, method: str) -> None:
    strategy, parse = METHODS[method]
    path = f"/pretrade.v1.OrderEntry/{method}"

    @FUZZ
    @given(request=strategy)
    def run(request: Any) -> None:
        valid = not hasattr(parse(request), "reason")
        before = len(target.recorder.calls)
        outcome = target.call(path, request.SerializeToString(), target.authorised)
        judge(target, outcome, before, valid)

    run()


def test_raw_bytes(target: Target) -> None:
    @FUZZ
    @given(
        method=st.sampled_from(sorted(METHODS)),
        raw=st.binary(max_size=600),
        with_key=st.booleans(),
    )
    def run(method: str, raw: bytes, with_key: bool) -> None:
        request_type = {"PlaceOrder": pb.PlaceOrderRequest, "CancelOrder": pb.CancelOrderRequest,
                        "AmendOrder": pb.AmendOrderRequest}[method]  # fmt: skip
        try:
            valid = not hasattr(METHODS[method][1](request_type.FromString(raw)), "reason")
        except Exception:
            valid = False
        before = len(target.recorder.calls)
        metadata = target.authorised if with_key else ()
        outcome = target.call(f"/pretrade.v1.OrderEntry/{method}", raw, metadata)
        if not with_key:
            assert isinstance(outcome, aio.AioRpcError)
            assert outcome.code() == grpc.StatusCode.UNAUTHENTICATED
            assert len(target.recorder.calls) == before
            return
        judge(target, outcome, before, valid)

    run()


_header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


def test_credentials(target: Target) -> None:
    """Any credential but the issued one is UNAUTHENTICATED, whatever else the call says."""
    key = target.api_key

    def mutate(data: st.DataObject) -> str:
        index = data.draw(st.integers(0, len(key) - 1))
        char = data.draw(st.sampled_from("abcdefABCDEF0123456789._-"))
        return key[:index] + char + key[index + 1 :]

    @FUZZ
    @given(data=st.data(), scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer"]),
           kind=st.sampled_from(["random", "mutated", "truncated", "extended"]))  # fmt: skip
    def run(data: st.DataObject, scheme: str, kind: str) -> None:
        if kind == "random":
            credential = data.draw(_header_text)
        elif kind == "mutated":
            credential = mutate(data)
        elif kind == "truncated":
            credential = key[: data.draw(st.integers(0, len(key) - 1))]
        else:
            credential = key + data.draw(_header_text.filter(bool))
        value = scheme + credential
        assume(value.strip().lower() != f"bearer {key}".lower() or credential != key)
        assume(value == value.strip())  # grpc trims header values itself
        before = len(target.recorder.calls)
        request = pb.PlaceOrderRequest(
            account_id="alice", symbol="BTC-USDT", side=pb.SIDE_BUY, type=pb.ORDER_TYPE_LIMIT,
            quantity="1", price="100",
        )  # fmt: skip
        outcome = target.call(
            "/pretrade.v1.OrderEntry/PlaceOrder",
            request.SerializeToString(),
            (("authorization", value),),
        )
        if isinstance(outcome, bytes):
            raise AssertionError(f"accepted with credential {value!r}")
        assert outcome.code() == grpc.StatusCode.UNAUTHENTICATED, (value, outcome)
        assert refusal(outcome).reason == "UNAUTHENTICATED"
        assert len(target.recorder.calls) == before

    run()


ADMIN_SERVICE = apb.DESCRIPTOR.services_by_name["Admin"]
ADMIN_METHODS = sorted(ADMIN_SERVICE.methods_by_name)
#: A valid watch streams until the client goes: its deadline ends it, as intended.
STREAM_DEADLINE_S = 0.5


def test_admin_raw_bytes(target: Target) -> None:
    """Garbage to every admin method: UNAUTHENTICATED without the token; with it, an answer
    (never a crash)."""

    @FUZZ
    @given(method=st.sampled_from(ADMIN_METHODS), raw=st.binary(max_size=300),
           with_token=st.booleans())  # fmt: skip
    def run(method: str, raw: bytes, with_token: bool) -> None:
        metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),) if with_token else ()
        streaming = ADMIN_SERVICE.methods_by_name[method].server_streaming
        outcome = target.call_admin(f"/pretrade.v1.Admin/{method}", raw, metadata, streaming)
        if isinstance(outcome, aio.AioRpcError):
            code = outcome.code()
            if not with_token:
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method, outcome)
            elif not (streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED):
                assert code not in BROKEN, (method, code, outcome)
        else:
            assert with_token, f"{method} answered without a credential"

    run()
