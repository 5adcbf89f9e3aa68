"""Proxy specifics: raw bytes, deadlines, metadata and upstream errors pass through unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc
from tests.support.rpc import limit_order, refusal, refused
from tests.support.servers import Clients, running_gateway, test_settings


class RecordingUpstream(order_entry_pb2_grpc.OrderEntryServicer):
    """An upstream that records what reached it and answers as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, dict[str, Any], float | None]] = []
        self.fail_with: tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]] | None = None
        self.delay_s = 0.0

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.PlaceOrderResponse:
        self.calls.append(
            (
                request.SerializeToString(),
                dict(context.invocation_metadata() or ()),
                context.time_remaining(),
            )
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            code, details, trailers = self.fail_with
            await context.abort(code, details, trailers)
        return pb.PlaceOrderResponse(
            order_id="U-1", client_order_id=request.client_order_id, status=pb.ORDER_STATUS_NEW
        )


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[RecordingUpstream, str]]:
    servicer = RecordingUpstream()
    server = aio.server()
    order_entry_pb2_grpc.add_OrderEntryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def proxied(
    redis_url: str, upstream: tuple[RecordingUpstream, str]
) -> AsyncIterator[tuple[Clients, RecordingUpstream, str]]:
    servicer, address = upstream
    async with running_gateway(test_settings(redis_url, upstream=address)) as (gateway, clients):
        yield clients, servicer, f"127.0.0.1:{gateway.order_port}"


async def test_request_bytes_and_metadata_pass_through(
    proxied: tuple[Clients, RecordingUpstream, str],
) -> None:
    clients, upstream, _ = proxied
    request = limit_order(client_order_id="c-1")
    response = await clients.orders.PlaceOrder(
        request, metadata=(("x-client", "bot-7"), ("x-trace-bin", b"\x00\x01")), timeout=5
    )
    assert response.order_id == "U-1"
    raw, metadata, remaining = upstream.calls[0]
    assert raw == request.SerializeToString()
    assert metadata["x-client"] == "bot-7"
    assert metadata["x-trace-bin"] == b"\x00\x01"
    # The deadline travels on (grpc-timeout is sent in whole units, so allow rounding).
    assert remaining is not None and 0 < remaining <= 5.05


async def test_deadline_is_kept(proxied: tuple[Clients, RecordingUpstream, str]) -> None:
    clients, upstream, _ = proxied
    upstream.delay_s = 2.0
    r = await refused(clients.orders.PlaceOrder(limit_order(), timeout=0.3))
    assert r.code == grpc.StatusCode.DEADLINE_EXCEEDED
    _, _, remaining = upstream.calls[0]
    # The deadline travels on (grpc-timeout is sent in whole units, so allow rounding).
    assert remaining is not None and remaining <= 0.35


async def test_upstream_error_returned_unchanged(
    proxied: tuple[Clients, RecordingUpstream, str],
) -> None:
    clients, upstream, _ = proxied
    info = error_details_pb2.ErrorInfo(reason="INSUFFICIENT_BALANCE", domain="exchange.example")
    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message="no money", details=[detail]
    )
    upstream.fail_with = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "no money",
        (("grpc-status-details-bin", status.SerializeToString()), ("x-venue", "ref")),
    )
    try:
        await clients.orders.PlaceOrder(limit_order())
    except aio.AioRpcError as exc:
        r = refusal(exc)
        assert (r.code, r.message, r.domain, r.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "no money",
            "exchange.example",
            "INSUFFICIENT_BALANCE",
        )
        assert ("x-venue", "ref") in tuple(exc.trailing_metadata() or ())
    else:
        raise AssertionError("expected the upstream's error")


async def test_garbage_bytes_are_invalid_argument(
    proxied: tuple[Clients, RecordingUpstream, str],
) -> None:
    _, upstream, address = proxied
    async with aio.insecure_channel(address) as channel:
        raw_call = channel.unary_unary("/pretrade.v1.OrderEntry/PlaceOrder")
        try:
            await raw_call(b"\xff\xff\xff\xff\x0f", timeout=5)
        except aio.AioRpcError as exc:
            r = refusal(exc)
            assert r.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "request" in r.bad_fields
        else:
            raise AssertionError("garbage was accepted")
    assert upstream.calls == []


async def test_unreachable_upstream_is_unavailable(redis_url: str) -> None:
    from gateway.embedded_redis import free_port

    async with running_gateway(test_settings(redis_url, upstream=f"127.0.0.1:{free_port()}")) as (
        _,
        clients,
    ):
        r = await refused(clients.orders.PlaceOrder(limit_order(), timeout=2))
        assert r.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
