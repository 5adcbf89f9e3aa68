"""The shortcuts of the order path decide exactly what the long way decides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.decisions import Decision, Outcome, Stage
from gateway.logs import configure_logging
from gateway.model import Channel
from gateway.ops import RefusalLog
from gateway.reasons import Denial, Reason
from gateway.validation import _parse_place_fully, parse_place

GOOD = {
    "account_id": "alice",
    "symbol": "BTC-USDT",
    "side": pb.SIDE_BUY,
    "type": pb.ORDER_TYPE_LIMIT,
    "time_in_force": pb.TIME_IN_FORCE_GTC,
    "quantity": "0.5",
    "price": "100.25",
}

VARIANTS: list[dict[str, object]] = [
    {},
    {"client_order_id": "c-1"},
    {"client_order_id": "bad id with spaces"},
    {"client_order_id": "x" * 37},
    {"leverage": 20},
    {"leverage": 1001},
    {"reduce_only": True},
    {"type": pb.ORDER_TYPE_MARKET, "price": ""},
    {"type": pb.ORDER_TYPE_MARKET},  # a price on a market order
    {"type": pb.ORDER_TYPE_UNSPECIFIED},
    {"price": ""},
    {"price": "0"},
    {"price": "1e5"},
    {"quantity": "NaN"},
    {"quantity": "-1"},
    {"quantity": ""},
    {"side": pb.SIDE_UNSPECIFIED},
    {"time_in_force": 99},
    {"account_id": ""},
    {"account_id": "bad account!"},
    {"account_id": "a" * 65},
    {"symbol": "btc-usdt"},
    {"symbol": ""},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=[str(v) for v in VARIANTS])
@pytest.mark.parametrize("channel", [Channel.PROGRAM, Channel.INTERACTIVE])
def test_the_fast_path_decides_like_the_full_one(
    variant: dict[str, object], channel: Channel
) -> None:
    request = pb.PlaceOrderRequest(**{**GOOD, **variant})  # type: ignore[arg-type]
    full = _parse_place_fully(request, channel)
    # Twice: the first call fills the caches of known-good texts, the second uses them.
    assert parse_place(request, channel) == full
    assert parse_place(request, channel) == full
    if not isinstance(full, Denial):
        assert full.channel is channel


def test_a_text_found_good_for_one_field_is_not_taken_for_another() -> None:
    # "BTC-USDT" is a good symbol; as a price it must still be refused.
    parse_place(pb.PlaceOrderRequest(**GOOD))  # type: ignore[arg-type]
    refused = parse_place(pb.PlaceOrderRequest(**{**GOOD, "price": "BTC-USDT"}))  # type: ignore[arg-type]
    assert isinstance(refused, Denial) and refused.metadata["fields"] == "price"
    # "0.5" is a good quantity; as an account id it is fine too, by the account rule.
    accepted = parse_place(pb.PlaceOrderRequest(**{**GOOD, "account_id": "0.5"}))  # type: ignore[arg-type]
    assert not isinstance(accepted, Denial)


@pytest.fixture
def info_logs() -> Iterator[None]:
    configure_logging("info", json=True)
    try:
        yield
    finally:
        configure_logging("warning", json=True)


def refusal(at_ms: int, outcome: Outcome = Outcome.REFUSE) -> Decision:
    denial = Denial(Reason.ACCOUNT_FROZEN, "account is frozen", {"limit": "account_state"})
    return Decision(
        "rid", at_ms, "PlaceOrder", "alice", "BTC-USDT", outcome, denial, (), Stage.LOCAL, 1, 0,
        None,
    )  # fmt: skip


class Lines:
    """Takes the refusal log's lines (structlog's call shape: event, then fields)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, object]] = []

    def info(self, event: str, **fields: object) -> None:
        self.lines.append({"event": event, **fields})


def test_refusal_log_lines_are_capped_per_second_and_the_rest_counted(info_logs: None) -> None:
    out = Lines()
    sink = RefusalLog(per_second=2, logger=out)
    for i in range(5):
        sink.decision(refusal(10_000 + i))
    sink.decision(refusal(11_000))
    sink.decision(refusal(11_001, Outcome.SHADOW))
    lines = out.lines
    assert [line["event"] for line in lines] == [
        "order.refused", "order.refused", "order.refused", "order.shadowed",
    ]  # fmt: skip
    assert [line.get("suppressed") for line in lines] == [None, None, 3, None]
    assert lines[0]["reason"] == "ACCOUNT_FROZEN"


def test_refusal_log_off_and_below_info(info_logs: None) -> None:
    out = Lines()
    RefusalLog(per_second=0, logger=out).decision(refusal(1_000))
    assert out.lines == []
    configure_logging("warning", json=True)
    RefusalLog(per_second=100, logger=out).decision(refusal(1_000))
    assert out.lines == []
    configure_logging("info", json=True)
    RefusalLog(per_second=100, logger=out).decision(refusal(1_000))
    assert len(out.lines) == 1
