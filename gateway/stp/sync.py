"""Keeps :class:`~gateway.stp.book.OwnOrders` true: linked accounts' resting orders.

Three sources, each applied as soon as it arrives:

* the calls this gateway forwards: an accepted place adds the order, an
  accepted amend moves it, an accepted cancel removes it (from the upstream's
  response, so the book is right before the client hears back);
* the upstream's execution feed (``ExecutionFeed.StreamExecutions``, the same
  stream the reference prices come from, see :mod:`gateway.refprice`): new
  orders, fills, amends, cancels and expiries of every linked account, whichever
  gateway forwarded them;
* the upstream's open-order query (``ExecutionFeed.ListOpenOrders``), per linked
  account: whenever the feed (re)connects, after a restart included, the book is
  rebuilt from it; and when an account is linked, its orders already resting are
  read.

The rebuild is made *after* the feed is subscribed: reports published while the
query runs wait on the stream and are applied after it, in order, so the book
converges on the exchange's state. Orders seen done are never taken back (the
book remembers their ids), so a late answer cannot resurrect one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from grpc import aio

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway._generated.pretrade.v1 import order_entry_pb2_grpc as pb_grpc
from gateway.decimals import DecimalFormatError, parse_positive_decimal
from gateway.model import FlagKind
from gateway.stp.book import Resting
from gateway.tasks import stop_task

if TYPE_CHECKING:
    from gateway.snapshot import Snapshot

log = structlog.get_logger("gateway.stp")

_OPEN = frozenset({pb.ORDER_STATUS_NEW, pb.ORDER_STATUS_PARTIALLY_FILLED})
_DONE = frozenset({pb.ORDER_STATUS_FILLED, pb.ORDER_STATUS_CANCELED, pb.ORDER_STATUS_EXPIRED})
_QUERY_TIMEOUT_S = 5.0
_CONCURRENT_QUERIES = 16


def resting_from_order(order: pb.Order) -> Resting | None:
    """The order as the book keeps it, or None when it does not rest (done, market, bad)."""
    if order.status not in _OPEN or order.type != pb.ORDER_TYPE_LIMIT or not order.order_id:
        return None
    if order.side not in (pb.SIDE_BUY, pb.SIDE_SELL):
        return None
    try:
        price = parse_positive_decimal(order.price)
    except DecimalFormatError:
        return None
    return Resting(
        order.order_id, order.account_id, order.symbol, order.side, price, order.client_order_id
    )


class OwnOrderSync:
    """Applies the execution feed and the open-order query to the snapshot's own-order book.

    Plugged into the execution feed follower (:meth:`resync` on every connect,
    :meth:`on_report` for every report); follows membership changes itself.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._book = snapshot.own_orders
        self._groups = snapshot.groups
        self._channel: aio.Channel | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Linked accounts whose resting orders were read (or are being read).
        self._known: set[str] = set()
        #: Set once a rebuild from the upstream has succeeded.
        self.ready = asyncio.Event()
        self.rebuilds = 0
        snapshot.on_change(self._on_change)
        snapshot.on_reload(self._reconcile)

    # -- the execution feed ------------------------------------------------------

    def on_report(self, report: pb.ExecutionReport) -> None:
        order = report.order
        if not self._groups.group_of(order.account_id):
            return
        if order.status in _DONE:
            self._book.close(order.order_id)
            return
        resting = resting_from_order(order)
        if resting is not None:
            self._book.upsert(resting)

    async def resync(self, channel: aio.Channel) -> None:
        """Rebuild the book from the upstream's open orders of every linked account.

        Never raises: an upstream without ``ListOpenOrders`` (or one failing it)
        leaves the book to the feed and the forwarded calls, and is logged.
        """
        self._channel = channel
        accounts = sorted(self._groups.members)
        found = await self._query(channel, accounts)
        for account in self._book.accounts():
            if not self._groups.group_of(account):
                self._book.drop_account(account)
        failed = 0
        for account, orders in zip(accounts, found, strict=True):
            if orders is None:
                failed += 1
                continue
            if not self._groups.group_of(account):
                continue  # unlinked while we asked
            self._book.drop_account(account)
            for resting in orders:
                self._book.upsert(resting)
            self._known.add(account)
        self.rebuilds += 1
        log.info(
            "stp.rebuilt", accounts=len(accounts), failed=failed, resting_orders=len(self._book)
        )
        if not failed:
            self.ready.set()

    # -- membership -------------------------------------------------------------

    def _on_change(self, kind: FlagKind, key: str) -> None:
        if kind is FlagKind.GROUP_MEMBER:
            self._membership_changed(key)

    def _membership_changed(self, account: str) -> None:
        if not self._groups.group_of(account):
            self._book.drop_account(account)
            self._known.discard(account)
        elif account not in self._known:
            self._known.add(account)
            self._spawn(self._read_account(account))

    def _reconcile(self) -> None:
        """After a full reload of the flags: forget the unlinked, read the newly linked."""
        for account in self._known | self._book.accounts():
            if not self._groups.group_of(account):
                self._book.drop_account(account)
                self._known.discard(account)
        for account in self._groups.members:
            if account not in self._known:
                self._known.add(account)
                self._spawn(self._read_account(account))

    async def _read_account(self, account: str) -> None:
        """Read a newly linked account's resting orders (a failure is retried at the next
        rebuild, i.e. the feed's next connect, or the next full reload of the flags)."""
        channel = self._channel
        if channel is None:
            return  # no feed yet: the first rebuild reads it
        (orders,) = await self._query(channel, [account])
        if orders is None:
            self._known.discard(account)
            return
        if self._groups.group_of(account):
            for resting in orders:
                self._book.upsert(resting, only_new=True)

    # -- plumbing ---------------------------------------------------------------

    async def _query(self, channel: aio.Channel, accounts: list[str]) -> list[list[Resting] | None]:
        stub = pb_grpc.ExecutionFeedStub(channel)
        gate = asyncio.Semaphore(_CONCURRENT_QUERIES)

        async def one(account: str) -> list[Resting] | None:
            async with gate:
                try:
                    response = await stub.ListOpenOrders(
                        pb.ListOpenOrdersRequest(account_id=account), timeout=_QUERY_TIMEOUT_S
                    )
                except aio.AioRpcError as exc:
                    log.warning(
                        "stp.open_orders_unavailable",
                        account_id=account,
                        code=exc.code().name,
                        error=exc.details(),
                    )
                    return None
                except Exception as exc:  # e.g. the feed's channel closed meanwhile
                    log.warning("stp.open_orders_unavailable", account_id=account, error=repr(exc))
                    return None
            return [
                r
                for o in response.orders
                if o.account_id == account and (r := resting_from_order(o)) is not None
            ]

        return list(await asyncio.gather(*(one(a) for a in accounts)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside a loop (tests): the next rebuild reads it
            work.close()
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            await stop_task(task)
        self._tasks.clear()
        self._channel = None
