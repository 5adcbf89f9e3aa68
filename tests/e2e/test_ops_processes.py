"""Operations across real gateway processes: kill switch propagation, the admin CLI end to end."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import errors_pb2
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb
from gateway.embedded_redis import free_port
from tests.support.ops import eventually
from tests.support.rpc import limit_order, refusal
from tests.support.servers import ROOT, GatewayProcess, connect, gateway_process

pytestmark = pytest.mark.slow


async def outcome(clients: Any, account: str, symbol: str) -> str:
    try:
        await clients.orders.PlaceOrder(limit_order(account, symbol), timeout=5)
    except aio.AioRpcError as exc:
        return refusal(exc).reason or exc.code().name
    return "ok"


async def test_kill_switch_every_scope_across_two_gateways(
    redis_url: str, tmp_path: pathlib.Path
) -> None:
    with gateway_process(redis_url, tmp_path) as one, gateway_process(redis_url, tmp_path) as two:
        a = await connect(one.order_address, one.admin_address)
        b = await connect(two.order_address, two.admin_address)
        try:
            cases = [
                (apb.KILL_SWITCH_SCOPE_VENUE, "", ("bob", "BTC-USDT"), None),
                (apb.KILL_SWITCH_SCOPE_PRODUCT, "perpetual", ("bob", "ETH-USDT-PERP"), ("bob", "ETH-USDT")),
                (apb.KILL_SWITCH_SCOPE_ACCOUNT, "alice", ("alice", "SOL-USDT"), ("bob", "SOL-USDT")),
            ]  # fmt: skip
            for scope, ident, halted, free in cases:
                assert await outcome(b, *halted) == "ok"
                await a.admin.KillSwitch(
                    apb.KillSwitchRequest(scope=scope, id=ident, reason="incident", actor="ops")  # type: ignore[arg-type]
                )
                started = time.monotonic()
                seen = await eventually(
                    lambda h=halted: outcome(b, *h), lambda o: o == "KILL_SWITCH"
                )
                lag_ms = (time.monotonic() - started) * 1000
                assert seen == "KILL_SWITCH", f"gateway two never enforced {ident or 'venue'}"
                print(f"scope {scope}: enforced on the other gateway after ~{lag_ms:.0f} ms")
                if free is not None:
                    assert await outcome(b, *free) == "ok"
                cancel = pb.CancelOrderRequest(
                    account_id=halted[0], symbol=halted[1], order_id="X-0"
                )
                with pytest.raises(aio.AioRpcError) as cancelled:
                    await b.orders.CancelOrder(cancel)
                assert cancelled.value.code() == grpc.StatusCode.NOT_FOUND, (
                    "cancel reached the exchange"
                )
                # Released from the other gateway: one call.
                await b.admin.ReleaseKillSwitch(
                    apb.ReleaseKillSwitchRequest(scope=scope, id=ident, reason="over", actor="ops")  # type: ignore[arg-type]
                )
                seen = await eventually(lambda h=halted: outcome(a, *h), lambda o: o == "ok")
                assert seen == "ok"
            listed = await b.admin.ListKillSwitches(apb.ListKillSwitchesRequest())
            assert list(listed.kill_switches) == []
            # Group: recorded on both, matches no account yet.
            await a.admin.KillSwitch(
                apb.KillSwitchRequest(
                    scope=apb.KILL_SWITCH_SCOPE_GROUP, id="desk-1", reason="r", actor="ops"
                )
            )
            listed = await eventually(
                lambda: b.admin.ListKillSwitches(apb.ListKillSwitchesRequest()),
                lambda r: len(r.kill_switches) == 1,
            )
            assert [k.id for k in listed.kill_switches] == ["desk-1"]
            # Both gateways' decisions land in one audit trail.
            records = await eventually(
                lambda: a.admin.ListDecisions(
                    apb.ListDecisionsRequest(decision=apb.DECISION_REFUSE)
                ),
                lambda r: len({d.instance for d in r.decisions}) >= 1 and len(r.decisions) >= 3,
            )
            assert {d.reason for d in records.decisions} == {
                errors_pb2.Reason.Value("REASON_KILL_SWITCH")
            }
            await _refusal_and_admin_change_are_logged_with_their_request_ids(a, one)
        finally:
            await a.close()
            await b.close()


async def _refusal_and_admin_change_are_logged_with_their_request_ids(
    clients: Any, gw: GatewayProcess
) -> None:
    from tests.support.ops import request_id_of

    refused_id, error = await request_id_of(
        clients.orders.PlaceOrder(limit_order("x", "NOPE-USDT"))
    )
    assert error is not None and refused_id
    accepted_id, _ = await request_id_of(clients.orders.PlaceOrder(limit_order("y")))
    admin_id, error = await request_id_of(
        clients.admin.SetShadow(
            apb.SetShadowRequest(rule="SYMBOL_HALTED", enabled=True, reason="t", actor="ann")
        )
    )
    assert error is None and admin_id

    def lines() -> list[dict[str, Any]]:
        out = []
        for line in gw.log().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    async def logged() -> list[dict[str, Any]]:
        return lines()

    events = await eventually(logged, lambda ls: any(e.get("request_id") == admin_id for e in ls))
    refusals = [e for e in events if e.get("request_id") == refused_id]
    assert [e["event"] for e in refusals] == ["order.refused"]
    assert (refusals[0]["reason"], refusals[0]["account_id"]) == ("SYMBOL_UNKNOWN", "x")
    change = [e for e in events if e.get("request_id") == admin_id]
    assert [e["event"] for e in change] == ["admin.action"]
    assert (change[0]["actor"], change[0]["target"], change[0]["new"]) == (
        "ann",
        "SYMBOL_HALTED",
        "shadow",
    )
    assert not [e for e in events if e.get("request_id") == accepted_id], "accepts are not logged"


# -- the CLI -------------------------------------------------------------------------------------


def cli(*args: str, gw: GatewayProcess, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRETRADE_ADDR": gw.order_address,
        "PRETRADE_ADMIN_ADDR": gw.admin_address,
        "PRETRADE_ACTOR": "risk-desk",
        "COLUMNS": "200",
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, env=full_env, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def cli_json(*args: str, gw: GatewayProcess) -> tuple[int, Any]:
    rc, out, err = cli(args[0], "--json", *args[1:], gw=gw)
    return rc, json.loads(out or "{}") if rc == 0 else (json.loads(out) if out else err)


def place(account: str, symbol: str = "BTC-USDT") -> tuple[str, ...]:
    return ("order", "place", "--account", account, "--symbol", symbol, "--side", "buy",
            "--qty", "1", "--price", "100")  # fmt: skip


def test_admin_cli_end_to_end(redis_url: str, tmp_path: pathlib.Path) -> None:
    with gateway_process(redis_url, tmp_path, "--audit-accepts", "1") as gw:
        rc, engaged = cli_json("admin", "kill-switch", "engage", "product", "spot", "--reason",
                               "exchange incident", "--ttl", "10m", gw=gw)  # fmt: skip
        assert rc == 0 and engaged["kill_switch"]["scope"] == "KILL_SWITCH_SCOPE_PRODUCT"
        assert (
            engaged["kill_switch"]["actor"] == "risk-desk"
            and "expires_at" in engaged["kill_switch"]
        )
        rc, out, err = cli(*place("alice"), gw=gw)
        assert rc == 1 and "KILL_SWITCH" in err
        rc, out, _ = cli("admin", "kill-switch", "list", gw=gw)
        assert rc == 0 and "spot" in out and "exchange incident" in out
        rc, released = cli_json(
            "admin", "kill-switch", "release", "product", "spot", "--reason", "fixed", gw=gw
        )
        assert rc == 0 and released["was_engaged"] is True

        rc, _ = cli_json("admin", "set-account", "alice", "frozen", "--reason", "kyc", gw=gw)
        assert rc == 0
        rc, shadow = cli_json(
            "admin", "shadow", "set", "account_frozen", "on", "--reason", "trial", gw=gw
        )
        assert rc == 0 and shadow["rule"]["rule"] == "ACCOUNT_FROZEN"
        rc, _, _ = cli(*place("alice"), gw=gw)
        assert rc == 0, "shadowed rule refused"
        rc, out, _ = cli("admin", "shadow", "list", gw=gw)
        assert rc == 0 and "ACCOUNT_FROZEN" in out and "shadowable" in out
        rc, _ = cli_json(
            "admin", "shadow", "set", "ACCOUNT_FROZEN", "off", "--reason", "done", gw=gw
        )
        assert rc == 0
        rc, _, err = cli(*place("alice"), gw=gw)
        assert rc == 1 and "ACCOUNT_FROZEN" in err

        def listed() -> Any:
            return cli_json(
                "admin", "decisions", "--account", "alice", "--since", "10m", "--all", gw=gw
            )[1]

        deadline = time.monotonic() + 10
        records = listed()
        while len(records.get("decisions", [])) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            records = listed()
        decisions = [(d["decision"], d.get("reason", "")) for d in records["decisions"]]
        assert decisions == [
            ("DECISION_REFUSE", "REASON_ACCOUNT_FROZEN"),
            ("DECISION_SHADOW", "REASON_ACCOUNT_FROZEN"),
            ("DECISION_REFUSE", "REASON_KILL_SWITCH"),
        ]
        rc, out, _ = cli("admin", "decisions", "--reason", "kill_switch", gw=gw)
        assert rc == 0 and "KILL_SWITCH" in out and "alice" in out and "decisions" in out

        rc, actions = cli_json("admin", "actions", "--actor", "risk-desk", gw=gw)
        assert rc == 0
        assert [a["action"] for a in actions["actions"]] == [
            "set_shadow",
            "set_shadow",
            "set_account_state",
            "release_kill_switch",
            "kill_switch",
        ]
        rc, out, _ = cli("admin", "actions", "--action", "kill_switch", gw=gw)
        assert rc == 0 and "product:spot" in out

        # tail: start it, place a refused order, read one JSON line.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PRETRADE_ADMIN_ADDR": gw.admin_address}
        tail = subprocess.Popen(
            [sys.executable, "-m", "gateway", "admin", "--json", "tail", "--decision", "refuse", "--count", "1",
             "--account", "carol"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            line = ""
            deadline = time.monotonic() + 20
            while not line and time.monotonic() < deadline and tail.poll() is None:
                cli(*place("carol", "NOPE-USDT"), gw=gw)  # until the tail has started and sees one
                try:
                    line, _ = tail.communicate(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
            if not line:
                line = tail.communicate(timeout=10)[0]
            record = json.loads(line.splitlines()[0])
            assert record["account_id"] == "carol" and record["reason"] == "REASON_SYMBOL_UNKNOWN"
            assert tail.returncode == 0
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()

        # Clear errors: bad argument (argparse, exit 2), bad field (server, exit 1), token accepted.
        rc, _, err = cli("admin", "decisions", "--reason", "NOT_A_REASON", gw=gw)
        assert rc == 2 and "unknown reason" in err
        rc, _, err = cli("admin", "kill-switch", "engage", "venue", "x", "--reason", "r", gw=gw)
        assert rc == 1 and "field id" in err
        rc, _, _ = cli("admin", "--token", "s3cret", "kill-switch", "list", gw=gw)
        assert rc == 0
        rc, _, _ = cli(
            "admin", "kill-switch", "list", gw=gw, env={"PRETRADE_ADMIN_TOKEN": "s3cret"}
        )
        assert rc == 0
    rc, _, err = cli("admin", "decisions", gw=gw)
    assert rc == 3 and "cannot reach" in err


async def test_cli_sends_the_token_and_reports_a_refused_credential() -> None:
    seen: list[dict[str, str]] = []

    async def refuse(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        return b""

    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pretrade.v1.Admin", {"ListKillSwitches": grpc.unary_unary_rpc_method_handler(refuse)}),))  # fmt: skip
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "admin", "--admin-addr", f"127.0.0.1:{port}",
            "--token", "s3cret", "kill-switch", "list",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        await server.stop(0)
    assert process.returncode == 4
    assert "refused the credential" in err.decode()
    assert seen and seen[0]["authorization"] == "Bearer s3cret"
