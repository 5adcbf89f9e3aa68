"""``hot_record``: a dataclass that is frozen for the type checker and cheap to build.

A frozen dataclass's ``__init__`` sets every field through
``object.__setattr__``: in CPython 3.11 about 0.2 us per field, 2 us for an
:class:`~gateway.validation.OrderCall`, a fifth of a whole flag refusal. The
objects built on every call use this instead. mypy (strict on ``gateway/``)
still refuses any assignment to their fields, and they compare and hash by
value like frozen dataclasses; only the run-time ``FrozenInstanceError`` is
gone.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def hot_record(cls: type[_T]) -> type[_T]:
    return dataclass(slots=True, unsafe_hash=True)(cls)


_K = TypeVar("_K")
_V = TypeVar("_V")
_O = TypeVar("_O")


class BoundedMemo(dict[_K, _V]):
    """A memo for the hot path: plain dict reads, and emptied whole when it reaches
    ``limit`` entries (no per-read bookkeeping, as an LRU would need; what is still
    in use is rebuilt at once)."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: _K, value: _V) -> _V:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class IdentityMemo(Generic[_O, _V]):
    """What was computed from an object that is never modified, by the object's identity
    (and a tag): cheaper than hashing the object, and right because each entry holds its
    object, so its id is not reused while the entry lives. Bounded like
    :class:`BoundedMemo`."""

    __slots__ = ("_memo",)

    def __init__(self, limit: int) -> None:
        self._memo: BoundedMemo[Hashable, tuple[_O, _V]] = BoundedMemo(limit)

    def get(self, obj: _O, tag: Hashable = None) -> _V | None:
        found = self._memo.get(id(obj) if tag is None else (id(obj), tag))
        return found[1] if found is not None and found[0] is obj else None

    def put(self, obj: _O, value: _V, tag: Hashable = None) -> _V:
        self._memo.put(id(obj) if tag is None else (id(obj), tag), (obj, value))
        return value


_ABSENT: Any = object()


class HotTable(dict[_K, _V]):
    """A table that may hold millions of records, read on the hot path by :meth:`lookup`
    through a small memo of the keys read lately (absent ones included).

    A look-up in a million-entry dict misses the CPU caches (~1 us a refusal with 10^6
    flagged accounts); the few thousand accounts trading at a time fit in a small one.
    Every write drops what the memo holds for its key (bulk writes: all of it), so a
    read never sees a record the table no longer has.
    """

    __slots__ = ("_recent",)

    def __init__(self, *args: Any, memo_size: int = 65_536) -> None:
        super().__init__(*args)
        self._recent: BoundedMemo[_K, _V | None] = BoundedMemo(memo_size)

    def lookup(self, key: _K) -> _V | None:
        found = self._recent.get(key, _ABSENT)
        if found is _ABSENT:
            found = self._recent.put(key, self.get(key))
        return found

    def __setitem__(self, key: _K, value: _V) -> None:
        self._recent.pop(key, None)
        super().__setitem__(key, value)

    def __delitem__(self, key: _K) -> None:
        self._recent.pop(key, None)
        super().__delitem__(key)

    def pop(self, key: _K, *default: Any) -> Any:
        self._recent.pop(key, None)
        return super().pop(key, *default)

    def setdefault(self, key: _K, default: Any = None) -> Any:
        self._recent.pop(key, None)
        return super().setdefault(key, default)

    def popitem(self) -> tuple[_K, _V]:
        self._recent.clear()
        return super().popitem()

    def clear(self) -> None:
        self._recent.clear()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._recent.clear()
        super().update(*args, **kwargs)

    def copy(self) -> HotTable[_K, _V]:
        return HotTable(self, memo_size=self._recent.limit)

    def __copy__(self) -> HotTable[_K, _V]:
        return self.copy()

    def __reduce__(self) -> tuple[Any, ...]:
        return (HotTable, (dict(self),))

    def __ior__(self, other: Any) -> HotTable[_K, _V]:  # type: ignore[override,misc]
        self._recent.clear()
        super().__ior__(other)
        return self
