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

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from gateway.counters.gate import Admission
from gateway.decisions import REQUEST_ID_KEY
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
        next_id = self._engine.request_ids.next
        sink = self._engine.sink

        async def guarded(raw: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
            request_id = next_id()
            tag = ((REQUEST_ID_KEY, request_id),)
            metadata = context.invocation_metadata()
            verdict: Denial | Admission
            try:
                request = decode(raw)
            except Exception:  # whatever the servicer's deserialiser raises on bad bytes
                verdict = refuse_undecodable(method, metadata, request_id)
            else:
                verdict = await admit(method, request, metadata, request_id, context.peer())
            if isinstance(verdict, Denial):
                status = to_grpc_status(verdict)
                await context.abort(status.code, status.details, (*status.trailing_metadata, *tag))
                raise AssertionError("unreachable")  # pragma: no cover
            ours = (*tag, *verdict.metadata)
            # Set before the servicer runs: its own abort() sends these unless it passes its own.
            context.set_trailing_metadata(ours)
            started = perf_counter()
            failed: str | None = None
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                raise
            except BaseException:  # context.abort raises too; its code is on the context
                failed = _code_name(context.code()) or "UNKNOWN"
                verdict.failed(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            finally:
                sink.upstream(method.name, perf_counter() - started, failed or _error_code(context))
                trailers = tuple(context.trailing_metadata() or ())
                if not any(key == REQUEST_ID_KEY for key, _ in trailers):
                    # The servicer replaced the trailers: add ours to, never over, its own.
                    context.set_trailing_metadata((*trailers, *ours))
            verdict.accepted(response)
            return response

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
