"""A gateway with its limits and a few accounts set up the same way for every fault test."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.embedded_redis import EmbeddedRedis
from gateway.server import Gateway
from gateway.settings import Settings
from tests.support.load import set_limit
from tests.support.rpc import limit_order
from tests.support.servers import Clients, running_gateway, test_settings

#: The hot path's deadline in these tests, and what a client may wait beyond it:
#: generous (a shared 2-core machine, often busy with other work: a Python process
#: can stall for a second or two), and well below the outages injected here (6 s),
#: so calls that waited for Redis to come back would be caught.
DEADLINE_MS = 200
MARGIN_S = 2.5
#: The capped account: at most CAP new orders in CAP_WINDOW, over the whole test.
CAP = 150
CAP_WINDOW = "10m"


@dataclass
class Setup:
    gateway: Gateway
    clients: Clients
    redis: EmbeddedRedis
    #: maker's resting orders, to cancel during an outage
    resting: list[str]


async def prepare(clients: Clients, resting: int = 20) -> list[str]:
    """Limits on everyone (so cancels and reduce-only orders do go to Redis), the cap on
    ``load``, ``frozen`` frozen, and ``maker`` long 1 BTC with ``resting`` orders open."""
    await set_limit(clients, apb.LIMIT_KIND_ORDER_RATE, "100000/1m")
    await set_limit(clients, apb.LIMIT_KIND_CANCEL_RATE, "100000/1m")
    await set_limit(clients, apb.LIMIT_KIND_ORDER_RATE, f"{CAP}/{CAP_WINDOW}", "load")
    await clients.admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="frozen", state=apb.ACCOUNT_STATE_FROZEN, reason="test", actor="ops"
        )
    )
    await clients.orders.PlaceOrder(limit_order("taker", side=pb.SIDE_SELL))
    await clients.orders.PlaceOrder(limit_order("maker"))  # fills: maker is long 1
    ids = []
    for i in range(resting):
        response = await clients.orders.PlaceOrder(limit_order("maker", price=str(90 - i % 5)))
        ids.append(response.order_id)
    return ids


def fault_settings(redis_url: str, **overrides: object) -> Settings:
    return test_settings(redis_url, redis_timeout_ms=DEADLINE_MS, **overrides)


@pytest.fixture
async def setup(redis_server: EmbeddedRedis, tmp_path: pathlib.Path) -> AsyncIterator[Setup]:
    async with running_gateway(fault_settings(redis_server.url)) as (gateway, clients):
        resting = await prepare(clients)
        yield Setup(gateway, clients, redis_server, resting)
