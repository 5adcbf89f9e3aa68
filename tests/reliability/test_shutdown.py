"""Graceful shutdown: stop accepting, finish the calls in flight, run the hooks, exit."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time

import grpc
from grpc import aio

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.server import Gateway
from tests.support.rpc import limit_order
from tests.support.servers import connect, gateway_process, test_settings
from tests.support.upstream import FaultyExchange, running_upstream


async def test_in_flight_call_completes_then_hooks_run(redis_url: str) -> None:
    exchange = FaultyExchange()
    exchange.slow_s = 1.0
    events: list[str] = []
    async with running_upstream(exchange) as upstream:
        gateway = await Gateway.start(test_settings(redis_url, upstream=upstream, grace_s=5.0))
        keeper = gateway.keeper
        assert keeper is not None

        async def flush() -> None:
            await keeper.redis.ping()  # Redis is still there for the flush
            events.append(f"hook after {exchange.answered} answer(s)")

        gateway.add_shutdown_hook("audit-flush", flush)
        clients = await connect(
            f"127.0.0.1:{gateway.order_port}", f"127.0.0.1:{gateway.admin_port}"
        )
        try:

            async def slow_place() -> pb.PlaceOrderResponse:
                response = await clients.orders.PlaceOrder(limit_order(), timeout=10)
                events.append("call done")
                return response

            in_flight = asyncio.create_task(slow_place())
            await asyncio.wait_for(exchange.started.wait(), 5)
            stopping = asyncio.create_task(gateway.stop())
            await asyncio.sleep(0.2)
            # Not accepting any more.
            try:
                await clients.orders.PlaceOrder(limit_order(), timeout=2)
            except aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAVAILABLE
            else:
                raise AssertionError("a call was accepted after the shutdown began")
            response = await asyncio.wait_for(in_flight, 10)
            assert response.status == pb.ORDER_STATUS_NEW
            await asyncio.wait_for(stopping, 10)
        finally:
            await clients.close()
    assert sorted(events) == ["call done", "hook after 1 answer(s)"]
    assert exchange.place_calls == 1


async def test_grace_is_bounded(redis_url: str) -> None:
    """A call still running when the grace runs out is cancelled; the stop does not hang."""
    exchange = FaultyExchange()
    exchange.slow_s = 30.0
    async with running_upstream(exchange) as upstream:
        gateway = await Gateway.start(test_settings(redis_url, upstream=upstream))
        clients = await connect(
            f"127.0.0.1:{gateway.order_port}", f"127.0.0.1:{gateway.admin_port}"
        )
        try:
            in_flight = asyncio.ensure_future(clients.orders.PlaceOrder(limit_order(), timeout=60))
            await asyncio.wait_for(exchange.started.wait(), 5)
            started = time.monotonic()
            await asyncio.wait_for(gateway.stop(grace_s=0.5), 10)
            assert time.monotonic() - started < 8
            try:
                await asyncio.wait_for(in_flight, 5)
            except aio.AioRpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            else:
                raise AssertionError("the call outlived the grace")
        finally:
            await clients.close()


async def test_sigterm_on_a_gateway_process(redis_url: str, tmp_path: pathlib.Path) -> None:
    exchange = FaultyExchange()
    exchange.slow_s = 1.0
    async with running_upstream(exchange) as upstream:
        with gateway_process(redis_url, tmp_path, upstream=upstream) as process:
            clients = await connect(process.order_address, process.admin_address)
            try:
                in_flight = asyncio.ensure_future(
                    clients.orders.PlaceOrder(limit_order(), timeout=10)
                )
                await asyncio.wait_for(exchange.started.wait(), 5)
                process.process.send_signal(signal.SIGTERM)
                response = await asyncio.wait_for(in_flight, 10)
                assert response.status == pb.ORDER_STATUS_NEW
                for _ in range(200):  # bounded: 10 s
                    if process.process.poll() is not None:
                        break
                    await asyncio.sleep(0.05)
                assert process.process.returncode == 0
            finally:
                await clients.close()
            log = process.log()
            assert log.index("gateway.stopping") < log.index("gateway.stopped")
