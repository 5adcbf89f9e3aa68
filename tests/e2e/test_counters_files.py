"""Limits from policy files on a running gateway: the day rollover in real time, and the CLI."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
import redis.asyncio as aioredis

from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.cli import main
from tests.support.rpc import limit_order, refused
from tests.support.servers import POLICY, running_gateway, test_settings

DAY_S = 86_400


def policy_dir(tmp: pathlib.Path, limits: str) -> pathlib.Path:
    folder = tmp / "limits"
    folder.mkdir()
    (folder / "default.toml").write_text((POLICY / "default.toml").read_text())
    (folder / "limits.toml").write_text(limits)
    return folder


async def test_day_rollover_with_redis_time(redis_url: str, tmp_path: pathlib.Path) -> None:
    """The day boundary is set two seconds ahead of Redis' clock: wait for it, as the
    refusal's RetryInfo says, and the daily limit is fresh again."""
    redis = aioredis.Redis.from_url(redis_url)
    seconds, _ = await redis.time()
    await redis.aclose()
    boundary = (seconds + 2) % DAY_S
    day_start = f"{boundary // 3600:02d}:{boundary // 60 % 60:02d}:{boundary % 60:02d}"
    folder = policy_dir(
        tmp_path, f'[counters]\nday_start = "{day_start}"\n\n[limits.default]\ndaily_open = 1\n'
    )
    async with running_gateway(test_settings(redis_url, policy=folder)) as (_, clients):
        first = await clients.orders.PlaceOrder(limit_order())
        assert first.status == pb.ORDER_STATUS_NEW
        got = await refused(clients.orders.PlaceOrder(limit_order()))
        assert got.reason == "DAILY_POSITION_LIMIT" and got.retry_delay_ms is not None
        if got.retry_delay_ms > 3000:
            pytest.skip("the first order landed after the boundary (machine too slow)")
        await asyncio.sleep(got.retry_delay_ms / 1000)
        assert (await clients.orders.PlaceOrder(limit_order())).status == pb.ORDER_STATUS_NEW


def run_cli(*args: str) -> tuple[int, dict[str, object]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, json.loads(out.getvalue() or "{}")


async def test_cli_limit_verbs(redis_url: str, tmp_path: pathlib.Path) -> None:
    folder = policy_dir(tmp_path, '[limits.default]\norder_rate = ["10/1s", "100/10s"]\n')
    async with running_gateway(test_settings(redis_url, policy=folder)) as (gateway, clients):
        admin = ("admin", "--admin-addr", f"127.0.0.1:{gateway.admin_port}", "--json")

        async def cli(*args: str) -> tuple[int, dict[str, object]]:
            return await asyncio.to_thread(run_cli, *admin, *args)

        code, reply = await cli("set-limit", "order_rate", "2/1s", "--account", "alice",
                                "--reason", "abuse", "--actor", "risk-desk", "--ttl", "1h")  # fmt: skip
        assert code == 0 and reply["limit"]["value"] == "2/1s"  # type: ignore[index]
        await clients.orders.PlaceOrder(limit_order())
        code, shown = await cli("limits", "alice", "BTC-USDT", "--usage")
        rows = {(r["kind"], r["window"]): r for r in shown["limits"]}  # type: ignore[union-attr,index]
        assert rows[("LIMIT_KIND_ORDER_RATE", "1s")]["source"] == "admin:account:alice"  # type: ignore[index]
        assert rows[("LIMIT_KIND_ORDER_RATE", "1s")]["current"] == "1"  # type: ignore[index]
        assert rows[("LIMIT_KIND_ORDER_RATE", "10s")]["source"] == "policy:default"  # type: ignore[index]
        code, listed = await cli("limit-overrides")
        assert code == 0 and len(listed["overrides"]) == 1  # type: ignore[arg-type]
        code, bad = await cli("set-limit", "cancel_ratio", "0.9", "--reason", "x")
        assert code == 1 and bad["reason"] == "INVALID_REQUEST"
        assert [v["field"] for v in bad["field_violations"]] == ["value"]  # type: ignore[union-attr,index]
        code, removed = await cli("remove-limit", "order_rate", "--account", "alice",
                                  "--reason", "cleared")  # fmt: skip
        assert code == 0 and removed["removed"] is True
