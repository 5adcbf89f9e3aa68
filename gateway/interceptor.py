"""Interceptor deployment: guard an exchange's own ``grpc.aio`` OrderEntry server.

The exchange keeps its servicer; the interceptor wraps the three unary
OrderEntry handlers (and nothing else) so each request is screened, once
deserialised, before the servicer sees it. A refusal aborts the call with the
rich status; the servicer is never called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from gateway.engine import ORDER_METHODS, OrderMethod, PreTradeEngine
from gateway.refusals import to_grpc_status

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


class PreTradeInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, engine: PreTradeEngine) -> None:
        self._engine = engine
        # Wrapped handlers are built once per original handler, not per call.
        self._wrapped: dict[int, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = ORDER_METHODS.get(handler_call_details.method)
        if method is None or handler is None or handler.unary_unary is None:
            return handler
        cached = self._wrapped.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._guard(method, handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _guard(self, method: OrderMethod, behavior: Behavior) -> Behavior:
        screen = self._engine.screen

        async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            denial = await screen(method, request, context.invocation_metadata())
            if denial is not None:
                status = to_grpc_status(denial)
                await context.abort(status.code, status.details, status.trailing_metadata)
            return await behavior(request, context)

        return guarded
