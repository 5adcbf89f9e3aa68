"""The decision benchmark's split of a full decision into its parts."""

from __future__ import annotations

import pytest

from bench.scenarios.decision import breakdown, breakdown_note


def _rows(**figures: dict[str, float]) -> list[dict[str, object]]:
    return [{"name": name, **values} for name, values in figures.items()]


def test_the_parts_add_up_to_the_full_decision() -> None:
    split = breakdown(
        _rows(
            accept={"p50_us": 200.0, "redis_us_per_call": 25.0},
            evalsha_trivial={"p50_us": 100.0, "redis_us_per_call": 1.0},
            accept_replayed_after_rtt={"p50_us": 40.0},
        )
    )
    assert split is not None
    assert split["counter_call_extra_us"] == pytest.approx(60.0)
    assert split["script_in_redis_beyond_trivial_us"] == pytest.approx(24.0)
    assert split["scripts_per_redis_core_per_s"] == pytest.approx(40_000)
    note = breakdown_note(split)
    assert "200.0 us = one round trip 100.0 us" in note
    assert "25.0 us inside Redis (a trivial one 1.0 us)" in note
    assert "~40,000 of them a second" in note


def test_no_split_without_every_figure() -> None:
    # A tree without the counter step: the accept row never reaches a script.
    rows = _rows(
        accept={"p50_us": 3.0},
        evalsha_trivial={"p50_us": 100.0, "redis_us_per_call": 1.0},
        accept_replayed_after_rtt={"p50_us": 3.0},
    )
    assert breakdown(rows) is None
