"""The own-order book: best own bid and ask per account, bounds, done orders stay done."""

from __future__ import annotations

from decimal import Decimal

from gateway.stp.book import BUY, SELL, OwnOrders, Resting


def order(
    oid: str, side: int = SELL, price: str = "100", account: str = "alice", symbol: str = "BTC-USDT",
    coid: str = "",
) -> Resting:  # fmt: skip
    return Resting(oid, account, symbol, side, Decimal(price), coid)


def test_best_opposite_is_the_best_ask_for_a_buy_and_the_best_bid_for_a_sell() -> None:
    book = OwnOrders()
    for oid, side, price in [("a", SELL, "101"), ("b", SELL, "100.5"), ("c", SELL, "102"),
                             ("d", BUY, "99"), ("e", BUY, "99.5"), ("f", BUY, "98")]:  # fmt: skip
        assert book.upsert(order(oid, side, price))
    assert book.best_opposite(["alice"], "BTC-USDT", BUY) == order("b", SELL, "100.5")
    assert book.best_opposite(["alice"], "BTC-USDT", SELL) == order("e", BUY, "99.5")
    assert book.best_opposite(["alice"], "ETH-USDT", BUY) is None
    assert book.best_opposite(["bob"], "BTC-USDT", BUY) is None


def test_best_across_accounts_and_first_in_at_a_level() -> None:
    book = OwnOrders()
    book.upsert(order("a1", SELL, "101", "alice"))
    book.upsert(order("b1", SELL, "100", "bob"))
    book.upsert(order("b2", SELL, "100", "bob"))
    assert book.best_opposite(["alice", "bob"], "BTC-USDT", BUY).order_id == "b1"  # type: ignore[union-attr]
    book.close("b1")
    assert book.best_opposite(["alice", "bob"], "BTC-USDT", BUY).order_id == "b2"  # type: ignore[union-attr]
    book.close("b2")
    assert book.best_opposite(["alice", "bob"], "BTC-USDT", BUY).order_id == "a1"  # type: ignore[union-attr]


def test_equal_decimals_share_a_level() -> None:
    book = OwnOrders()
    book.upsert(order("a", SELL, "100"))
    book.upsert(order("b", SELL, "100.00"))
    book.close("a")
    assert book.best_opposite(["alice"], "BTC-USDT", BUY).order_id == "b"  # type: ignore[union-attr]


def test_a_closed_order_never_comes_back() -> None:
    book = OwnOrders()
    book.upsert(order("a"))
    assert book.close("a") == order("a")
    assert not book.upsert(order("a"))
    assert not book.upsert(order("a"), only_new=True)
    assert book.is_closed("a") and len(book) == 0
    # Closing an order never seen also keeps it out (a fill report before the response).
    book.close("z")
    assert not book.upsert(order("z"))


def test_closed_memory_is_bounded() -> None:
    book = OwnOrders(closed_memory=3)
    for oid in "abcd":
        book.close(oid)
    assert not book.is_closed("a") and book.is_closed("d")


def test_upsert_moves_an_order_and_only_new_keeps_it() -> None:
    book = OwnOrders()
    book.upsert(order("a", SELL, "105"))
    book.upsert(order("a", SELL, "101"))
    assert len(book) == 1
    assert book.best_opposite(["alice"], "BTC-USDT", BUY).price == Decimal("101")  # type: ignore[union-attr]
    book.upsert(order("a", SELL, "90"), only_new=True)
    assert book.get("a").price == Decimal("101")  # type: ignore[union-attr]


def test_find_by_exchange_or_client_order_id_of_the_same_account() -> None:
    book = OwnOrders()
    book.upsert(order("a", coid="c-1"))
    assert book.find("alice", order_id="a") == order("a", coid="c-1")
    assert book.find("alice", client_order_id="c-1") == order("a", coid="c-1")
    assert book.find("bob", order_id="a") is None
    assert book.find("alice", order_id="a", client_order_id="other") is None
    book.close("a")
    assert book.find("alice", client_order_id="c-1") is None


def test_drop_account_forgets_only_that_account() -> None:
    book = OwnOrders()
    book.upsert(order("a1", account="alice"))
    book.upsert(order("a2", BUY, "90", account="alice"))
    book.upsert(order("b1", account="bob"))
    assert book.drop_account("alice") == 2
    assert book.accounts() == {"bob"} and len(book) == 1
    # Dropped is not done: the order may be read again (the account linked again).
    assert book.upsert(order("a1", account="alice"))


def test_bound_keeps_the_most_aggressive_orders() -> None:
    book = OwnOrders(max_per_account=3)
    for oid, price in [("a", "103"), ("b", "102"), ("c", "101")]:
        assert book.upsert(order(oid, SELL, price))
    # A worse ask than all kept is not kept.
    assert not book.upsert(order("d", SELL, "104"))
    # A better one replaces the least aggressive (the highest ask).
    assert book.upsert(order("e", SELL, "100"))
    assert {o.order_id for o in book} == {"b", "c", "e"}
    assert book.count("alice") == 3
    # On a side with nothing kept, nothing can be replaced.
    assert not book.upsert(order("f", BUY, "50"))
    # Moving a kept order never counts against the bound.
    assert book.upsert(order("b", SELL, "99"))
    assert book.best_opposite(["alice"], "BTC-USDT", BUY).order_id == "b"  # type: ignore[union-attr]
