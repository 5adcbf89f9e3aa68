"""Full collections are held off during a load and come back after it."""

from __future__ import annotations

import gc

from gateway.heap import no_full_collections


def test_full_collections_are_off_inside_and_back_after_even_when_nested() -> None:
    before = gc.get_threshold()
    with no_full_collections():
        inside = gc.get_threshold()
        assert inside[:2] == before[:2]  # young collections as before
        assert inside[2] > 10**8
        with no_full_collections():
            assert gc.get_threshold() == inside
        assert gc.get_threshold() == inside  # the outer block still holds them off
    assert gc.get_threshold() == before


def test_the_threshold_comes_back_when_the_block_raises() -> None:
    before = gc.get_threshold()
    try:
        with no_full_collections():
            raise RuntimeError("load failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
