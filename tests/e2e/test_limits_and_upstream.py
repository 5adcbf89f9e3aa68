"""What reaches the upstream: the proxy keeps the credential, and oversized or malformed
calls are answered at the door, in both deployments, with nothing forwarded."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.client import open_channel
from gateway.server import SERVER_OPTIONS
from tests.e2e.conftest import ADMIN_TOKEN
from tests.support.recording import RecordingExchange, recording_upstream
from tests.support.rpc import limit_order, refused
from tests.support.servers import running_gateway, test_settings


@dataclass
class Guarded:
    kind: str
    order_address: str
    admin_address: str
    recorder: RecordingExchange
    api_key: str


async def _issue(admin_address: str) -> str:
    async with open_channel(admin_address, bearer=ADMIN_TOKEN) as channel:
        reply = await admin_pb2_grpc.AdminStub(channel).IssueApiKey(
            apb.IssueApiKeyRequest(
                account_ids=["alice"], channel=apb.ORDER_CHANNEL_PROGRAM, reason="r", actor="a"
            ),
            timeout=5,
        )
    return reply.api_key


@pytest.fixture(params=["proxy", "interceptor"])
async def guarded(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: pathlib.Path
) -> AsyncIterator[Guarded]:
    """Authentication on, a recording exchange behind; the interceptor's server takes the
    same message and metadata limits as ``serve``."""
    if request.param == "proxy":
        async with recording_upstream() as (recorder, address):
            settings = test_settings(
                redis_url,
                auth=True,
                admin_token=ADMIN_TOKEN,
                admin_token_file=tmp_path / "unused",
                upstream=address,
            )
            async with running_gateway(settings) as (gateway, _):
                admin = f"127.0.0.1:{gateway.admin_port}"
                yield Guarded(
                    "proxy", f"127.0.0.1:{gateway.order_port}", admin, recorder, await _issue(admin)
                )
        return
    from gateway import Gatekeeper, PreTradeInterceptor, load_policy
    from gateway.admin import AdminService
    from gateway.admin_auth import AdminCredentials, AdminGuard
    from tests.support.servers import POLICY

    keeper = await Gatekeeper.open(redis_url, load_policy(POLICY))
    recorder = RecordingExchange()
    server = aio.server(interceptors=[PreTradeInterceptor(keeper.engine)], options=SERVER_OPTIONS)
    order_entry_pb2_grpc.add_OrderEntryServicer_to_server(recorder, server)
    order_port = server.add_insecure_port("127.0.0.1:0")
    admin_server = aio.server(interceptors=[AdminGuard(AdminCredentials({"ops": ADMIN_TOKEN}))])
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(keeper), admin_server)
    admin_port = admin_server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await admin_server.start()
    try:
        admin = f"127.0.0.1:{admin_port}"
        yield Guarded(
            "interceptor", f"127.0.0.1:{order_port}", admin, recorder, await _issue(admin)
        )
    finally:
        await server.stop(0)
        await admin_server.stop(0)
        await keeper.close()


async def test_upstream_gets_the_key_id_not_the_key(guarded: Guarded) -> None:
    key_id = guarded.api_key.split(".")[0]
    async with open_channel(guarded.order_address, bearer=guarded.api_key) as channel:
        orders = order_entry_pb2_grpc.OrderEntryStub(channel)
        spoof = (("x-pretrade-key-id", "pk_ffffffffffffffff"), ("x-desk", "emea"))
        await orders.PlaceOrder(limit_order("alice"), metadata=spoof, timeout=5)
    (received,) = guarded.recorder.calls
    assert received.metadata["x-desk"] == "emea"
    if guarded.kind == "proxy":
        assert "authorization" not in received.metadata
        assert received.metadata["x-pretrade-key-id"] == key_id
    else:
        # The exchange's own servicer runs in the same process and sees the call as sent.
        assert received.metadata["authorization"] == f"Bearer {guarded.api_key}"


async def test_oversized_requests_are_refused_and_not_forwarded(guarded: Guarded) -> None:
    async with open_channel(guarded.order_address, bearer=guarded.api_key) as channel:
        orders = order_entry_pb2_grpc.OrderEntryStub(channel)
        huge = limit_order("alice", client_order_id="c" * (70 * 1024))
        r = await refused(orders.PlaceOrder(huge, timeout=5))
        assert r.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Just under the cap: decoded, and refused for the field's length.
        big = limit_order("alice", client_order_id="c" * (60 * 1024))
        r = await refused(orders.PlaceOrder(big, timeout=5))
        assert (r.code, list(r.bad_fields)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ["client_order_id"],
        )
        # Metadata over 16 KiB never reaches a handler.
        try:
            await orders.PlaceOrder(
                limit_order("alice"), metadata=(("x-pad", "p" * (20 * 1024)),), timeout=5
            )
        except aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            raise AssertionError("a call with 20 KiB of metadata was served")
        # The server is fine afterwards.
        await orders.PlaceOrder(limit_order("alice"), timeout=5)
    assert len(guarded.recorder.calls) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", "1e3"),
        ("quantity", "1E+999999999"),
        ("quantity", "NaN"),
        ("quantity", "-Infinity"),
        ("quantity", "inf"),
        ("quantity", "0x10"),
        ("quantity", "1_000"),
        ("quantity", "\u0661"),  # an Arabic-Indic digit: int() and Decimal() take it
        ("quantity", "1" * 19),
        ("price", "0." + "1" * 19),
        ("price", " 100"),
        ("price", "100\x00"),
        ("account_id", "a" * 65),
        ("account_id", "alice\n"),
        ("account_id", "{alice}"),
        ("symbol", "BTC-USDT" * 5),
        ("client_order_id", "x" * 37),
    ],
)
async def test_bad_values_are_invalid_and_not_forwarded(
    guarded: Guarded, field: str, value: str
) -> None:
    async with open_channel(guarded.order_address, bearer=guarded.api_key) as channel:
        orders = order_entry_pb2_grpc.OrderEntryStub(channel)
        r = await refused(orders.PlaceOrder(limit_order("alice", **{field: value}), timeout=5))
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and field in r.bad_fields, r
    assert guarded.recorder.calls == []


async def test_many_bad_calls_at_once_leave_the_server_serving(guarded: Guarded) -> None:
    async with open_channel(guarded.order_address, bearer=guarded.api_key) as channel:
        place = channel.unary_unary("/pretrade.v1.OrderEntry/PlaceOrder")
        results = await asyncio.gather(
            *(place(bytes([i % 256]) * (i % 300), timeout=10) for i in range(200)),
            return_exceptions=True,
        )
        codes = {r.code() for r in results if isinstance(r, aio.AioRpcError)}
        assert codes == {grpc.StatusCode.INVALID_ARGUMENT}, codes
        orders = order_entry_pb2_grpc.OrderEntryStub(channel)
        reply = await orders.PlaceOrder(limit_order("alice"), timeout=5)
        assert reply.status == pb.ORDER_STATUS_NEW
    assert len(guarded.recorder.calls) == 1
