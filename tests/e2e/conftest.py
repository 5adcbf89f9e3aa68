"""Both deployments behind one fixture: every e2e test runs against the proxy and the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

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
