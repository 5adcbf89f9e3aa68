"""The scale benchmark's drift: paired round by round, not the medians taken apart."""

from __future__ import annotations

import pytest

from bench.scenarios.scale import paired_drift


def _reps(*p50s: float) -> list[dict[str, float]]:
    return [{"p50_us": p} for p in p50s]


def test_drift_is_the_median_of_each_rounds_ratio() -> None:
    # The large gateway is 5% slower in every round but the third, where the machine
    # sped up between the two blocks. The medians taken apart would say -37%
    # (10 -> 6.3 us); paired round by round, the drift is the 5% of the other rounds.
    small = _reps(6.0, 6.0, 10.0, 10.0, 10.0)
    large = _reps(6.3, 6.3, 6.3, 10.5, 10.5)
    assert paired_drift(small, large) == pytest.approx(0.05)


def test_an_outlying_round_does_not_move_the_median() -> None:
    small = _reps(10.0, 10.0, 10.0)
    large = _reps(10.2, 15.0, 10.1)
    assert paired_drift(small, large) == pytest.approx(0.02)


def test_rounds_without_a_figure_are_left_out() -> None:
    assert paired_drift(_reps(0.0, 10.0), _reps(5.0, 9.0)) == pytest.approx(-0.10)
    assert paired_drift([], []) is None


def test_unpaired_rounds_are_an_error() -> None:
    with pytest.raises(ValueError, match="shorter"):
        paired_drift(_reps(1.0, 2.0), _reps(1.0))
