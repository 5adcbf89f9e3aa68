"""The limit syntax: one text form for files, admin API and CLI; canonical text round-trips."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.counters.limits import (
    CancelRatio,
    LimitKind,
    LimitValueError,
    Window,
    format_duration,
    format_value,
    parse_duration,
    parse_value,
    parse_windows,
)


def test_windows_sorted_and_canonical() -> None:
    windows = parse_windows("200000/1d, 10/1s,100/10s")
    assert windows == (Window(1000, 10), Window(10_000, 100), Window(86_400_000, 200_000))
    assert format_value(LimitKind.ORDER_RATE, windows) == "10/1s,100/10s,200000/1d"
    assert parse_windows(["10/1s", "100/10s"]) == windows[:2]
    assert parse_windows("5/1500ms") == (Window(1500, 5),)
    assert str(Window(60_000, 3)) == "3/1m"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("", "at least one"),
        ([], "at least one"),
        ("10", "<limit>/<window>"),
        ("0/1s", "<limit>/<window>"),
        ("10/0s", "<limit>/<window>"),
        ("10/1w", "<limit>/<window>"),
        ("-1/1s", "<limit>/<window>"),
        ("1.5/1s", "<limit>/<window>"),
        ("10/1s,20/1000ms", "given twice"),
        ("10/32d", "at most 31d"),
        ("2000000000/1s", "limit at most"),
        ([10], "expected a string"),
        (10, "expected e.g."),
    ],
)
def test_bad_windows(raw: object, words: str) -> None:
    with pytest.raises(LimitValueError, match=words.replace("<", ".").replace(">", ".")):
        parse_windows(raw)


@pytest.mark.parametrize(
    ("kind", "raw", "value", "text"),
    [
        (LimitKind.LARGE_NOTIONAL, "250000", Decimal(250000), "250000"),
        (LimitKind.LARGE_NOTIONAL, 1000, Decimal(1000), "1000"),
        (LimitKind.LARGE_NOTIONAL, Decimal("0.50"), Decimal("0.5"), "0.5"),
        (LimitKind.DAILY_OPEN, 5000, 5000, "5000"),
        (LimitKind.DAILY_OPEN, "0", 0, "0"),
        (LimitKind.MIN_RESTING, "500ms", 500, "500ms"),
        (LimitKind.MIN_RESTING, "2s", 2000, "2s"),
        (LimitKind.MIN_RESTING, 250, 250, "250ms"),
        (
            LimitKind.CANCEL_RATIO,
            "min_orders=100,max_ratio=0.95",
            CancelRatio(100, Decimal("0.95")),
            "min_orders=100,max_ratio=0.95",
        ),
        (
            LimitKind.CANCEL_RATIO,
            {"min_orders": 10, "max_ratio": Decimal("2")},
            CancelRatio(10, Decimal(2)),
            "min_orders=10,max_ratio=2",
        ),
    ],
)
def test_scalars(kind: LimitKind, raw: object, value: object, text: str) -> None:
    parsed = parse_value(kind, raw)
    assert parsed == value
    assert format_value(kind, parsed) == text
    assert parse_value(kind, text) == value


@pytest.mark.parametrize(
    ("kind", "raw", "words"),
    [
        (LimitKind.LARGE_NOTIONAL, "0", "greater than zero"),
        (LimitKind.LARGE_NOTIONAL, "1e5", "plain decimal"),
        (LimitKind.LARGE_NOTIONAL, True, "expected a decimal"),
        (LimitKind.LARGE_NOTIONAL, 1.5, "expected a decimal"),
        (LimitKind.DAILY_OPEN, -1, "whole number"),
        (LimitKind.DAILY_OPEN, "many", "whole number"),
        (LimitKind.MIN_RESTING, "2h", "at most 1h"),
        (LimitKind.MIN_RESTING, "fast", "not a duration"),
        (LimitKind.CANCEL_RATIO, "0.95", "min_orders="),
        (LimitKind.CANCEL_RATIO, "min_orders=0,max_ratio=1", "whole number from 1"),
        (LimitKind.CANCEL_RATIO, "min_orders=5,max_ratio=0", "above 0"),
        (LimitKind.CANCEL_RATIO, "min_orders=5,max_ratio=0.1234567", "decimal places"),
        (LimitKind.CANCEL_RATIO, "min_orders=5,max_ratio=x", "expected a decimal"),
        (LimitKind.CANCEL_RATIO, {"min_orders": 5}, "min_orders="),
    ],
)
def test_bad_scalars(kind: LimitKind, raw: object, words: str) -> None:
    with pytest.raises(LimitValueError, match=words):
        parse_value(kind, raw)


def test_ratio_is_an_exact_fraction() -> None:
    assert CancelRatio(1, Decimal("0.95")).fraction == (19, 20)
    assert CancelRatio(1, Decimal("1.000001")).fraction == (1_000_001, 1_000_000)


@given(st.integers(min_value=1, max_value=31 * 86_400_000))
def test_durations_round_trip(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


windows_strategy = st.lists(
    st.tuples(st.integers(1, 10**9), st.integers(1, 31 * 86_400_000)),
    min_size=1,
    max_size=5,
    unique_by=lambda pair: pair[1],
)


@given(windows_strategy)
def test_windows_round_trip(pairs: list[tuple[int, int]]) -> None:
    text = ",".join(f"{limit}/{format_duration(ms)}" for limit, ms in pairs)
    windows = parse_windows(text)
    assert {(w.limit, w.window_ms) for w in windows} == set(pairs)
    assert parse_windows(format_value(LimitKind.CANCEL_RATE, windows)) == windows
