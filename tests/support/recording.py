"""An upstream that records what reaches it: proves what the gateway forwards, and what not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from grpc import aio

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc


@dataclass
class Received:
    method: str
    request: Any
    metadata: dict[str, str | bytes]


@dataclass
class RecordingExchange(pb_grpc.OrderEntryServicer):
    """Accepts everything and remembers it (method, request, metadata)."""

    calls: list[Received] = field(default_factory=list)

    def _record(self, method: str, request: Any, context: Any) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or ()}
        self.calls.append(Received(method, request, metadata))

    async def PlaceOrder(self, request: Any, context: Any) -> pb.PlaceOrderResponse:
        self._record("PlaceOrder", request, context)
        return pb.PlaceOrderResponse(order_id=f"R-{len(self.calls)}", status=pb.ORDER_STATUS_NEW)

    async def CancelOrder(self, request: Any, context: Any) -> pb.CancelOrderResponse:
        self._record("CancelOrder", request, context)
        return pb.CancelOrderResponse(order_id=request.order_id, status=pb.ORDER_STATUS_CANCELED)

    async def AmendOrder(self, request: Any, context: Any) -> pb.AmendOrderResponse:
        self._record("AmendOrder", request, context)
        return pb.AmendOrderResponse(order_id=request.order_id, status=pb.ORDER_STATUS_NEW)


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[tuple[RecordingExchange, str]]:
    """A :class:`RecordingExchange` on a loopback port: ``(recorder, "127.0.0.1:PORT")``."""
    recorder = RecordingExchange()
    server = aio.server()
    pb_grpc.add_OrderEntryServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield recorder, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
