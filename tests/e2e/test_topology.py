"""scripts/topology.py: the compose topology as plain processes, used like ops would use it."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from tests.support.ops import ascrape, eventually
from tests.support.rpc import limit_order, refusal
from tests.support.servers import ROOT, connect

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the launcher counts as gone once the launcher has exited.
    status = pathlib.Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _launch(tmp_path: pathlib.Path) -> subprocess.Popen[str]:
    """Start the launcher and wait for its topology.json (bounded)."""
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "topology.py"), "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    info_path = tmp_path / "topology.json"
    deadline = time.monotonic() + 60
    while not info_path.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not info_path.exists():
        out, err = _stop(launcher)
        raise AssertionError(f"topology did not come up:\n{out}\n{err}")
    return launcher


def _stop(launcher: subprocess.Popen[str]) -> tuple[str, str]:
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGTERM)
    try:
        return launcher.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        launcher.kill()
        return launcher.communicate()


async def _prometheus_scrapes_both(address: str) -> None:
    import urllib.request

    def up_targets() -> int:
        with urllib.request.urlopen(f"http://{address}/api/v1/targets", timeout=5) as reply:
            data = json.loads(reply.read())
        return sum(1 for t in data["data"]["activeTargets"] if t["health"] == "up")

    async def probe() -> int:
        return await asyncio.to_thread(up_targets)

    assert await eventually(probe, lambda n: n == 2, timeout_s=30) == 2


async def test_topology_runs_orders_through_both_replicas_and_stops_cleanly(
    tmp_path: pathlib.Path,
) -> None:
    launcher = await asyncio.to_thread(_launch, tmp_path)
    try:
        info: dict[str, Any] = json.loads((tmp_path / "topology.json").read_text())
        one, two = info["gateways"]
        token = (await asyncio.to_thread(pathlib.Path(info["admin_token_file"]).read_text)).strip()
        a = await connect(one["order"], one["admin"], admin_token=token)
        issued = await a.admin.IssueApiKey(
            apb.IssueApiKeyRequest(
                account_ids=["alice", "bob", "carol"], channel=apb.ORDER_CHANNEL_PROGRAM,
                reason="topology test", actor="ops",
            )
        )  # fmt: skip
        await a.close()
        # Either replica knows the key: issued through one, published to both.
        a = await connect(one["order"], one["admin"], api_key=issued.api_key, admin_token=token)
        b = await connect(two["order"], two["admin"], api_key=issued.api_key, admin_token=token)
        try:
            # A trade across replicas: bob sells on one, alice buys on the other; one exchange.
            await a.orders.PlaceOrder(
                limit_order("bob", side=pb.SIDE_SELL, quantity="1", price="100")
            )
            filled = await b.orders.PlaceOrder(limit_order("alice", quantity="1", price="100"))
            assert filled.status == pb.ORDER_STATUS_FILLED

            await a.admin.KillSwitch(
                apb.KillSwitchRequest(
                    scope=apb.KILL_SWITCH_SCOPE_VENUE, reason="drill", actor="ops"
                )
            )

            async def on_two() -> str:
                try:
                    await b.orders.PlaceOrder(limit_order("carol"))
                except aio.AioRpcError as exc:
                    return refusal(exc).reason
                return "ok"

            assert await eventually(on_two, lambda o: o == "KILL_SWITCH") == "KILL_SWITCH"
            await b.admin.ReleaseKillSwitch(
                apb.ReleaseKillSwitchRequest(
                    scope=apb.KILL_SWITCH_SCOPE_VENUE, reason="over", actor="ops"
                )
            )
            assert await eventually(on_two, lambda o: o == "ok") == "ok"

            records = await eventually(
                lambda: a.admin.ListDecisions(apb.ListDecisionsRequest()),
                lambda r: {d.instance for d in r.decisions} == {"gateway-1", "gateway-2"},
            )
            assert {d.instance for d in records.decisions} == {"gateway-1", "gateway-2"}
            for gw in (one, two):
                port = int(gw["metrics"].rsplit(":", 1)[1])
                metrics = await ascrape(port)
                assert any(k.startswith("pretrade_decisions_total") for k in metrics)
                assert f'instance="{gw["name"]}"' in "".join(
                    k for k in metrics if "gateway_info" in k
                )
            if info["prometheus"]:  # only where a prometheus binary is installed
                await _prometheus_scrapes_both(info["prometheus"])
            else:
                assert info["prometheus_skipped"] == "prometheus not on PATH"
        finally:
            await a.close()
            await b.close()
        assert (pathlib.Path(info["redis_dir"]) / "appendonlydir").is_dir(), "Redis runs with AOF"
    finally:
        out, err = await asyncio.to_thread(_stop, launcher)
    assert launcher.returncode == 0, err
    assert '"topology.stopped"' in out
    for name, pid in info["pids"].items():
        assert not _alive(pid), f"{name} still running"
