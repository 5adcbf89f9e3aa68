"""Channels to a gateway port for clients (the CLI, tests, scripts): TLS and credentials.

The credential (an API key on the order port, an admin token on the admin
port) goes with every call as ``authorization: Bearer ...`` metadata, added
by a client interceptor so no call site can forget it.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grpc
from grpc import aio

from gateway.auth import AUTHORIZATION_KEY
from gateway.tls import TLSConfigError, read_pem


class _Bearer(
    aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds ``authorization: Bearer <token>`` to every call, unary and streaming."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION_KEY, f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*tuple(details.metadata or ()), self._header))

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def open_channel(
    address: str,
    *,
    bearer: str | None = None,
    ca: pathlib.Path | None = None,
    cert: pathlib.Path | None = None,
    key: pathlib.Path | None = None,
) -> aio.Channel:
    """A channel to ``address``: TLS when a CA or a client certificate is given."""
    interceptors: list[Any] = [_Bearer(bearer)] if bearer else []
    if ca is None and cert is None and key is None:
        return aio.insecure_channel(address, interceptors=interceptors)
    if (cert is None) != (key is None):
        raise TLSConfigError("give both a client certificate and its key")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca) if ca is not None else None,
        private_key=read_pem(key) if key is not None else None,
        certificate_chain=read_pem(cert) if cert is not None else None,
    )
    return aio.secure_channel(address, credentials, interceptors=interceptors)
