"""Every account state and symbol status, in both deployments, for every kind of call."""

from __future__ import annotations

import grpc
import pytest

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from tests.e2e.conftest import Deployment
from tests.support.rpc import limit_order, refused

OK = "ok"
FP = grpc.StatusCode.FAILED_PRECONDITION
PD = grpc.StatusCode.PERMISSION_DENIED


async def _setup_position(d: Deployment) -> tuple[str, str]:
    """alice goes long 1 BTC (bob sells to her) and rests a bid; returns (resting order id, symbol)."""
    orders = d.clients.orders
    await orders.PlaceOrder(limit_order("bob", side=pb.SIDE_SELL, quantity="1", price="100"))
    filled = await orders.PlaceOrder(
        limit_order("alice", side=pb.SIDE_BUY, quantity="1", price="100")
    )
    assert filled.status == pb.ORDER_STATUS_FILLED
    resting = await orders.PlaceOrder(limit_order("alice", quantity="1", price="90"))
    return resting.order_id, "BTC-USDT"


async def _attempt(
    d: Deployment, action: str, resting_id: str, symbol: str
) -> str | tuple[grpc.StatusCode, str]:
    """Run one kind of call for alice; return OK or (code, ErrorInfo reason)."""
    orders = d.clients.orders
    if action == "place":
        call = orders.PlaceOrder(limit_order("alice", symbol, price="95"))
    elif action == "place_reduce_only":
        call = orders.PlaceOrder(
            limit_order(
                "alice", symbol, side=pb.SIDE_SELL, quantity="0.5", price="150", reduce_only=True
            )
        )
    elif action == "amend":
        call = orders.AmendOrder(
            pb.AmendOrderRequest(account_id="alice", symbol=symbol, order_id=resting_id, price="91")
        )
    else:
        call = orders.CancelOrder(
            pb.CancelOrderRequest(account_id="alice", symbol=symbol, order_id=resting_id)
        )
    try:
        await call
    except grpc.aio.AioRpcError:
        r = await refused(call)
        assert r.domain == "pretrade.v1", f"{action} refused by the exchange, not the gateway: {r}"
        return (r.code, r.reason)
    return OK


ACTIONS = ("place", "place_reduce_only", "amend", "cancel")

ACCOUNT_TABLE = {
    apb.ACCOUNT_STATE_ACTIVE: (OK, OK, OK, OK),
    apb.ACCOUNT_STATE_REDUCE_ONLY: (
        (FP, "ACCOUNT_REDUCE_ONLY"),
        OK,
        (FP, "ACCOUNT_REDUCE_ONLY"),
        OK,
    ),
    apb.ACCOUNT_STATE_FROZEN: (
        (FP, "ACCOUNT_FROZEN"),
        (FP, "ACCOUNT_FROZEN"),
        (FP, "ACCOUNT_FROZEN"),
        OK,
    ),
    apb.ACCOUNT_STATE_DEACTIVATED: ((PD, "ACCOUNT_DEACTIVATED"),) * 4,
}

SYMBOL_TABLE = {
    apb.SYMBOL_STATUS_TRADING: (OK, OK, OK, OK),
    apb.SYMBOL_STATUS_HALTED: (
        (FP, "SYMBOL_HALTED"),
        (FP, "SYMBOL_HALTED"),
        (FP, "SYMBOL_HALTED"),
        OK,
    ),
    apb.SYMBOL_STATUS_REDUCE_ONLY: ((FP, "SYMBOL_REDUCE_ONLY"), OK, (FP, "SYMBOL_REDUCE_ONLY"), OK),
    apb.SYMBOL_STATUS_DELISTED: (
        (FP, "SYMBOL_DELISTED"),
        (FP, "SYMBOL_DELISTED"),
        (FP, "SYMBOL_DELISTED"),
        OK,
    ),
}


@pytest.mark.parametrize("state", list(ACCOUNT_TABLE), ids=lambda s: apb.AccountState.Name(s))
@pytest.mark.parametrize("action", range(len(ACTIONS)), ids=lambda i: ACTIONS[i])
async def test_account_state(deployment: Deployment, state: int, action: int) -> None:
    resting_id, symbol = await _setup_position(deployment)
    if state != apb.ACCOUNT_STATE_ACTIVE:
        await deployment.clients.admin.SetAccountState(
            apb.SetAccountStateRequest(account_id="alice", state=state, reason="test", actor="ops")  # type: ignore[arg-type]
        )
    outcome = await _attempt(deployment, ACTIONS[action], resting_id, symbol)
    assert outcome == ACCOUNT_TABLE[state][action]


@pytest.mark.parametrize("status", list(SYMBOL_TABLE), ids=lambda s: apb.SymbolStatus.Name(s))
@pytest.mark.parametrize("action", range(len(ACTIONS)), ids=lambda i: ACTIONS[i])
async def test_symbol_status(deployment: Deployment, status: int, action: int) -> None:
    resting_id, symbol = await _setup_position(deployment)
    if status != apb.SYMBOL_STATUS_TRADING:
        await deployment.clients.admin.SetSymbolStatus(
            apb.SetSymbolStatusRequest(symbol=symbol, status=status, reason="test", actor="ops")  # type: ignore[arg-type]
        )
    outcome = await _attempt(deployment, ACTIONS[action], resting_id, symbol)
    assert outcome == SYMBOL_TABLE[status][action]


async def test_other_accounts_and_symbols_unaffected(deployment: Deployment) -> None:
    admin = deployment.clients.admin
    await admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="t", actor="ops"
        )
    )
    await admin.SetSymbolStatus(
        apb.SetSymbolStatusRequest(
            symbol="ETH-USDT", status=apb.SYMBOL_STATUS_HALTED, reason="t", actor="ops"
        )
    )
    accepted = await deployment.clients.orders.PlaceOrder(limit_order("bob", "BTC-USDT"))
    assert accepted.status == pb.ORDER_STATUS_NEW
    eth = await refused(deployment.clients.orders.PlaceOrder(limit_order("bob", "ETH-USDT")))
    assert eth.reason == "SYMBOL_HALTED"
    assert eth.metadata == {"limit": "symbol_status", "symbol": "ETH-USDT", "status": "HALTED"}


@pytest.mark.parametrize("action", ACTIONS)
async def test_unknown_symbol_refused_for_every_call(deployment: Deployment, action: str) -> None:
    outcome = await _attempt(deployment, action, "X-1", "DOGE-USDT")
    assert outcome == (FP, "SYMBOL_UNKNOWN")


async def test_refusal_shape(deployment: Deployment) -> None:
    await deployment.clients.admin.SetAccountState(
        apb.SetAccountStateRequest(
            account_id="alice", state=apb.ACCOUNT_STATE_FROZEN, reason="t", actor="ops"
        )
    )
    before = deployment.exchange.engine.sequence
    r = await refused(deployment.clients.orders.PlaceOrder(limit_order("alice")))
    assert deployment.exchange.engine.sequence == before, "a refused order reached the exchange"
    assert r.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (r.domain, r.reason) == ("pretrade.v1", "ACCOUNT_FROZEN")
    assert r.metadata == {"limit": "account_state", "account_id": "alice", "state": "FROZEN"}
    assert r.retry_delay_ms is None
