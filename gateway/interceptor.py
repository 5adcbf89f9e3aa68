"""Interceptor deployment: guard an exchange's own ``grpc.aio`` OrderEntry server.

The exchange keeps its servicer; the interceptor wraps the three unary
OrderEntry handlers (and nothing else) so each request is screened, once
deserialised, before the servicer sees it. A refusal aborts the call with the
rich status; the servicer is never called. Accepted calls get the remaining
counter budget added to the servicer's trailing metadata (``x-ratelimit-*``).
The guard deserialises the request itself, so bytes that are not a request are
answered INVALID_ARGUMENT (or UNAUTHENTICATED) like any bad input, not UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from gateway.counters.gate import Admission
from gateway.engine import ORDER_METHODS, OrderMethod, PreTradeEngine
from gateway.reasons import Denial
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
            self._guard(method, handler.unary_unary, handler.request_deserializer),  # type: ignore[arg-type]
            request_deserializer=None,  # bytes: the guard decodes them
            response_serializer=handler.response_serializer,
        )
        self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _guard(
        self,
        method: OrderMethod,
        behavior: Behavior,
        deserialize: Callable[[bytes], Any] | None,
    ) -> Behavior:
        admit = self._engine.admit
        refuse_undecodable = self._engine.refuse_undecodable
        decode = deserialize or method.request_type.FromString

        async def guarded(raw: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
            metadata = context.invocation_metadata()
            verdict: Denial | Admission
            try:
                request = decode(raw)
            except Exception:  # whatever the servicer's deserialiser raises on bad bytes
                verdict = refuse_undecodable(metadata)
            else:
                verdict = await admit(method, request, metadata)
            if isinstance(verdict, Denial):
                status = to_grpc_status(verdict)
                await context.abort(status.code, status.details, status.trailing_metadata)
                raise AssertionError("unreachable")  # pragma: no cover
            response = await behavior(request, context)
            verdict.accepted(response)
            if verdict.metadata:
                # Added to, never replacing, what the servicer set.
                servicers = tuple(context.trailing_metadata() or ())
                context.set_trailing_metadata(servicers + verdict.metadata)
            return response

        return guarded
