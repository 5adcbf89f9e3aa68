"""TLS for the two ports.

A port serves TLS when given a certificate and key; with a client CA too, it
demands a client certificate signed by that CA (mutual TLS) and refuses the
handshake otherwise. Client certificates are always verified when a CA is
given: an unverified certificate never reaches the admin role check.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import grpc
from grpc import aio


class TLSConfigError(ValueError):
    """Certificate flags that do not go together, or files that cannot be read."""


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert: pathlib.Path
    key: pathlib.Path
    client_ca: pathlib.Path | None = None

    @classmethod
    def from_paths(
        cls,
        port: str,
        cert: pathlib.Path | None,
        key: pathlib.Path | None,
        client_ca: pathlib.Path | None,
    ) -> ServerTLS | None:
        """None for plaintext; refuses half a configuration."""
        if cert is None and key is None:
            if client_ca is not None:
                raise TLSConfigError(f"{port}: a client CA needs a server certificate and key")
            return None
        if cert is None or key is None:
            raise TLSConfigError(f"{port}: give both a certificate and its key")
        return cls(cert, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        chain, key = read_pem(self.cert), read_pem(self.key)
        if self.client_ca is None:
            return grpc.ssl_server_credentials([(key, chain)])
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=read_pem(self.client_ca), require_client_auth=True
        )


def bind(server: aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Listen on ``address`` (plaintext without credentials); the port bound."""
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def read_pem(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {path}: {exc.strerror}") from exc
