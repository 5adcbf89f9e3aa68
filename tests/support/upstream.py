"""A reference exchange whose PlaceOrder can be made to fail or to answer late."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.exchange import ReferenceExchange, start_exchange_server


class FaultyExchange(ReferenceExchange):
    """The reference exchange, plus faults on PlaceOrder for the next calls.

    * ``fail_next``: codes the next PlaceOrder calls fail with (nothing placed);
    * ``slow_s``: every PlaceOrder waits this long before it is handled;
    * ``late_s``: the order is placed, then the answer waits this long (a client
      with a shorter deadline never hears that it was placed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fail_next: list[grpc.StatusCode] = []
        self.slow_s = 0.0
        self.late_s = 0.0
        self.place_calls = 0
        #: PlaceOrder calls answered with an order
        self.answered = 0
        self.started = asyncio.Event()

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: Any
    ) -> pb.PlaceOrderResponse:
        self.place_calls += 1
        self.started.set()
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.fail_next:
            code = self.fail_next.pop(0)
            await context.abort(code, f"injected upstream failure: {code.name}")
        response = await super().PlaceOrder(request, context)
        if self.late_s:
            await asyncio.sleep(self.late_s)
        self.answered += 1
        return response


@contextlib.asynccontextmanager
async def running_upstream(exchange: ReferenceExchange) -> AsyncIterator[str]:
    """Serve ``exchange`` on a loopback port; yields its ``host:port``."""
    started = await start_exchange_server("127.0.0.1:0", exchange=exchange)
    try:
        yield f"127.0.0.1:{started.port}"
    finally:
        await started.server.stop(0.2)
