"""Admin calls while Redis is away: ``UNAVAILABLE``, not an unexplained ``UNKNOWN``.

The admin service reads and writes Redis directly (it is the source of truth
for flags and limits). A store error escaping a handler becomes ``UNAVAILABLE``
with a message naming the store, so ops tools can retry; nothing was half
applied (each write is one script).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import structlog
from grpc import aio

from gateway.store.redis_client import STORE_ERRORS

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

log = structlog.get_logger("gateway.admin")


class StoreUnavailableInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._wrapped: dict[int, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        cached = self._wrapped.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        behavior: Any = handler.unary_unary
        method = handler_call_details.method

        async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except STORE_ERRORS as exc:
                log.warning("admin.store_unavailable", method=method, error=repr(exc))
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the store (Redis) is unavailable ({type(exc).__name__}); nothing was "
                    "changed, try again",
                )

        wrapped = grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped
