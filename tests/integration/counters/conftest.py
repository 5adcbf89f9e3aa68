"""A counter gate on a private Redis with a pinned clock: the script's time is the test's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.gate import Admission, CounterGate
from gateway.counters.limits import CounterPolicy, LimitKind, ScopeRef, parse_value
from gateway.counters.resolve import LimitResolver
from gateway.counters.store import RedisCounterStore
from gateway.model import Action, SymbolSpec
from gateway.reasons import Denial
from gateway.snapshot import Snapshot
from gateway.store.autopipe import auto_pipeline
from gateway.store.commands import Commands, RedisPyCommands
from gateway.store.redis_client import hot_client
from gateway.validation import OrderCall

#: 2023-11-14T22:13:20Z, a whole second.
EPOCH_US = 1_700_000_000_000_000

SYMBOLS = {
    "BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT"),
    "ETH-USDT": SymbolSpec("ETH-USDT", "spot", "ETH", "USDT"),
    "BTC-PERP": SymbolSpec("BTC-PERP", "perpetual", "BTC", "USDT"),
}


@dataclass
class Clock:
    now_us: int = EPOCH_US

    def __call__(self) -> int:
        return self.now_us

    def advance_ms(self, ms: float) -> None:
        self.now_us += int(ms * 1000)

    @property
    def now_ms(self) -> int:
        return self.now_us // 1000


@dataclass
class Harness:
    redis: Redis
    clock: Clock
    gate: CounterGate
    snapshot: Snapshot
    ids: dict[str, int] = field(default_factory=dict)

    def set_limits(self, tables: dict[ScopeRef, dict[str, str]], **settings: Any) -> None:
        policy = CounterPolicy(
            tables={
                ref: {LimitKind(k): parse_value(LimitKind(k), v) for k, v in table.items()}
                for ref, table in tables.items()
            },
            **settings,
        )
        self.gate.resolver.set_policy(policy)

    async def place(self, account: str = "alice", symbol: str = "BTC-USDT", *,
                    qty: str = "1", price: str | None = "100", reduce_only: bool = False,
                    client_order_id: str = "", accept_as: str = "") -> Denial | Admission:  # fmt: skip
        call = OrderCall(
            Action.PLACE, account, symbol, side=pb.SIDE_BUY,
            order_type=pb.ORDER_TYPE_LIMIT if price else pb.ORDER_TYPE_MARKET,
            quantity=Decimal(qty), price=Decimal(price) if price else None,
            reduce_only=reduce_only, client_order_id=client_order_id,
        )  # fmt: skip
        verdict = await self.gate.admit(call)
        if accept_as and isinstance(verdict, Admission):
            verdict.accepted(pb.PlaceOrderResponse(order_id=accept_as))
            await self.gate.close()  # the record is written in the background
        return verdict

    async def cancel(self, account: str = "alice", symbol: str = "BTC-USDT", *,
                     order_id: str = "", client_order_id: str = "") -> Denial | Admission:  # fmt: skip
        if not order_id and not client_order_id:
            order_id = "X-0"
        call = OrderCall(Action.CANCEL, account, symbol, order_id=order_id,
                         client_order_id=client_order_id)  # fmt: skip
        return await self.gate.admit(call)

    async def amend(self, account: str = "alice", symbol: str = "BTC-USDT", *,
                    order_id: str = "X-0", qty: str | None = None,
                    price: str | None = None) -> Denial | Admission:  # fmt: skip
        call = OrderCall(Action.AMEND, account, symbol, order_id=order_id,
                         quantity=Decimal(qty) if qty else None,
                         price=Decimal(price) if price else None)  # fmt: skip
        return await self.gate.admit(call)

    async def dump(self) -> dict[str, bytes]:
        """Every key's serialized value (no TTLs): equal dumps, equal counters."""
        raw = Redis(connection_pool=self.redis.connection_pool)
        out: dict[str, bytes] = {}
        async for key in self.redis.scan_iter("*"):
            value = await raw.execute_command("DUMP", key, NEVER_DECODE=True)
            out[key] = value
        return out


@pytest.fixture(params=["autopipe", "redis-py"])
async def harness(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Each test runs over both connections the gateway uses: its own auto-pipelined one
    (a single Redis) and redis-py's (a cluster, TLS)."""
    redis = hot_client(redis_url)
    pipe = auto_pipeline(redis_url, 1000, 2000) if request.param == "autopipe" else None
    commands: Commands = pipe if pipe is not None else RedisPyCommands(redis)
    clock = Clock()
    snapshot = Snapshot(SYMBOLS)
    gate = CounterGate(
        RedisCounterStore(commands, clock_us=clock),
        LimitResolver(snapshot, CounterPolicy()),
        clock=lambda: clock.now_ms,
    )
    try:
        yield Harness(redis, clock, gate, snapshot)
    finally:
        await gate.close()
        if pipe is not None:
            await pipe.aclose()
        await redis.aclose()


def admitted(verdict: Denial | Admission) -> Admission:
    assert isinstance(verdict, Admission), verdict
    return verdict


def denied(verdict: Denial | Admission) -> Denial:
    assert isinstance(verdict, Denial), verdict
    return verdict
