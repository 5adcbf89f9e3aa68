"""The failure policy: which calls fail open, which closed, and what a refusal says."""

import grpc
import pytest
from prometheus_client import REGISTRY

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.model import Action
from gateway.reasons import Reason
from gateway.reliability.failure import (
    DEFAULT_FAIL_OPEN,
    FailurePolicy,
    Operation,
    parse_fail_open,
)
from gateway.validation import OrderCall

PLACE = OrderCall(Action.PLACE, "alice", "BTC-USDT", side=pb.SIDE_BUY)
REDUCE = OrderCall(Action.PLACE, "alice", "BTC-USDT", side=pb.SIDE_SELL, reduce_only=True)
AMEND = OrderCall(Action.AMEND, "alice", "BTC-USDT", order_id="X-1")
CANCEL = OrderCall(Action.CANCEL, "alice", "BTC-USDT", order_id="X-1")


def decisions(operation: str, outcome: str, cause: str) -> float:
    value = REGISTRY.get_sample_value(
        "pretrade_store_failure_decisions_total",
        {"operation": operation, "outcome": outcome, "cause": cause},
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("call", "operation"),
    [(PLACE, Operation.PLACE), (REDUCE, Operation.REDUCE_ONLY), (AMEND, Operation.AMEND),
     (CANCEL, Operation.CANCEL)],
)  # fmt: skip
def test_operations(call: OrderCall, operation: Operation) -> None:
    assert Operation.of(call) is operation


def test_default_fails_closed_for_new_orders_and_amends() -> None:
    policy = FailurePolicy()
    assert policy.fail_open == DEFAULT_FAIL_OPEN == {Operation.CANCEL, Operation.REDUCE_ONLY}
    for call in (PLACE, AMEND):
        before = decisions(Operation.of(call).value, "refused", "timeout")
        denial = policy.decide(call, TimeoutError(), 500)
        assert denial is not None and denial.reason is Reason.STORE_UNAVAILABLE
        assert denial.code is grpc.StatusCode.UNAVAILABLE and denial.retry_after_ms
        assert denial.metadata["operation"] == Operation.of(call).value
        assert (denial.metadata["cause"], denial.metadata["deadline_ms"]) == ("timeout", "500")
        assert decisions(Operation.of(call).value, "refused", "timeout") == before + 1
    for call in (CANCEL, REDUCE):
        before = decisions(Operation.of(call).value, "allowed", "error")
        assert policy.decide(call, ConnectionError("refused"), 500) is None
        assert decisions(Operation.of(call).value, "allowed", "error") == before + 1


def test_configurable_per_operation() -> None:
    closed = FailurePolicy(fail_open=frozenset())
    assert all(closed.decide(c, TimeoutError(), 100) for c in (PLACE, REDUCE, AMEND, CANCEL))
    open_all = FailurePolicy(fail_open=frozenset(Operation))
    assert not any(open_all.decide(c, TimeoutError(), 100) for c in (PLACE, REDUCE, AMEND, CANCEL))


@pytest.mark.parametrize(
    ("text", "ops"),
    [("cancel,reduce_only", {Operation.CANCEL, Operation.REDUCE_ONLY}), ("", set()),
     ("none", set()), (" Cancel , amend ", {Operation.CANCEL, Operation.AMEND}),
     ("place,reduce_only,amend,cancel", set(Operation))],
)  # fmt: skip
def test_parse_fail_open(text: str, ops: set[Operation]) -> None:
    assert parse_fail_open(text) == ops


def test_parse_fail_open_names_the_bad_item() -> None:
    with pytest.raises(ValueError, match=r"'cancels'.*allowed: place, reduce_only, amend, cancel"):
        parse_fail_open("cancels")


@pytest.mark.parametrize("ms", [0, -1, 10_001])
def test_deadline_bounds(ms: int) -> None:
    with pytest.raises(ValueError, match="deadline"):
        FailurePolicy(deadline_ms=ms)
