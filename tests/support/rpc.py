"""Helpers to build requests and read refusals the way a client would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb


def limit_order(
    account: str = "alice", symbol: str = "BTC-USDT", **kw: Any
) -> pb.PlaceOrderRequest:
    values: dict[str, Any] = {
        "account_id": account,
        "symbol": symbol,
        "side": pb.SIDE_BUY,
        "type": pb.ORDER_TYPE_LIMIT,
        "quantity": "1",
        "price": "100",
    }
    values.update(kw)
    return pb.PlaceOrderRequest(**values)


@dataclass
class Refusal:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    bad_fields: dict[str, str] = field(default_factory=dict)
    retry_delay_ms: int | None = None


def refusal(exc: aio.AioRpcError) -> Refusal:
    """Decode a gRPC error with its rich details."""
    out = Refusal(code=exc.code(), message=exc.details() or "")
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return out
    for detail in status.details:
        info, bad, retry = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
        )
        if detail.Unpack(info):
            out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad):
            out.bad_fields = {v.field: v.description for v in bad.field_violations}
        elif detail.Unpack(retry):
            out.retry_delay_ms = retry.retry_delay.ToMilliseconds()
    return out


async def refused(call: Any) -> Refusal:
    """Await a call that must fail, and return its decoded refusal."""
    try:
        response = await call
    except aio.AioRpcError as exc:
        return refusal(exc)
    raise AssertionError(f"expected a refusal, got {response}")
