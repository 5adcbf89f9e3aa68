"""The self-trade check and how accepted calls feed the own-order book (no network)."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.counters.gate import ADMITTED, Admission
from gateway.model import Action, FlagKind, SymbolSpec
from gateway.reasons import Reason
from gateway.snapshot import Snapshot
from gateway.stp.book import BUY, SELL, Resting
from gateway.stp.check import crosses, observe_admission, self_trade_check
from gateway.stp.sync import OwnOrderSync, resting_from_order
from gateway.symbol_limits import SelfTradePrevention, SymbolLimits
from gateway.validation import OrderCall

SYMBOLS = {
    "BTC-USDT": SymbolSpec("BTC-USDT", "spot", "BTC", "USDT"),
    "ETH-USDT": SymbolSpec(
        "ETH-USDT", "spot", "ETH", "USDT", SymbolLimits(stp_mode=SelfTradePrevention.NONE)
    ),
}


@pytest.fixture
def snapshot() -> Snapshot:
    snapshot = Snapshot(SYMBOLS)
    for account in ("alice", "bob"):
        snapshot.apply(FlagKind.GROUP_MEMBER, account, {"group": "g1", "version": "1"}, 1)
    return snapshot


def place(account: str, side: int, price: str | None, symbol: str = "BTC-USDT") -> OrderCall:
    return OrderCall(
        Action.PLACE, account, symbol, side=side,
        order_type=pb.ORDER_TYPE_LIMIT if price else pb.ORDER_TYPE_MARKET,
        quantity=Decimal(1), price=Decimal(price) if price else None,
    )  # fmt: skip


def rest(
    snapshot: Snapshot, oid: str, account: str, side: int, price: str, symbol: str = "BTC-USDT"
) -> None:
    snapshot.own_orders.upsert(Resting(oid, account, symbol, side, Decimal(price)))


@pytest.mark.parametrize(
    ("side", "price", "resting", "crossing"),
    [(BUY, "100", "100", True), (BUY, "99.99", "100", False), (BUY, None, "100", True),
     (SELL, "100", "100", True), (SELL, "100.01", "100", False), (SELL, None, "1", True)],
)  # fmt: skip
def test_crosses(side: int, price: str | None, resting: str, crossing: bool) -> None:
    assert crosses(side, Decimal(price) if price else None, Decimal(resting)) is crossing


def test_an_order_crossing_a_linked_accounts_resting_order_is_refused(snapshot: Snapshot) -> None:
    check = self_trade_check(snapshot)
    rest(snapshot, "X-1", "alice", SELL, "100")
    denial = check(place("bob", BUY, "100"), 0)
    assert denial is not None and denial.reason is Reason.SELF_TRADE
    assert denial.metadata == {
        "limit": "self_trade", "symbol": "BTC-USDT", "account_id": "bob", "side": "buy",
        "price": "100", "conflicting_order_id": "X-1", "conflicting_price": "100",
        "mode": "expire_taker",
    }  # fmt: skip
    assert "a linked account" in denial.message
    assert check(place("bob", BUY, "99.9"), 0) is None
    assert check(place("bob", BUY, None), 0) is not None  # a market buy crosses any ask
    assert check(place("bob", SELL, "100"), 0) is None  # same side never trades
    # The account's own resting order counts too, once it is linked.
    own = check(place("alice", BUY, "101"), 0)
    assert own is not None and "your own resting order" in own.message


def test_unlinked_accounts_other_symbols_and_stp_off_pass(snapshot: Snapshot) -> None:
    check = self_trade_check(snapshot)
    rest(snapshot, "X-1", "alice", SELL, "100")
    rest(snapshot, "X-2", "alice", SELL, "100", "ETH-USDT")
    assert check(place("carol", BUY, "100"), 0) is None  # not linked
    assert check(place("bob", BUY, "100", "SOL-USDT"), 0) is None  # nothing resting there
    assert check(place("bob", BUY, "100", "ETH-USDT"), 0) is None  # stp_mode = none
    # Another group's orders are not ours.
    snapshot.apply(FlagKind.GROUP_MEMBER, "bob", {"group": "g2", "version": "2"}, 2)
    assert check(place("bob", BUY, "100"), 0) is None


def test_an_amend_to_a_crossing_price_is_refused_when_the_order_is_known(
    snapshot: Snapshot,
) -> None:
    check = self_trade_check(snapshot)
    rest(snapshot, "X-1", "alice", SELL, "100")
    rest(snapshot, "X-2", "bob", BUY, "95")
    amend = OrderCall(Action.AMEND, "bob", "BTC-USDT", order_id="X-2", price=Decimal("100"))
    denial = check(amend, 0)
    assert denial is not None and denial.metadata["conflicting_order_id"] == "X-1"
    assert (
        check(OrderCall(Action.AMEND, "bob", "BTC-USDT", order_id="X-2", price=Decimal("99")), 0)
        is None
    )
    assert (
        check(OrderCall(Action.AMEND, "bob", "BTC-USDT", order_id="X-2", quantity=Decimal(3)), 0)
        is None
    )
    # An order the gateway does not know has no known side: not checked.
    assert (
        check(OrderCall(Action.AMEND, "bob", "BTC-USDT", order_id="X-9", price=Decimal("200")), 0)
        is None
    )
    # Cancels always pass.
    assert check(OrderCall(Action.CANCEL, "bob", "BTC-USDT", order_id="X-2"), 0) is None


def test_accepted_calls_feed_the_book(snapshot: Snapshot) -> None:
    book = snapshot.own_orders
    placed = observe_admission(
        snapshot, place("alice", SELL, "100"), ADMITTED, pb.PlaceOrderResponse
    )
    assert placed is not ADMITTED
    placed.accepted_bytes(
        pb.PlaceOrderResponse(order_id="X-1", status=pb.ORDER_STATUS_NEW).SerializeToString()
    )
    assert book.get("X-1") == Resting("X-1", "alice", "BTC-USDT", SELL, Decimal(100))
    # A filled (or expired) order never rests.
    filled = observe_admission(
        snapshot, place("alice", SELL, "100"), ADMITTED, pb.PlaceOrderResponse
    )
    filled.accepted(pb.PlaceOrderResponse(order_id="X-2", status=pb.ORDER_STATUS_FILLED))
    assert book.get("X-2") is None and book.is_closed("X-2")
    # An amend moves it, a cancel removes it.
    amend_call = OrderCall(Action.AMEND, "alice", "BTC-USDT", order_id="X-1", price=Decimal(105))
    observe_admission(snapshot, amend_call, ADMITTED, pb.AmendOrderResponse).accepted(
        pb.AmendOrderResponse(order_id="X-1", status=pb.ORDER_STATUS_NEW, price="105")
    )
    assert book.get("X-1").price == Decimal(105)  # type: ignore[union-attr]
    cancel = OrderCall(Action.CANCEL, "alice", "BTC-USDT", order_id="X-1")
    observe_admission(snapshot, cancel, ADMITTED, pb.CancelOrderResponse).accepted(
        pb.CancelOrderResponse(order_id="X-1", status=pb.ORDER_STATUS_CANCELED)
    )
    assert len(book) == 0
    # Unlinked accounts' calls and market orders are not watched at all.
    assert (
        observe_admission(snapshot, place("carol", SELL, "1"), ADMITTED, pb.PlaceOrderResponse)
        is ADMITTED
    )
    assert (
        observe_admission(snapshot, place("alice", SELL, None), ADMITTED, pb.PlaceOrderResponse)
        is ADMITTED
    )


def test_the_wrapped_admission_keeps_the_counters_metadata_and_hook(snapshot: Snapshot) -> None:
    remembered: list[str] = []
    inner = Admission((("x-ratelimit-remaining", "3"),), remembered.append, wants_order_id=True)
    wrapped = observe_admission(snapshot, place("alice", SELL, "100"), inner, pb.PlaceOrderResponse)
    assert wrapped.metadata == inner.metadata
    wrapped.accepted_bytes(b"\xff\xff")  # not a message: ignored
    wrapped.accepted(pb.PlaceOrderResponse(order_id="X-7", status=pb.ORDER_STATUS_NEW))
    assert remembered == ["X-7"] and snapshot.own_orders.get("X-7") is not None


def test_the_wrapped_admission_passes_an_upstream_failure_on(snapshot: Snapshot) -> None:
    settled: list[str] = []
    inner = Admission((), settled.append, wants_order_id=True)
    wrapped = observe_admission(snapshot, place("alice", SELL, "100"), inner, pb.PlaceOrderResponse)
    assert wrapped is not inner
    wrapped.failed(grpc.StatusCode.FAILED_PRECONDITION)
    assert settled == [""]


def report(
    exec_type: int, oid: str, account: str, status: int, price: str = "100", side: int = SELL
) -> pb.ExecutionReport:
    return pb.ExecutionReport(
        exec_type=exec_type,
        order=pb.Order(order_id=oid, account_id=account, symbol="BTC-USDT", side=side,
                       type=pb.ORDER_TYPE_LIMIT, price=price, quantity="2", status=status),
    )  # fmt: skip


def test_the_execution_feed_keeps_the_book_true(snapshot: Snapshot) -> None:
    sync = OwnOrderSync(snapshot)
    book = snapshot.own_orders
    sync.on_report(report(pb.EXEC_TYPE_NEW, "X-1", "alice", pb.ORDER_STATUS_NEW))
    sync.on_report(report(pb.EXEC_TYPE_NEW, "X-9", "carol", pb.ORDER_STATUS_NEW))
    assert book.get("X-1") is not None and book.get("X-9") is None  # carol is not linked
    sync.on_report(report(pb.EXEC_TYPE_TRADE, "X-1", "alice", pb.ORDER_STATUS_PARTIALLY_FILLED))
    assert book.get("X-1") is not None
    sync.on_report(
        report(pb.EXEC_TYPE_AMENDED, "X-1", "alice", pb.ORDER_STATUS_PARTIALLY_FILLED, "101")
    )
    assert book.get("X-1").price == Decimal(101)  # type: ignore[union-attr]
    sync.on_report(report(pb.EXEC_TYPE_TRADE, "X-1", "alice", pb.ORDER_STATUS_FILLED))
    assert book.get("X-1") is None
    # A late NEW (or a late response) does not bring a filled order back.
    sync.on_report(report(pb.EXEC_TYPE_NEW, "X-1", "alice", pb.ORDER_STATUS_NEW))
    assert book.get("X-1") is None
    # Unlinking drops the account's orders.
    sync.on_report(report(pb.EXEC_TYPE_NEW, "X-2", "bob", pb.ORDER_STATUS_NEW))
    snapshot.apply(FlagKind.GROUP_MEMBER, "bob", None, 2)
    assert book.get("X-2") is None


def test_resting_from_order_keeps_only_open_limit_orders() -> None:
    base = {"order_id": "X-1", "account_id": "a", "symbol": "S", "side": pb.SIDE_BUY,
            "type": pb.ORDER_TYPE_LIMIT, "price": "1", "status": pb.ORDER_STATUS_NEW}  # fmt: skip
    assert resting_from_order(pb.Order(**base)) is not None
    for change in ({"status": pb.ORDER_STATUS_FILLED}, {"type": pb.ORDER_TYPE_MARKET, "price": ""},
                   {"price": "abc"}, {"side": pb.SIDE_UNSPECIFIED}, {"order_id": ""}):  # fmt: skip
        assert resting_from_order(pb.Order(**{**base, **change})) is None


def test_a_full_reload_forgets_the_orders_of_accounts_no_longer_linked(snapshot: Snapshot) -> None:
    OwnOrderSync(snapshot)
    rest(snapshot, "X-1", "alice", SELL, "100")
    rest(snapshot, "X-2", "bob", SELL, "100")
    snapshot.replace_all(
        {FlagKind.GROUP_MEMBER: {"bob": {"group": "g1"}, "carol": {"group": "g1"}}}
    )
    assert [o.order_id for o in snapshot.own_orders] == ["X-2"]
