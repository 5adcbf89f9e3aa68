"""A small load driver: paced workers calling the gateway, every answer recorded with its time."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from tests.support.rpc import refusal
from tests.support.servers import Clients

OK = grpc.StatusCode.OK


@dataclass(frozen=True)
class Outcome:
    kind: str
    #: time.monotonic() when sent and when the answer arrived
    sent: float
    answered: float
    code: grpc.StatusCode
    #: ErrorInfo reason of a gateway refusal, "" otherwise (OK, or an upstream error)
    reason: str = ""
    trailers: tuple[tuple[str, str], ...] = ()

    @property
    def took(self) -> float:
        return self.answered - self.sent

    @property
    def ok(self) -> bool:
        return self.code is OK


async def timed(kind: str, call: Any) -> Outcome:
    """Await a unary call; never raises for a gRPC error (it is the outcome)."""
    sent = time.monotonic()
    try:
        await call
        trailers = tuple((k, str(v)) for k, v in (await call.trailing_metadata() or ()))
        return Outcome(kind, sent, time.monotonic(), OK, trailers=trailers)
    except aio.AioRpcError as exc:
        answered = time.monotonic()
        got = refusal(exc)
        return Outcome(kind, sent, answered, got.code, got.reason)


@dataclass
class Driver:
    """``workers`` tasks, each calling ``action(n)`` then sleeping ``pause_s``, until
    :meth:`stop` (or ``max_calls`` in all, or ``max_s``): bounded in count and time."""

    action: Callable[[int], Awaitable[Outcome]]
    workers: int = 4
    pause_s: float = 0.1
    max_calls: int = 20_000
    max_s: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Driver:
        numbers = itertools.count()
        deadline = time.monotonic() + self.max_s

        async def work() -> None:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n = next(numbers)
                if n >= self.max_calls:
                    return
                self.outcomes.append(await self.action(n))
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)

        self._tasks = [asyncio.create_task(work()) for _ in range(self.workers)]
        return self

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


async def set_limit(
    clients: Clients, kind: int, value: str, account: str = "", *, actor: str = "test"
) -> None:
    scope = apb.LIMIT_SCOPE_ACCOUNT if account else apb.LIMIT_SCOPE_DEFAULT
    await clients.admin.SetLimit(
        apb.SetLimitRequest(
            scope=scope,  # type: ignore[arg-type]
            key=account,
            kind=kind,  # type: ignore[arg-type]
            value=value,
            reason="reliability test",
            actor=actor,
        )
    )


async def health_status(channel_address: str, service: str) -> int:
    """The gRPC health status of ``service`` at ``channel_address`` (an enum number)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with aio.insecure_channel(channel_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)
