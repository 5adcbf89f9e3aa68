"""Helpers for the operations tests: deployments that expose their Gatekeeper, scraping, polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from gateway.decisions import REQUEST_ID_KEY
from gateway.engine import Gatekeeper
from tests.support.servers import Clients, running_gateway, running_interceptor, test_settings

T = TypeVar("T")


@dataclass
class OpsDeployment:
    kind: str
    clients: Clients
    keeper: Gatekeeper
    metrics_port: int = 0

    async def flush(self) -> None:
        """Write the audit backlog now (instead of waiting for the writer's next tick)."""
        await self.keeper.ops.audit.flush()


@contextlib.asynccontextmanager
async def ops_deployment(
    kind: str, redis_url: str, **settings: Any
) -> AsyncIterator[OpsDeployment]:
    if kind == "proxy":
        async with running_gateway(test_settings(redis_url, **settings)) as (gateway, clients):
            assert gateway.keeper is not None
            yield OpsDeployment(kind, clients, gateway.keeper, gateway.metrics_port)
    else:
        async with running_interceptor(redis_url) as guarded:
            assert isinstance(guarded.keeper, Gatekeeper)
            yield OpsDeployment(kind, guarded.clients, guarded.keeper)


async def request_id_of(call: Any) -> tuple[str, BaseException | None]:
    """Await a unary call; return its x-request-id (success or refusal) and the error if any."""
    try:
        await call
    except aio.AioRpcError as exc:
        return dict(exc.trailing_metadata() or ()).get(REQUEST_ID_KEY, ""), exc
    trailers = await call.trailing_metadata()
    return dict(trailers or ()).get(REQUEST_ID_KEY, ""), None


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 10.0
) -> T:
    """Poll ``probe`` until ``done(result)``; bounded in time, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.02)


def scrape(port: int) -> dict[str, float]:
    """Every sample of a /metrics endpoint, keyed ``name{label="v",...}`` (labels sorted)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def ascrape(port: int) -> dict[str, float]:
    return await asyncio.to_thread(scrape, port)
