"""Both deployments behind one fixture: every e2e test runs against the proxy and the interceptor."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway.client import open_channel
from gateway.exchange import ReferenceExchange
from tests.support.servers import Clients, running_gateway, running_interceptor, test_settings


@dataclass
class Deployment:
    kind: str
    clients: Clients
    exchange: ReferenceExchange


@pytest.fixture(params=["proxy", "interceptor"])
async def deployment(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Deployment]:
    if request.param == "proxy":
        async with running_gateway(test_settings(redis_url)) as (gateway, clients):
            assert gateway.exchange is not None
            yield Deployment("proxy", clients, gateway.exchange)
    else:
        async with running_interceptor(redis_url) as guarded:
            assert isinstance(guarded.exchange, ReferenceExchange)
            yield Deployment("interceptor", guarded.clients, guarded.exchange)


ADMIN_TOKEN = "admin-token-for-tests-0123456789"


@dataclass
class Secured:
    """A deployment with authentication on: API keys on the order port, a token on admin."""

    kind: str
    order_address: str
    admin_address: str
    exchange: ReferenceExchange
    admin: admin_pb2_grpc.AdminAsyncStub
    #: The admin token's credential name, as audit records show it.
    token_name: str = ""
    keeper: Any = None
    _channels: list[aio.Channel] = field(default_factory=list)

    def orders(self, api_key: str | None = None) -> order_entry_pb2_grpc.OrderEntryAsyncStub:
        """An order-entry client sending ``api_key`` (none: no credential)."""
        channel = open_channel(self.order_address, bearer=api_key)
        self._channels.append(channel)
        return order_entry_pb2_grpc.OrderEntryStub(channel)  # type: ignore[return-value]

    def admin_as(self, token: str | None) -> admin_pb2_grpc.AdminAsyncStub:
        channel = open_channel(self.admin_address, bearer=token)
        self._channels.append(channel)
        return admin_pb2_grpc.AdminStub(channel)  # type: ignore[return-value]

    async def issue(
        self, *accounts: str, channel: int = apb.ORDER_CHANNEL_INTERACTIVE, **extra: Any
    ) -> apb.IssueApiKeyResponse:
        request = apb.IssueApiKeyRequest(
            account_ids=accounts, channel=channel, reason="test", actor="tests", **extra
        )  # type: ignore[arg-type]
        return await self.admin.IssueApiKey(request, timeout=5)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)


@pytest.fixture(params=["proxy", "interceptor"])
async def secured(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: pathlib.Path
) -> AsyncIterator[Secured]:
    if request.param == "proxy":
        settings = test_settings(
            redis_url, auth=True, admin_token=ADMIN_TOKEN, admin_token_file=tmp_path / "unused"
        )
        async with running_gateway(settings) as (gateway, _):
            assert gateway.exchange is not None
            deployment = Secured(
                "proxy",
                f"127.0.0.1:{gateway.order_port}",
                f"127.0.0.1:{gateway.admin_port}",
                gateway.exchange,
                admin=None,  # type: ignore[arg-type]
                token_name="admin-token",
                keeper=gateway.keeper,
            )
            deployment.admin = deployment.admin_as(ADMIN_TOKEN)
            try:
                yield deployment
            finally:
                await deployment.close()
    else:
        async with running_interceptor(
            redis_url, auth=True, admin_tokens={"ops": ADMIN_TOKEN}
        ) as guarded:
            assert isinstance(guarded.exchange, ReferenceExchange)
            deployment = Secured(
                "interceptor",
                guarded.order_address,
                guarded.admin_address,
                guarded.exchange,
                admin=None,  # type: ignore[arg-type]
                token_name="ops",
                keeper=guarded.keeper,
            )
            deployment.admin = deployment.admin_as(ADMIN_TOKEN)
            try:
                yield deployment
            finally:
                await deployment.close()
