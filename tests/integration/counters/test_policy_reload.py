"""Policy files are picked up without a restart; a broken file keeps the policy in force."""

from __future__ import annotations

import asyncio
import pathlib

from gateway import Gatekeeper, load_policy
from gateway.counters.limits import LimitKind

SYMBOLS = """\
[[symbol]]
symbol = "BTC-USDT"
product = "spot"
base_asset = "BTC"
quote_asset = "USDT"
"""


def rate(keeper: Gatekeeper) -> list[str]:
    limits = keeper.counters.limits_for("alice", "BTC-USDT")
    return [str(w.value) for w in limits.rate(LimitKind.ORDER_RATE)]


async def wait_for(predicate: object, polls: int = 200) -> bool:
    for _ in range(polls):  # bounded: 200 x 20 ms
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_edit_break_fix(redis_url: str, tmp_path: pathlib.Path) -> None:
    (tmp_path / "venue.toml").write_text(SYMBOLS)
    limits = tmp_path / "limits.toml"
    limits.write_text('[limits.default]\norder_rate = "10/1s"\n')
    keeper = await Gatekeeper.open(redis_url, load_policy(tmp_path))
    try:
        assert keeper.watcher is not None and rate(keeper) == ["10/1s"]
        limits.write_text('[limits.default]\norder_rate = "20/1s,100/10s"\n')
        assert await wait_for(lambda: rate(keeper) == ["20/1s", "100/10s"])
        version = keeper.policy.version

        limits.write_text('[limits.default]\norder_rate = "20/1s"\ncolour = "red"\n')
        assert await wait_for(lambda: keeper.watcher is not None and keeper.watcher.rejected)
        error = keeper.watcher.last_error
        assert error is not None and (error.path, error.line) == (limits, 3)
        assert "unknown limit 'colour'" in error.reason
        assert rate(keeper) == ["20/1s", "100/10s"] and keeper.policy.version == version

        # A new file in the directory counts too, and symbols reload with the limits.
        limits.write_text('[limits.default]\norder_rate = "5/1s"\n')
        (tmp_path / "more.toml").write_text(SYMBOLS.replace("BTC", "ETH"))
        assert await wait_for(lambda: "ETH-USDT" in keeper.snapshot.symbols)
        assert rate(keeper) == ["5/1s"] and keeper.watcher.last_error is None
    finally:
        await keeper.close()


async def test_not_watching_a_policy_built_in_code(redis_url: str) -> None:
    from gateway.policy import Policy

    keeper = await Gatekeeper.open(redis_url, Policy())
    try:
        assert keeper.watcher is None
    finally:
        await keeper.close()
