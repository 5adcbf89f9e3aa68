"""Reference prices: what the price bands and market-order notionals are measured against.

Two sources:

* ``upstream``: the last trade price the exchange published on its execution
  feed (``ExecutionFeed.StreamExecutions``, TRADE reports' ``last_price``). Each
  gateway follows the feed itself (:class:`ExecutionPriceFollower`) and keeps
  the prices in memory (:class:`TradePrices`); the age counts from when this
  gateway received the trade.
* ``ops``: a price pinned with ``SetReferencePrice`` (a flag in Redis, synced to
  every gateway like any other).

Precedence: a pin in force wins over the upstream's trades (ops pin a price
precisely when the market's prints are not to be trusted) and counts as fresh
until it lapses or is cleared. Otherwise the upstream's last trade is used, and
is *stale* once older than the symbol's maximum age.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

import grpc
import structlog
from grpc import aio

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc
from gateway.decimals import DecimalFormatError, parse_positive_decimal
from gateway.model import FlagKind, SymbolSpec
from gateway.symbol_limits import reference_max_age_ms
from gateway.tasks import stop_task
from gateway.validation import SYMBOL_RE

if TYPE_CHECKING:
    from gateway.ops_records import OpsRecord
    from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.refprice")

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 5.0


class TradePrices:
    """The upstream's last trade price per symbol, with the wall-clock ms it arrived."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Decimal, int]] = {}

    def observe(self, symbol: str, price: Decimal, at_ms: int) -> None:
        self._last[symbol] = (price, at_ms)

    def get(self, symbol: str) -> tuple[Decimal, int] | None:
        return self._last.get(symbol)

    def __len__(self) -> int:
        return len(self._last)


@dataclass(frozen=True, slots=True)
class Reference:
    price: Decimal
    source: str  # "ops" or "upstream"
    observed_ms: int
    fresh: bool
    max_age_ms: int

    def age_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.observed_ms)


def reference_price(snapshot: Snapshot, spec: SymbolSpec, now_ms: int) -> Reference | None:
    """The reference price in force for ``spec``'s symbol, or None when there is none."""
    max_age = reference_max_age_ms(spec.limits, snapshot.products.get(spec.product))
    pinned: OpsRecord[Decimal] | None = snapshot.ops_record(
        FlagKind.REFERENCE_PRICE, spec.symbol, now_ms
    )
    if pinned is not None:
        return Reference(pinned.value, "ops", pinned.updated_ms, True, max_age)
    last = snapshot.trade_prices.get(spec.symbol)
    if last is None:
        return None
    price, at_ms = last
    return Reference(price, "upstream", at_ms, now_ms - at_ms <= max_age, max_age)


class ExecutionObserver(Protocol):
    """Something else that follows the same execution feed (one stream serves all)."""

    async def resync(self, channel: aio.Channel) -> None:
        """Called on every (re)connect, once the stream is subscribed and before its first
        report is read: reports published meanwhile wait on the stream. Must not raise."""

    def on_report(self, report: pb.ExecutionReport) -> None:
        """Called for every report, in the feed's order."""


class ExecutionPriceFollower:
    """Follows an upstream's ``ExecutionFeed`` and records every trade's price.

    Runs as a task until :meth:`stop`; reconnects with backoff whenever the
    stream fails or ends (an upstream without the feed answers UNIMPLEMENTED and
    is retried at the slowest pace). Prices already recorded stay; they simply
    age and go stale if the feed stays away. ``observers`` see the same stream.
    """

    def __init__(
        self, target: str, prices: TradePrices, observers: Sequence[ExecutionObserver] = ()
    ) -> None:
        self._target = target
        self._prices = prices
        self._observers = tuple(observers)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        #: Set once the first connection attempt has ended, either way.
        self.attempted = asyncio.Event()
        self.trades_seen = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"price-feed {self._target}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        failing = False
        while True:
            try:
                async with aio.insecure_channel(self._target) as channel:
                    stub = pb_grpc.ExecutionFeedStub(channel)
                    stream = stub.StreamExecutions(pb.StreamExecutionsRequest())
                    await stream.initial_metadata()
                    for observer in self._observers:
                        await observer.resync(channel)
                    self.connected.set()
                    self.attempted.set()
                    if failing:
                        log.info("price_feed.connected", upstream=self._target)
                    failing = False
                    backoff = _BACKOFF_MIN_S
                    async for report in stream:
                        self._on_report(report, time.time_ns() // 1_000_000)
                        for observer in self._observers:
                            observer.on_report(report)
            except asyncio.CancelledError:
                raise
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    backoff = _BACKOFF_MAX_S
                if not failing:
                    log.warning(
                        "price_feed.unavailable",
                        upstream=self._target,
                        code=exc.code().name,
                        error=exc.details(),
                    )
                failing = True
            except Exception as exc:  # a bug or odd reply must not end the feed for good
                log.error("price_feed.error", upstream=self._target, error=repr(exc))
                failing = True
            self.connected.clear()
            self.attempted.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _on_report(self, report: pb.ExecutionReport, at_ms: int) -> None:
        if report.exec_type != pb.EXEC_TYPE_TRADE or not report.last_price:
            return
        symbol = report.order.symbol
        if SYMBOL_RE.fullmatch(symbol) is None:
            return
        try:
            price = parse_positive_decimal(report.last_price)
        except DecimalFormatError:
            log.warning("price_feed.bad_price", symbol=symbol, price=report.last_price[:40])
            return
        self._prices.observe(symbol, price, at_ms)
        self.trades_seen += 1
