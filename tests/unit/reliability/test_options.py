"""The serve flags of the reliability settings, with their PRETRADE_* twins."""

import pytest

from gateway.cli import build_parser
from gateway.reliability.failure import Operation
from gateway.reliability.options import reliability_settings


def settings(*argv: str) -> dict[str, object]:
    return reliability_settings(build_parser().parse_args(["serve", *argv]))


def test_defaults() -> None:
    assert settings() == {
        "redis_timeout_ms": 500,
        "fail_open": frozenset({Operation.CANCEL, Operation.REDUCE_ONLY}),
        "idempotency_window_ms": 60_000,
        "grace_s": 5.0,
    }


def test_flags() -> None:
    got = settings("--redis-timeout-ms", "150", "--fail-open", "cancel", "--idempotency-window-ms",
                   "0", "--shutdown-grace-ms", "2500")  # fmt: skip
    assert got == {
        "redis_timeout_ms": 150,
        "fail_open": frozenset({Operation.CANCEL}),
        "idempotency_window_ms": 0,
        "grace_s": 2.5,
    }


def test_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRETRADE_REDIS_TIMEOUT_MS", "75")
    monkeypatch.setenv("PRETRADE_FAIL_OPEN", "none")
    monkeypatch.setenv("PRETRADE_IDEMPOTENCY_WINDOW_MS", "5000")
    monkeypatch.setenv("PRETRADE_SHUTDOWN_GRACE_MS", "0")
    got = settings()
    assert (got["redis_timeout_ms"], got["fail_open"]) == (75, frozenset())
    assert (got["idempotency_window_ms"], got["grace_s"]) == (5000, 0.0)
    assert settings("--redis-timeout-ms", "90")["redis_timeout_ms"] == 90


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--redis-timeout-ms", "0"], "from 1 to 10000 ms"),
     (["--redis-timeout-ms", "fast"], "not a whole number"),
     (["--fail-open", "cancel,withdraw"], "unknown operation 'withdraw'"),
     (["--idempotency-window-ms", "50"], "0 (off) or from 100"),
     (["--shutdown-grace-ms", "-5"], "from 0 to 600000")],
)  # fmt: skip
def test_bad_values_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", *argv])
    assert message in capsys.readouterr().err


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--redis-timeout-ms", "--fail-open", "--idempotency-window-ms",
                 "--shutdown-grace-ms", "PRETRADE_FAIL_OPEN", "redis+cluster://"):  # fmt: skip
        assert flag in out
