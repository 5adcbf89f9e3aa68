"""The cyclic garbage collector and a snapshot of millions of records.

A full collection walks every tracked object. With 10^6 flagged accounts in the
snapshot it stops the event loop, and every order with it, for ~0.3 s, and a
full load of that many records used to set off about ten of them. So:

* while a full load runs, only young collections happen
  (:func:`no_full_collections`);
* after every load, everything alive is moved out of the collector's sight
  (:func:`freeze_long_lived`). Frozen records are still freed by reference
  counting when the next load replaces them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: A gen-2 threshold no run reaches: gen-2 (full) collections are off meanwhile.
_NEVER = 1 << 30

_holders = 0
_saved_threshold: tuple[int, int, int] | None = None


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """No full collections inside the block; young ones go on (nested use is fine).

    One full collection first, while the snapshot in force is still frozen (so it is
    cheap): cyclic garbage of the past is freed now, not frozen for good after the load.
    """
    global _holders, _saved_threshold
    if _holders == 0:
        gc.collect()
        saved = gc.get_threshold()
        _saved_threshold = saved
        gc.set_threshold(saved[0], saved[1], _NEVER)
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0 and _saved_threshold is not None:
            gc.set_threshold(*_saved_threshold)
            _saved_threshold = None


def freeze_long_lived() -> None:
    """Move everything alive now, the snapshot just loaded above all, to the permanent
    generation (:func:`gc.freeze`); young garbage is collected first, not kept. Cyclic
    garbage that reached the old generation during the load is frozen with the rest: a
    load's worth, once per load (the full collection before each load frees the rest)."""
    gc.collect(1)
    gc.freeze()
