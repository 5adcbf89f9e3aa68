"""Association evidence end to end: device ids and client IPs, suspects, linking them (and the CLI)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.cli import main
from tests.e2e.conftest import Deployment
from tests.support.rpc import limit_order, refused
from tests.support.servers import POLICY, running_gateway, running_interceptor, test_settings

WHY = {"reason": "shared phone", "actor": "ops"}
HEADER = "x-forwarded-for"


def policy_folder(tmp: pathlib.Path) -> pathlib.Path:
    folder = tmp / "limits"
    folder.mkdir()
    (folder / "default.toml").write_text((POLICY / "default.toml").read_text())
    (folder / "association.toml").write_text(
        '[association]\nwindow = "1h"\nmax_accounts_per_device = 2\nmax_accounts_per_ip = 2\n'
    )
    return folder


@pytest.fixture(params=["proxy", "interceptor"])
async def guarded(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: pathlib.Path
) -> AsyncIterator[Deployment]:
    """Both deployments, with low association thresholds and a trusted proxy header."""
    folder = policy_folder(tmp_path)
    if request.param == "proxy":
        settings = test_settings(redis_url, policy=folder, trusted_proxy_header=HEADER)
        async with running_gateway(settings) as (gateway, clients):
            assert gateway.exchange is not None
            yield Deployment("proxy", clients, gateway.exchange)
    else:
        async with running_interceptor(redis_url, folder, trusted_proxy_header=HEADER) as g:
            yield Deployment("interceptor", g.clients, g.exchange)  # type: ignore[arg-type]


async def suspects(d: Deployment, **kw: Any) -> list[apb.SuspectedAssociation]:
    found = await d.clients.admin.ListSuspectedAssociations(
        apb.ListSuspectedAssociationsRequest(**kw)
    )
    return list(found.suspects)


async def wait_for_suspect(d: Deployment, accounts: int, **kw: Any) -> apb.SuspectedAssociation:
    """Evidence is written in the background: poll (bounded) until the suspect shows."""
    for _ in range(250):
        found = await suspects(d, **kw)
        if found and len(found[0].accounts) >= accounts:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no suspect {kw} with {accounts} accounts: {found}")


async def place(d: Deployment, account: str, *metadata: tuple[str, str]) -> pb.PlaceOrderResponse:
    return await d.clients.orders.PlaceOrder(limit_order(account, price="90"), metadata=metadata)


async def test_a_shared_device_is_suspected_and_linked(guarded: Deployment) -> None:
    device = ("x-pretrade-device-id", "phone-1")
    for account in ("a1", "a2"):
        await place(guarded, account, device)
    await place(guarded, "a9", ("x-pretrade-device-id", "phone-2"))
    await place(guarded, "a3", device)
    suspect = await wait_for_suspect(guarded, 3, kind=apb.EVIDENCE_KIND_DEVICE, value="phone-1")
    assert suspect.kind == apb.EVIDENCE_KIND_DEVICE and suspect.max_accounts == 2
    assert sorted(a.account_id for a in suspect.accounts) == ["a1", "a2", "a3"]
    assert suspect.accounts[0].account_id == "a3"  # most recent first
    assert not suspect.linked and suspect.HasField("flagged_at")
    assert await suspects(guarded, value="phone-2") == []

    accounts = [a.account_id for a in suspect.accounts]
    linked = await guarded.clients.admin.LinkAccounts(
        apb.LinkAccountsRequest(account_ids=accounts, **WHY)
    )
    assert len(linked.group.members) == 3
    again = await suspects(guarded, kind=apb.EVIDENCE_KIND_DEVICE)
    assert again[0].linked and {a.group_id for a in again[0].accounts} == {linked.group.group_id}
    assert await suspects(guarded, kind=apb.EVIDENCE_KIND_DEVICE, unlinked_only=True) == []


async def test_client_ip_comes_from_the_trusted_header(guarded: Deployment) -> None:
    for account in ("b1", "b2", "b3"):
        await place(guarded, account, (HEADER, f"10.9.9.{account[-1]}, 203.0.113.9"))
    suspect = await wait_for_suspect(guarded, 3, kind=apb.EVIDENCE_KIND_IP)
    assert suspect.value == "203.0.113.9"
    assert sorted(a.account_id for a in suspect.accounts) == ["b1", "b2", "b3"]
    # Without the header, the connection's own address is the evidence.
    for account in ("c1", "c2", "c3"):
        await place(guarded, account)
    local = await wait_for_suspect(guarded, 3, kind=apb.EVIDENCE_KIND_IP, value="127.0.0.1")
    assert {a.account_id for a in local.accounts} >= {"c1", "c2", "c3"}


async def test_bad_evidence_is_refused_and_never_forwarded(guarded: Deployment) -> None:
    call = guarded.clients.orders.PlaceOrder(
        limit_order("alice"), metadata=(("x-pretrade-device-id", "not valid!"),)
    )
    r = await refused(call)
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(r.bad_fields) == {"x-pretrade-device-id"}
    assert guarded.exchange.engine.open_orders(account_id="alice") == []
    r = await refused(guarded.clients.admin.ListSuspectedAssociations(
        apb.ListSuspectedAssociationsRequest(kind=apb.EVIDENCE_KIND_IP, value="phone")))  # fmt: skip
    assert set(r.bad_fields) == {"value"}


async def test_cli_verbs(
    redis_url: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = test_settings(redis_url, policy=policy_folder(tmp_path))
    async with running_gateway(settings) as (gateway, _):
        order, admin = f"127.0.0.1:{gateway.order_port}", f"127.0.0.1:{gateway.admin_port}"

        async def cli(*args: str) -> tuple[int, Any]:
            group, *rest = args
            address = ("--admin-addr", admin) if group == "admin" else ("--addr", order)
            capsys.readouterr()
            rc = await asyncio.to_thread(main, [group, *address, "--json", *rest])
            return rc, json.loads(capsys.readouterr().out or "{}")

        why = ("--reason", "shared phone", "--actor", "risk")
        for account in ("d1", "d2", "d3"):
            rc, out = await cli("order", "place", "--account", account, "--symbol", "BTC-USDT",
                                "--side", "sell", "--qty", "1", "--price", "100",
                                "--device-id", "tablet-7")  # fmt: skip
            assert rc == 0, out
        for _ in range(250):
            rc, out = await cli("admin", "suspects", "--kind", "device")
            if out.get("suspects"):
                break
            await asyncio.sleep(0.02)
        assert out["suspects"][0]["value"] == "tablet-7"

        rc, out = await cli(
            "admin", "link-suspects", "device", "tablet-7", "--group", "fam-1", *why
        )
        assert rc == 0 and sorted(out["linked"]) == ["d1", "d2", "d3"]
        assert out["group"]["group_id"] == "fam-1"
        with pytest.raises(SystemExit, match="no suspected association"):
            await cli("admin", "link-suspects", "device", "nothing-here", *why)

        rc, out = await cli("admin", "link", "d4", "d1", *why)
        assert rc == 0 and out["linked"] == ["d4"] and out["group"]["group_id"] == "fam-1"
        rc, out = await cli("order", "place", "--account", "d4", "--symbol", "BTC-USDT",
                            "--side", "buy", "--qty", "1", "--price", "100")  # fmt: skip
        assert (rc, out["reason"]) == (1, "SELF_TRADE")

        rc, out = await cli("admin", "set-group", "fam-1", "frozen", "--ttl", "1h", *why)
        assert rc == 0 and out["group"]["state"] == "ACCOUNT_STATE_FROZEN"
        rc, out = await cli("admin", "show-group", "--account", "d2")
        assert out["group"]["state_actor"] == "risk" and "state_expires_at" in out["group"]
        rc, out = await cli("admin", "groups", "--restricted")
        assert [g["group_id"] for g in out["groups"]] == ["fam-1"]
        rc, out = await cli("admin", "set-leverage", "--group", "fam-1", "--max", "2", *why)
        assert rc == 0 and out["limit"]["max_leverage"] == 2
        rc, out = await cli("admin", "unlink", "d4", *why)
        assert rc == 0 and out["group_id"] == "fam-1"
        rc, out = await cli("admin", "show-group", "fam-1")
        assert [m["account_id"] for m in out["group"]["members"]] == ["d1", "d2", "d3"]
        rc, out = await cli("admin", "set-symbol-limits", "BTC-USDT", "--stp-mode", "none", *why)
        assert rc == 0 and out["symbol"]["spec"]["stp_mode"] == "SELF_TRADE_PREVENTION_NONE"
