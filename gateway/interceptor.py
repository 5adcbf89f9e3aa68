"""Interceptor deployment: guard an exchange's own ``grpc.aio`` OrderEntry server.

The exchange keeps its servicer; the interceptor wraps the three unary
OrderEntry handlers (and nothing else) so each request is screened, once
deserialised, before the servicer sees it. A refusal aborts the call with the
rich status; the servicer is never called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from gateway.decisions import REQUEST_ID_KEY
from gateway.engine import ORDER_METHODS, OrderMethod, PreTradeEngine
from gateway.ops import add_request_id
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
        next_id = self._engine.request_ids.next
        sink = self._engine.sink

        async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            request_id = next_id()
            tag = ((REQUEST_ID_KEY, request_id),)
            denial = await screen(method, request, request_id)
            if denial is not None:
                status = to_grpc_status(denial)
                await context.abort(status.code, status.details, (*status.trailing_metadata, *tag))
            # Set before the servicer runs: its own abort() sends these unless it passes its own.
            context.set_trailing_metadata(tag)
            started = perf_counter()
            failed: str | None = None
            try:
                return await behavior(request, context)
            except Exception:  # context.abort raises too; its code is on the context
                failed = _code_name(context.code()) or "UNKNOWN"
                raise
            finally:
                sink.upstream(method.name, perf_counter() - started, failed or _error_code(context))
                if not any(key == REQUEST_ID_KEY for key, _ in context.trailing_metadata() or ()):
                    add_request_id(context, request_id)  # the servicer replaced the trailers

        return guarded


def _code_name(code: Any) -> str | None:
    if code is None:
        return None
    if isinstance(code, grpc.StatusCode):
        return code.name
    for known in grpc.StatusCode:
        if known.value[0] == code:
            return known.name
    return None


def _error_code(context: aio.ServicerContext[Any, Any]) -> str | None:
    name = _code_name(context.code())
    return None if name in (None, "OK") else name
