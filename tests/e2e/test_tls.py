"""TLS and mutual TLS on both ports, and client certificates as the admin credential."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway.admin_auth import ADMIN_ROLE_OU
from gateway.client import open_channel
from gateway.server import Gateway
from tests.support.certs import Authority, CertFiles
from tests.support.rpc import limit_order
from tests.support.servers import running_gateway, test_settings

TOKEN = "tls-test-admin-token-0123456789"


@dataclass
class Pki:
    ca: Authority
    server: CertFiles
    admin: CertFiles  # OU=pretrade-admin
    trader: CertFiles  # no admin role
    smuggler: CertFiles  # CN "x,OU=pretrade-admin": the unit is inside the name
    stranger: CertFiles  # signed by another CA, with the admin role


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> Pki:
    ca = Authority.create(tmp_path / "pki")
    other = Authority.create(tmp_path / "pki", name="other")
    return Pki(
        ca=ca,
        server=ca.server(),
        admin=ca.client("alice", ADMIN_ROLE_OU),
        trader=ca.client("bot-7"),
        smuggler=ca.client(f"x,OU={ADMIN_ROLE_OU}"),
        stranger=other.client("mallory", ADMIN_ROLE_OU),
    )


@pytest.fixture
async def tls_gateway(redis_url: str, pki: Pki, tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:
    """TLS on order entry, mutual TLS on admin (certificates or the token)."""
    settings = test_settings(
        redis_url,
        auth=True,
        admin_token=TOKEN,
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        admin_tls_cert=pki.server.cert,
        admin_tls_key=pki.server.key,
        admin_tls_client_ca=pki.ca.cert_path,
        admin_token_file=tmp_path / "unused",
    )
    async with running_gateway(settings) as (gateway, _):
        yield gateway


def admin_channel(
    gateway: Gateway, pki: Pki, cert: CertFiles | None, token: str | None = None
) -> aio.Channel:
    return open_channel(
        f"127.0.0.1:{gateway.admin_port}",
        bearer=token,
        ca=pki.ca.cert_path,
        cert=cert.cert if cert else None,
        key=cert.key if cert else None,
    )


ISSUE = apb.IssueApiKeyRequest(
    account_ids=["alice"], channel=apb.ORDER_CHANNEL_PROGRAM, reason="tls", actor="ops"
)


async def admin_outcome(channel: aio.Channel) -> grpc.StatusCode:
    async with channel:
        try:
            await admin_pb2_grpc.AdminStub(channel).IssueApiKey(ISSUE, timeout=5)
        except aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_admin_certificates(tls_gateway: Gateway, pki: Pki) -> None:
    gw = tls_gateway
    # The admin role in a verified certificate is a credential of its own.
    assert await admin_outcome(admin_channel(gw, pki, pki.admin)) == grpc.StatusCode.OK
    # A certificate without the role is known but not allowed...
    assert (
        await admin_outcome(admin_channel(gw, pki, pki.trader)) == grpc.StatusCode.PERMISSION_DENIED
    )
    # ...unless its holder also has the token.
    assert await admin_outcome(admin_channel(gw, pki, pki.trader, TOKEN)) == grpc.StatusCode.OK
    # The role cannot be smuggled into the common name.
    assert (
        await admin_outcome(admin_channel(gw, pki, pki.smuggler))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Without a certificate from the admin CA there is no connection at all, token or not.
    for cert, token in ((None, TOKEN), (pki.stranger, TOKEN), (pki.stranger, None)):
        assert (
            await admin_outcome(admin_channel(gw, pki, cert, token)) == grpc.StatusCode.UNAVAILABLE
        )
    async with aio.insecure_channel(f"127.0.0.1:{gw.admin_port}") as plain:
        assert await admin_outcome(plain) == grpc.StatusCode.UNAVAILABLE


async def test_order_entry_over_tls(tls_gateway: Gateway, pki: Pki) -> None:
    gw = tls_gateway
    async with admin_channel(gw, pki, pki.admin) as channel:
        issued = await admin_pb2_grpc.AdminStub(channel).IssueApiKey(ISSUE, timeout=5)
    address = f"127.0.0.1:{gw.order_port}"
    async with open_channel(address, bearer=issued.api_key, ca=pki.ca.cert_path) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        orders = order_entry_pb2_grpc.OrderEntryStub(channel)
        await orders.PlaceOrder(limit_order("alice"), timeout=5)
    async with aio.insecure_channel(address) as plain:
        try:
            await order_entry_pb2_grpc.OrderEntryStub(plain).PlaceOrder(limit_order(), timeout=5)
        except aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        else:
            raise AssertionError("plaintext answered on a TLS port")
    # A client that does not trust the gateway's CA refuses the connection.
    other = Authority.create(pki.ca.directory, name="untrusted")
    async with open_channel(address, ca=other.cert_path) as channel:
        try:
            await order_entry_pb2_grpc.OrderEntryStub(channel).PlaceOrder(limit_order(), timeout=5)
        except aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        else:
            raise AssertionError("the client trusted a certificate it should not have")


async def test_order_entry_mutual_tls(redis_url: str, pki: Pki, tmp_path: pathlib.Path) -> None:
    settings = test_settings(
        redis_url,
        auth=True,
        admin_token=TOKEN,
        admin_token_file=tmp_path / "unused",
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        tls_client_ca=pki.ca.cert_path,
    )
    async with running_gateway(settings) as (gateway, _):
        async with open_channel(f"127.0.0.1:{gateway.admin_port}", bearer=TOKEN) as channel:
            issued = await admin_pb2_grpc.AdminStub(channel).IssueApiKey(ISSUE, timeout=5)
        address = f"127.0.0.1:{gateway.order_port}"
        ca = pki.ca.cert_path
        trader = pki.trader
        async with open_channel(
            address, bearer=issued.api_key, ca=ca, cert=trader.cert, key=trader.key
        ) as channel:
            await order_entry_pb2_grpc.OrderEntryStub(channel).PlaceOrder(limit_order(), timeout=5)
        # The certificate admits the connection; the API key is still required.
        async with open_channel(address, ca=ca, cert=trader.cert, key=trader.key) as channel:
            try:
                await order_entry_pb2_grpc.OrderEntryStub(channel).PlaceOrder(
                    limit_order(), timeout=5
                )
            except aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        for cert in (None, pki.stranger):
            async with open_channel(
                address,
                bearer=issued.api_key,
                ca=ca,
                cert=cert.cert if cert else None,
                key=cert.key if cert else None,
            ) as channel:
                try:
                    await order_entry_pb2_grpc.OrderEntryStub(channel).PlaceOrder(
                        limit_order(), timeout=5
                    )
                except aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                else:
                    raise AssertionError(f"connected without a trusted client certificate: {cert}")
