"""Where the counter step (``gateway/counters``, one Lua round trip per order) plugs in.

The suite measures the full decision as ``PreTradeEngine.screen`` of an order
that passes every check. Today that is the local checks only; once the counter
step is hooked into ``screen`` the same measurements include its round trip,
with no change to the scenarios. What changes with it is decided here:

* :func:`counters_present` switches on the figures that need the counter step
  (round trips of a full decision expected to be 1, the 1.3x-of-EVALSHA and
  3x-faster-than-limits targets, our side of the peer comparison);
* :data:`THREE_CHECKS` are the three counter checks per order that the peer
  library does in the ``peer`` scenario. The bench policy
  (``bench/policy/bench.toml``) must declare the same three limits for the
  gateway, set high enough that the suite's orders are all accepted;
* :func:`our_side` is our side of the peer comparison.

Plugging the counter step in therefore means: add the three limits to
``bench/policy/bench.toml``; adjust :func:`our_side` only if the full decision
is not the right thing to compare.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gateway
from bench.lib.inproc import PLACE
from gateway.engine import Gatekeeper

COUNTERS_MODULE = "gateway.counters"


@dataclass(frozen=True)
class CounterCheck:
    """One per-account counter checked on every order: at most ``limit`` per ``window_s``."""

    name: str
    limit: int
    window_s: int


#: The three checks per order on both sides of the peer comparison. The limits
#: are far above what the suite sends per account, so every order is accepted.
THREE_CHECKS = (
    CounterCheck("orders_10s", limit=1_000_000, window_s=10),
    CounterCheck("orders_1m", limit=5_000_000, window_s=60),
    CounterCheck("orders_1d", limit=100_000_000, window_s=86_400),
)


def counters_present() -> bool:
    """Whether the ``gateway`` package being run has the counter step.

    Checked against that package's own folder: an editable install of another
    checkout can make ``find_spec`` resolve ``gateway.counters`` from there.
    """
    spec = importlib.util.find_spec(COUNTERS_MODULE)
    if spec is None or spec.origin is None:
        return False
    package = pathlib.Path(gateway.__file__).resolve().parent
    return pathlib.Path(spec.origin).resolve().is_relative_to(package)


def expected_full_decision_round_trips() -> int:
    """Redis round trips of an accepted order: the counter call, or none without it."""
    return 1 if counters_present() else 0


def our_side(keeper: Gatekeeper) -> Callable[[Any], Awaitable[Any]] | None:
    """Our three checks for one order (the peer scenario), or None before the counter step.

    The full decision: validation, local checks and the counter call's one
    round trip. It does more than the peer's three counter calls, so the
    comparison errs in the peer's favour.
    """
    if not counters_present():
        return None
    screen = keeper.engine.screen

    def check(request: Any) -> Awaitable[Any]:
        return screen(PLACE, request)

    return check
