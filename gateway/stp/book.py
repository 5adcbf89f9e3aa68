"""Linked accounts' resting orders, per account, symbol and side: the best own bid and ask.

Pure data, no I/O: :mod:`gateway.stp.sync` feeds it from the calls this
gateway forwards, the upstream's execution feed and its open-order query.
Only linked accounts' orders are kept, and only what self-trade prevention
needs: which orders rest, on which side, at which price.

Bounded: at most :data:`MAX_ORDERS_PER_ACCOUNT` orders per account, so a group
holds at most ``MAX_GROUP_MEMBERS`` times that. An account at its bound keeps
its most aggressive orders: a new order better priced than the least
aggressive one on its side replaces it, a worse one is not kept (both counted
in ``pretrade_stp_untracked_orders_total``). The ids of orders seen done
(filled, cancelled, expired) are remembered, the last :data:`CLOSED_MEMORY`,
so that a late report or response never brings one back.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import Counter

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb

MAX_ORDERS_PER_ACCOUNT = 2000
CLOSED_MEMORY = 100_000

UNTRACKED = Counter(
    "pretrade_stp_untracked_orders",
    "Resting orders of linked accounts not kept for self-trade prevention (account at its bound)",
)

BUY = pb.SIDE_BUY
SELL = pb.SIDE_SELL


@dataclass(frozen=True, slots=True)
class Resting:
    """One resting limit order of a linked account."""

    order_id: str
    account_id: str
    symbol: str
    side: int  # pb.SIDE_BUY or pb.SIDE_SELL
    price: Decimal
    client_order_id: str = ""


def opposite(side: int) -> int:
    return SELL if side == BUY else BUY


def more_aggressive(side: int, price: Decimal, than: Decimal) -> bool:
    """A higher bid or a lower ask."""
    return price > than if side == BUY else price < than


class _Side:
    """Price levels of one side, best first on demand; orders in arrival order per level."""

    __slots__ = ("_buy", "_levels", "_prices")

    def __init__(self, side: int) -> None:
        self._buy = side == BUY
        self._levels: dict[Decimal, dict[str, None]] = {}
        self._prices: list[Decimal] = []  # ascending

    def __bool__(self) -> bool:
        return bool(self._prices)

    def best(self) -> tuple[Decimal, str] | None:
        if not self._prices:
            return None
        price = self._prices[-1] if self._buy else self._prices[0]
        return price, next(iter(self._levels[price]))

    def worst(self) -> tuple[Decimal, str] | None:
        if not self._prices:
            return None
        price = self._prices[0] if self._buy else self._prices[-1]
        return price, next(reversed(self._levels[price]))

    def add(self, price: Decimal, order_id: str) -> None:
        level = self._levels.get(price)
        if level is None:
            level = self._levels[price] = {}
            bisect.insort(self._prices, price)
        level[order_id] = None

    def remove(self, price: Decimal, order_id: str) -> None:
        level = self._levels.get(price)
        if level is None:
            return
        level.pop(order_id, None)
        if not level:
            del self._levels[price]
            del self._prices[bisect.bisect_left(self._prices, price)]


class OwnOrders:
    """Linked accounts' resting orders: by id, client order id and (account, symbol, side)."""

    def __init__(
        self, max_per_account: int = MAX_ORDERS_PER_ACCOUNT, closed_memory: int = CLOSED_MEMORY
    ) -> None:
        self._max = max_per_account
        self._closed_memory = closed_memory
        self._orders: dict[str, Resting] = {}
        self._sides: dict[tuple[str, str, int], _Side] = {}
        self._by_account: dict[str, dict[str, None]] = {}
        self._client_ids: dict[tuple[str, str], str] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._orders)

    def __iter__(self) -> Iterator[Resting]:
        return iter(list(self._orders.values()))

    # -- reads ------------------------------------------------------------------

    def count(self, account_id: str) -> int:
        return len(self._by_account.get(account_id, ()))

    def accounts(self) -> set[str]:
        return set(self._by_account)

    def get(self, order_id: str) -> Resting | None:
        return self._orders.get(order_id)

    def find(
        self, account_id: str, order_id: str = "", client_order_id: str = ""
    ) -> Resting | None:
        """The account's order by exchange id, else by client order id."""
        if not order_id and client_order_id:
            order_id = self._client_ids.get((account_id, client_order_id), "")
        found = self._orders.get(order_id) if order_id else None
        if found is None or found.account_id != account_id:
            return None
        if client_order_id and found.client_order_id != client_order_id:
            return None
        return found

    def is_closed(self, order_id: str) -> bool:
        return order_id in self._closed

    def best_opposite(self, accounts: Iterable[str], symbol: str, side: int) -> Resting | None:
        """The most aggressive resting order of ``accounts`` on the other side of ``side``
        (the best ask for a buy, the best bid for a sell); on a tie, the first account's."""
        other = opposite(side)
        best: tuple[Decimal, str] | None = None
        for account in accounts:
            book = self._sides.get((account, symbol, other))
            if book is None:
                continue
            found = book.best()
            if found is not None and (best is None or more_aggressive(other, found[0], best[0])):
                best = found
        return self._orders[best[1]] if best is not None else None

    # -- writes -----------------------------------------------------------------

    def upsert(self, order: Resting, *, only_new: bool = False) -> bool:
        """Keep ``order`` (or move a kept one to its new price). With ``only_new``, an order
        already kept is left as it is. False when it is not kept (done, or over the bound)."""
        if order.order_id in self._closed:
            return False
        held = self._orders.get(order.order_id)
        if held is not None:
            if only_new or held == order:
                return True
            self._remove(held)
        elif self.count(order.account_id) >= self._max and not self._evict_for(order):
            UNTRACKED.inc()
            return False
        self._add(order)
        return True

    def close(self, order_id: str) -> Resting | None:
        """The order is done (filled, cancelled, expired): forget it, and never take it back."""
        self._closed[order_id] = None
        self._closed.move_to_end(order_id)
        while len(self._closed) > self._closed_memory:
            self._closed.popitem(last=False)
        held = self._orders.get(order_id)
        if held is not None:
            self._remove(held)
        return held

    def drop_account(self, account_id: str) -> int:
        """Forget every order of the account (it left its group, or is being re-read)."""
        mine = list(self._by_account.get(account_id, ()))
        for order_id in mine:
            self._remove(self._orders[order_id])
        return len(mine)

    def clear(self) -> None:
        self._orders.clear()
        self._sides.clear()
        self._by_account.clear()
        self._client_ids.clear()

    # -- internals ----------------------------------------------------------------

    def _add(self, order: Resting) -> None:
        self._orders[order.order_id] = order
        key = (order.account_id, order.symbol, order.side)
        side = self._sides.get(key)
        if side is None:
            side = self._sides[key] = _Side(order.side)
        side.add(order.price, order.order_id)
        self._by_account.setdefault(order.account_id, {})[order.order_id] = None
        if order.client_order_id:
            self._client_ids[(order.account_id, order.client_order_id)] = order.order_id

    def _remove(self, order: Resting) -> None:
        del self._orders[order.order_id]
        key = (order.account_id, order.symbol, order.side)
        side = self._sides.get(key)
        if side is not None:
            side.remove(order.price, order.order_id)
            if not side:
                del self._sides[key]
        mine = self._by_account[order.account_id]
        del mine[order.order_id]
        if not mine:
            del self._by_account[order.account_id]
        if order.client_order_id:
            ref = (order.account_id, order.client_order_id)
            if self._client_ids.get(ref) == order.order_id:
                del self._client_ids[ref]

    def _evict_for(self, order: Resting) -> bool:
        side = self._sides.get((order.account_id, order.symbol, order.side))
        worst = side.worst() if side is not None else None
        if worst is None or not more_aggressive(order.side, order.price, worst[0]):
            return False
        self._remove(self._orders[worst[1]])
        UNTRACKED.inc()
        return True
