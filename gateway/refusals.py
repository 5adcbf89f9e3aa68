"""Render a :class:`~gateway.reasons.Denial` as a rich gRPC error.

The status carries ``google.rpc.ErrorInfo`` (domain ``pretrade.v1``), plus
``google.rpc.BadRequest`` for malformed input and ``google.rpc.RetryInfo`` when
throttled, encoded in the ``grpc-status-details-bin`` trailer by grpcio-status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.reasons import Denial, FieldViolation, invalid
from gateway.records import IdentityMemo

DOMAIN = "pretrade.v1"


def to_status_proto(denial: Denial) -> status_pb2.Status:
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(
        reason=denial.reason.value, domain=DOMAIN, metadata=dict(denial.metadata)
    )
    details.append(_pack(info))
    if denial.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in denial.violations
            ]
        )
        details.append(_pack(bad))
    if denial.retry_after_ms is not None:
        delay_ms = max(0, denial.retry_after_ms)
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=delay_ms // 1000, nanos=(delay_ms % 1000) * 1_000_000
            )
        )
        details.append(_pack(retry))
    return status_pb2.Status(code=denial.code.value[0], message=denial.message, details=details)


def to_grpc_status(denial: Denial) -> grpc.Status:
    """The rich status of ``denial``. A flag refusal seen before (the checks hand out one
    denial object per refused account and state, per halted symbol) is rendered once:
    building and encoding the details costs more than deciding."""
    found = _RENDERED.get(denial)
    if found is not None:
        return found
    status: grpc.Status = rpc_status.to_status(to_status_proto(denial))
    if denial.retry_after_ms is not None or denial.violations:
        return status  # throttles and bad input: a new denial each time
    return _RENDERED.put(denial, status)


_RENDERED: IdentityMemo[Denial, grpc.Status] = IdentityMemo(8_192)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


async def abort_invalid(context: Any, violations: Sequence[FieldViolation]) -> NoReturn:
    """End an RPC with ``INVALID_ARGUMENT`` naming every bad field (``google.rpc.BadRequest``)."""
    status = to_grpc_status(invalid(*violations))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable")  # pragma: no cover


async def abort_if_invalid(context: Any, violations: Sequence[FieldViolation]) -> None:
    """:func:`abort_invalid` when there is anything to report."""
    if violations:
        await abort_invalid(context, violations)
