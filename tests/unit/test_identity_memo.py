"""IdentityMemo: by the object itself (and a tag), never by an equal one."""

from __future__ import annotations

from gateway.records import IdentityMemo


def test_values_are_found_by_identity_and_tag_only() -> None:
    memo: IdentityMemo[list[int], str] = IdentityMemo(16)
    obj, equal = [1], [1]
    assert memo.put(obj, "plain") == "plain"
    memo.put(obj, "tagged", tag="t")
    assert memo.get(obj) == "plain"
    assert memo.get(obj, "t") == "tagged"
    assert memo.get(obj, "other") is None
    assert memo.get(equal) is None  # equal, not the same object


def test_it_stays_bounded() -> None:
    memo: IdentityMemo[object, int] = IdentityMemo(4)
    kept = [object() for _ in range(10)]
    for i, obj in enumerate(kept):
        memo.put(obj, i)
    assert memo.get(kept[-1]) == 9
    assert sum(memo.get(obj) is not None for obj in kept) <= 4
