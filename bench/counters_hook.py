"""Where the counter step (``gateway/counters``, one Lua round trip per order) plugs in.

The suite measures the full decision as ``PreTradeEngine.screen`` of an order
that passes every check, counter call included. What depends on the counter
step is decided here, so the scenarios still run (and say so) on a tree
without it:

* :func:`counters_present` switches on the figures that need the counter step
  (round trips of a full decision expected to be 1, the 1.3x-of-EVALSHA and
  3x-faster-than-limits targets, our side of the peer comparison);
* :data:`THREE_CHECKS` are the three counter checks per order, done by the
  peer library in the ``peer`` scenario and declared for the gateway by
  :func:`bench_policy`;
* :func:`bench_policy` is the policy every gateway of the suite runs with:
  ``bench/policy`` (the symbols), plus the three checks as ``order_rate``
  limits for every account (``[limits.default]``, the policy syntax of
  ``docs/counters.md``);
* :func:`our_side` is our side of the peer comparison.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gateway
from bench.lib.inproc import PLACE
from bench.lib.procs import BENCH_POLICY
from gateway.engine import Gatekeeper

COUNTERS_MODULE = "gateway.counters"


@dataclass(frozen=True)
class CounterCheck:
    """One per-account counter checked on every order: at most ``limit`` per ``window_s``."""

    name: str
    limit: int
    window_s: int


#: The three checks per order on both sides of the peer comparison: per-account
#: order rates over 10 s, 1 min and 1 day, as a venue would set them (Binance:
#: 50 per 10 s, 160,000 per day), scaled up so that the suite's orders, spread
#: over 1024 accounts, are all accepted: it measures the cost of passing them.
THREE_CHECKS = (
    CounterCheck("orders_10s", limit=1_000, window_s=10),
    CounterCheck("orders_1m", limit=1_000, window_s=60),
    CounterCheck("orders_1d", limit=200_000, window_s=86_400),
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


def limits_toml() -> str:
    """:data:`THREE_CHECKS` as policy limits for every account (the counter step's syntax)."""
    windows = ", ".join(f'"{c.limit}/{_window(c.window_s)}"' for c in THREE_CHECKS)
    return f"\n[limits.default]\norder_rate = [{windows}]\n"


def _window(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def bench_policy(scratch: pathlib.Path) -> pathlib.Path:
    """The policy for this run: the bench symbols, with the three limits if counters exist."""
    if not counters_present():
        return BENCH_POLICY
    folder = scratch / "bench-policy"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(p.read_text() for p in sorted(BENCH_POLICY.glob("*.toml")))
    (folder / "bench.toml").write_text(text + limits_toml())
    return folder


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
