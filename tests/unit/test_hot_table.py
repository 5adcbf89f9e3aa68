"""HotTable: reads through a memo that every kind of write keeps true."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.records import HotTable


def _filled() -> HotTable[str, int]:
    table: HotTable[str, int] = HotTable({"a": 1, "b": 2})
    assert table.lookup("a") == 1 and table.lookup("b") == 2 and table.lookup("z") is None
    return table


WRITES: dict[str, Callable[[HotTable[str, int]], None]] = {
    "set": lambda t: t.__setitem__("a", 10),
    "set absent": lambda t: t.__setitem__("z", 26),
    "del": lambda t: t.__delitem__("a"),
    "pop": lambda t: t.pop("a"),
    "pop default": lambda t: t.pop("a", None),
    "setdefault absent": lambda t: t.setdefault("z", 26),
    "popitem": lambda t: t.popitem(),
    "clear": lambda t: t.clear(),
    "update": lambda t: t.update({"a": 10, "z": 26}),
    "update kwargs": lambda t: t.update(a=10),
    "ior": lambda t: t.__ior__({"a": 10, "z": 26}),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=list(WRITES))
def test_every_write_is_seen_by_the_next_lookup(
    write: Callable[[HotTable[str, int]], None],
) -> None:
    table = _filled()
    write(table)
    for key in ("a", "b", "z"):
        assert table.lookup(key) == table.get(key), key


def test_the_memo_stays_bounded_and_answers_stay_right() -> None:
    table: HotTable[int, int] = HotTable({i: i for i in range(1000)}, memo_size=16)
    for i in range(2000):
        assert table.lookup(i % 1100) == (i % 1100 if i % 1100 < 1000 else None)
    assert len(table._recent) <= 16


def test_copies_and_pickles_have_a_memo_of_their_own() -> None:
    import copy
    import pickle

    table = _filled()
    for other in (copy.copy(table), table.copy(), pickle.loads(pickle.dumps(table))):
        assert isinstance(other, HotTable) and dict(other) == dict(table)
        other["a"] = 99
        assert other.lookup("a") == 99
        assert table.lookup("a") == 1
