"""Proxy deployment: serve OrderEntry, screen each call, forward accepted ones upstream.

Requests and responses stay in wire form: the proxy parses a request once for
the checks and forwards the very bytes it received; upstream responses go back
as the bytes the upstream sent. The caller's deadline and metadata go along,
and an upstream error reaches the client unchanged (code, message, trailers,
rich details included). Accepted calls carry the remaining counter budget in
trailing metadata (``x-ratelimit-*``). The caller's API key stays here: upstream
gets ``x-pretrade-key-id`` (the verified key's id) instead of ``authorization``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter

import grpc
from grpc import aio

from gateway.auth import AUTHORIZATION_KEY, KEY_ID_METADATA_KEY, key_id_of
from gateway.decisions import REQUEST_ID_KEY
from gateway.engine import ORDER_ENTRY_SERVICE, ORDER_METHODS, OrderMethod, PreTradeEngine
from gateway.reasons import Denial
from gateway.refusals import to_grpc_status

RawHandler = Callable[[bytes, aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]

# Set by the gRPC stack itself on each hop; never copied onto the upstream call.
_HOP_HEADERS = frozenset({"user-agent", "content-type", "te", "host", "grpc-timeout"})


def forwardable_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None, authenticated: bool = False
) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata for the upstream call.

    ``x-pretrade-key-id`` is the gateway's to set, never the caller's; with
    ``authenticated``, the credential is replaced by the id of the key it verified.
    """
    if not metadata:
        return ()
    dropped = (AUTHORIZATION_KEY, KEY_ID_METADATA_KEY) if authenticated else (KEY_ID_METADATA_KEY,)
    kept = tuple(
        (key, value)
        for key, value in metadata
        if key not in _HOP_HEADERS and key not in dropped and not key.startswith((":", "grpc-"))
    )
    if authenticated:
        return (*kept, (KEY_ID_METADATA_KEY, key_id_of(metadata)))
    return kept


class OrderEntryProxy:
    """A generic handler for ``pretrade.v1.OrderEntry`` that forwards to ``upstream``."""

    def __init__(self, engine: PreTradeEngine, upstream: aio.Channel) -> None:
        self._engine = engine
        self._upstream = upstream

    def handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(self._forwarder(method))
            for method in ORDER_METHODS.values()
        }
        return grpc.method_handlers_generic_handler(ORDER_ENTRY_SERVICE, handlers)

    def _forwarder(self, method: OrderMethod) -> RawHandler:
        # No serializers on either side: bytes in, bytes out.
        upstream_call = self._upstream.unary_unary(method.path, None, None)
        admit_bytes = self._engine.admit_bytes
        next_id = self._engine.request_ids.next
        sink = self._engine.sink
        authenticated = self._engine.auth is not None

        async def forward(raw: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            request_id = next_id()
            tag = ((REQUEST_ID_KEY, request_id),)
            verdict = await admit_bytes(
                method, raw, context.invocation_metadata(), request_id, context.peer()
            )
            if isinstance(verdict, Denial):
                status = to_grpc_status(verdict)
                await context.abort(status.code, status.details, (*status.trailing_metadata, *tag))
                raise AssertionError("unreachable")  # pragma: no cover
            started = perf_counter()
            try:
                response: bytes = await upstream_call(
                    raw,
                    timeout=context.time_remaining(),
                    metadata=forwardable_metadata(
                        context.invocation_metadata(),  # type: ignore[arg-type]
                        authenticated,
                    ),
                )
            except aio.AioRpcError as exc:
                sink.upstream(method.name, perf_counter() - started, exc.code().name)
                verdict.failed(exc.code())
                trailers = (*tuple(exc.trailing_metadata() or ()), *tag)
                await context.abort(exc.code(), exc.details() or "", trailers)  # type: ignore[arg-type]
            sink.upstream(method.name, perf_counter() - started, None)
            verdict.accepted_bytes(response)
            context.set_trailing_metadata((*tag, *verdict.metadata))
            return response

        return forward
