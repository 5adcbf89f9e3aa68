"""The Python Reason enum, the proto enum and the status table stay in step."""

import grpc

from gateway._generated.pretrade.v1 import errors_pb2
from gateway.reasons import STATUS_BY_REASON, Denial, FieldViolation, Reason, invalid
from gateway.refusals import DOMAIN, to_status_proto


def test_python_and_proto_enums_match() -> None:
    proto_names = {name.removeprefix("REASON_") for name in errors_pb2.Reason.keys()} - {
        "UNSPECIFIED"
    }
    assert proto_names == {reason.value for reason in Reason}


def test_every_reason_has_a_status() -> None:
    assert set(STATUS_BY_REASON) == set(Reason)


def test_core_status_codes() -> None:
    assert STATUS_BY_REASON[Reason.ACCOUNT_DEACTIVATED] == grpc.StatusCode.PERMISSION_DENIED
    assert STATUS_BY_REASON[Reason.INVALID_REQUEST] == grpc.StatusCode.INVALID_ARGUMENT
    for reason in (Reason.ACCOUNT_FROZEN, Reason.ACCOUNT_REDUCE_ONLY, Reason.SYMBOL_UNKNOWN,
                   Reason.SYMBOL_HALTED, Reason.SYMBOL_REDUCE_ONLY, Reason.SYMBOL_DELISTED):  # fmt: skip
        assert STATUS_BY_REASON[reason] == grpc.StatusCode.FAILED_PRECONDITION
    # Never UNAVAILABLE: clients retry that on their own.
    assert STATUS_BY_REASON[Reason.KILL_SWITCH] == grpc.StatusCode.FAILED_PRECONDITION


def test_status_proto_carries_details() -> None:
    from google.rpc import error_details_pb2

    status = to_status_proto(
        Denial(Reason.ACCOUNT_FROZEN, "frozen", {"limit": "account_state"}, retry_after_ms=1500)
    )
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(retry)
    assert (info.domain, info.reason, dict(info.metadata)) == (
        DOMAIN,
        "ACCOUNT_FROZEN",
        {"limit": "account_state"},
    )
    assert retry.retry_delay.ToMilliseconds() == 1500


def test_invalid_names_every_field() -> None:
    denial = invalid(FieldViolation("a", "x"), FieldViolation("b", "y"))
    assert denial.metadata == {"fields": "a, b"}
    assert [v.field for v in denial.violations] == ["a", "b"]
