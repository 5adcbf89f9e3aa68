"""The CLI verbs for order limits, against a real gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.cli import main
from tests.support.servers import running_gateway, test_settings


class Cli:
    def __init__(self, order: str, admin: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.order, self.admin, self.capsys = order, admin, capsys

    async def __call__(self, *args: str) -> tuple[int, Any]:
        group, *rest = args
        address = ("--admin-addr", self.admin) if group == "admin" else ("--addr", self.order)
        self.capsys.readouterr()
        rc = await asyncio.to_thread(main, [group, *address, "--json", *rest])
        out = self.capsys.readouterr().out
        return rc, json.loads(out or "{}")


async def test_limit_verbs(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_gateway(test_settings(redis_url)) as (gateway, _):
        cli = Cli(f"127.0.0.1:{gateway.order_port}", f"127.0.0.1:{gateway.admin_port}", capsys)
        why = ("--reason", "volatility", "--actor", "risk")

        rc, out = await cli("admin", "set-symbol-limits", "BTC-USDT", "--tick-size", "0.5",
                            "--program-trading", "forbidden", *why)  # fmt: skip
        assert rc == 0 and out["symbol"]["spec"]["tick_size"] == "0.5"
        assert out["symbol"]["spec"]["lot_size"] == "0.00001"  # kept
        place = ("order", "place", "--account", "alice", "--symbol", "BTC-USDT",
                 "--side", "buy", "--qty", "1", "--price", "100.5")  # fmt: skip
        rc, out = await cli(*place)
        assert (rc, out["reason"]) == (1, "PROGRAM_TRADING_FORBIDDEN")
        rc, out = await cli(*place, "--channel", "interactive")
        assert rc == 0 and out["status"] == "ORDER_STATUS_NEW"

        rc, out = await cli("admin", "set-leverage", "--account", "alice", "--max", "3",
                            "--ttl", "1h", *why)  # fmt: skip
        assert rc == 0 and out["limit"]["max_leverage"] == 3 and "expires_at" in out["limit"]
        rc, out = await cli("admin", "show-account", "alice")
        assert out["account"]["leverage_limit"]["actor"] == "risk"
        rc, out = await cli("admin", "set-leverage", "--symbol", "BTC-USDT-PERP",
                            "--bracket", "0:1000:10", "--bracket", "1000::2", *why)  # fmt: skip
        assert rc == 0 and [b["max_leverage"] for b in out["limit"]["brackets"]] == [10, 2]
        rc, out = await cli("admin", "set-leverage", "--account", "alice", "--clear", *why)
        assert rc == 0 and out["previous"]["max_leverage"] == 3

        rc, out = await cli("admin", "set-reference-price", "BTC-USDT", "100", "--ttl", "5m", *why)
        assert rc == 0 and out["reference_price"]["source"] == "ops"
        rc, out = await cli("admin", "show-symbol", "BTC-USDT")
        symbol = out["symbol"]
        assert symbol["reference_price"]["price"] == "100"
        assert symbol["program_trading_forbidden"] is True

        rc, out = await cli("admin", "set-symbol-limits", "BTC-USDT", "--lot-size", "-1", *why)
        assert rc == 1 and "spec.lot_size" in {v["field"] for v in out["field_violations"]}
        with pytest.raises(SystemExit):
            await cli(
                "admin", "set-leverage", "--symbol", "BTC-USDT-PERP", "--bracket", "0-1", *why
            )
        rc, out = await cli("admin", "upsert-symbol", "XRP-USDT", "--product", "spot",
                            "--base", "XRP", "--quote", "USDT", "--tick-size", "0.0001",
                            "--stale-reference", "skip_band", "--reference-max-age", "30s",
                            *why)  # fmt: skip
        assert rc == 0 and out["created"] is True
        spec = out["symbol"]["spec"]
        assert (spec["tick_size"], spec["stale_reference"], spec["reference_max_age_ms"]) == (
            "0.0001", "STALE_REFERENCE_SKIP_BAND", "30000",
        )  # fmt: skip


@pytest.mark.parametrize(
    "verb", ["set-symbol-limits", "set-leverage", "set-reference-price", "upsert-symbol"]
)
def test_help_renders(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["admin", verb, "--help"])
    assert info.value.code == 0 and verb in capsys.readouterr().out
