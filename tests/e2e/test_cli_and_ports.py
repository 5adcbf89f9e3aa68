"""The walkthrough from the README, with the real CLI against a real gateway process; health and reflection."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.servers import ROOT, GatewayProcess, gateway_process


def cli(
    *args: str, gw: GatewayProcess, env: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRETRADE_ADDR": gw.order_address,
        "PRETRADE_ADMIN_ADDR": gw.admin_address,
        "PRETRADE_ACTOR": "risk-desk",
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args[:1], "--json", *args[1:]],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout or "{}")


def test_walkthrough(redis_url: str, tmp_path: pathlib.Path) -> None:
    """As the README tells it: authentication on, the admin token found in the state
    directory the gateway wrote it to, an API key issued first."""
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    with gateway_process(redis_url, tmp_path, auth=True) as gw:
        rc, issued = cli(
            "admin", "issue-key", "--account", "alice", "--channel", "interactive",
            "--reason", "walkthrough", gw=gw, env=state,
        )  # fmt: skip
        assert rc == 0, issued
        alice_key = str(issued["api_key"])
        rc, bobs = cli(
            "admin", "issue-key", "--account", "bob", "--channel", "interactive",
            "--reason", "walkthrough", gw=gw, env=state,
        )  # fmt: skip
        assert rc == 0, bobs

        def user(
            *args: str, gw: GatewayProcess, key: str = alice_key
        ) -> tuple[int, dict[str, object]]:
            return cli(*args, gw=gw, env={**state, "PRETRADE_API_KEY": key})

        place = (
            "order",
            "place",
            "--account",
            "alice",
            "--symbol",
            "BTC-USDT",
            "--side",
            "buy",
            "--qty",
            "0.5",
            "--price",
            "60000",
        )
        rc, placed = user(*place, gw=gw)
        assert rc == 0 and placed["status"] == "ORDER_STATUS_NEW"

        rc, changed = user(
            "admin", "set-account", "alice", "frozen", "--reason", "KYC review", gw=gw
        )
        assert rc == 0
        assert changed["account"]["state"] == "ACCOUNT_STATE_FROZEN"  # type: ignore[index]
        assert changed["account"]["actor"] == "risk-desk"  # type: ignore[index]

        rc, refusal = user(*place, gw=gw)
        assert rc == 1
        assert (refusal["code"], refusal["reason"]) == ("FAILED_PRECONDITION", "ACCOUNT_FROZEN")

        rc, cancelled = user(
            "order",
            "cancel",
            "--account",
            "alice",
            "--symbol",
            "BTC-USDT",
            "--order-id",
            str(placed["order_id"]),
            gw=gw,
        )
        assert rc == 0 and cancelled["status"] == "ORDER_STATUS_CANCELED"

        rc, listed = user("admin", "restrictions", gw=gw)
        assert rc == 0 and [a["account_id"] for a in listed["accounts"]] == ["alice"]  # type: ignore[union-attr]

        rc, _ = user("admin", "set-account", "alice", "active", "--reason", "cleared", gw=gw)
        assert rc == 0
        rc, placed_again = user(*place, gw=gw)
        assert rc == 0 and placed_again["status"] == "ORDER_STATUS_NEW"

        rc, halted = user(
            "admin",
            "set-symbol",
            "ETH-USDT",
            "halted",
            "--reason",
            "volatility",
            "--ttl",
            "10m",
            gw=gw,
        )
        assert rc == 0 and "status_expires_at" in halted["symbol"]  # type: ignore[operator]
        rc, shown = user("admin", "show-symbol", "ETH-USDT", gw=gw)
        assert shown["symbol"]["status"] == "SYMBOL_STATUS_HALTED"  # type: ignore[index]

        rc, created = user(
            "admin",
            "upsert-symbol",
            "DOGE-USDT",
            "--product",
            "spot",
            "--base",
            "DOGE",
            "--quote",
            "USDT",
            "--reason",
            "listing",
            gw=gw,
        )
        assert rc == 0 and created["created"] is True
        rc, doge = user(
            "order",
            "place",
            "--account",
            "bob",
            "--symbol",
            "DOGE-USDT",
            "--side",
            "buy",
            "--qty",
            "10",
            "--price",
            "0.1",
            gw=gw,
            key=str(bobs["api_key"]),
        )
        assert rc == 0, doge


def test_cli_errors(redis_url: str, tmp_path: pathlib.Path) -> None:
    with gateway_process(redis_url, tmp_path) as gw:
        rc, bad = cli(
            "order",
            "place",
            "--account",
            "alice",
            "--symbol",
            "BTC-USDT",
            "--side",
            "buy",
            "--qty",
            "NaN",
            "--price",
            "1",
            gw=gw,
        )
        assert rc == 1 and bad["code"] == "INVALID_ARGUMENT"
        assert [v["field"] for v in bad["field_violations"]] == ["quantity"]  # type: ignore[union-attr]
        rc, missing = cli("admin", "show-symbol", "NOPE-USDT", gw=gw)
        assert rc == 1 and missing["code"] == "NOT_FOUND"
    # Nothing listens any more: a clear "cannot reach" and exit code 3.
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "admin", "--admin-addr", gw.admin_address, "show-account", "alice"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 3 and "cannot reach" in done.stderr


async def test_health_and_reflection_on_both_ports(redis_url: str, tmp_path: pathlib.Path) -> None:
    with gateway_process(redis_url, tmp_path) as gw:
        for address, service in (
            (gw.order_address, "pretrade.v1.OrderEntry"),
            (gw.admin_address, "pretrade.v1.Admin"),
        ):
            async with aio.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for name in ("", service):
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service=name), timeout=5
                    )
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                names: set[str] = set()
                async for reply in stub.ServerReflectionInfo(iter([request])):
                    names |= {s.name for s in reply.list_services_response.service}
                assert service in names and "grpc.health.v1.Health" in names
        # The admin service is not reachable on the order-entry port.
        async with aio.insecure_channel(gw.order_address) as channel:
            call = channel.unary_unary("/pretrade.v1.Admin/GetAccount")
            try:
                await call(b"", timeout=5)
            except aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
            else:
                raise AssertionError("Admin answered on the order-entry port")


@pytest.mark.parametrize("how", ["not on PATH", "bad PRETRADE_REDIS_SERVER"])
def test_missing_redis_server_says_how_to_get_one(tmp_path: pathlib.Path, how: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PRETRADE_REDIS_URL", None)
    if how == "not on PATH":
        env.pop("PRETRADE_REDIS_SERVER", None)
        env["PATH"] = str(tmp_path)
    else:
        env["PRETRADE_REDIS_SERVER"] = str(tmp_path / "no-redis-here")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--redis-dir", str(tmp_path / "data")],
        capture_output=True, text=True, env=env, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Install Redis" in done.stderr
    assert "Traceback" not in done.stderr
