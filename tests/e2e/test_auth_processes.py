"""``serve`` with authentication on, as separate processes: the generated admin token, the
CLI finding it, the audit trail, keys across gateways, and refusing bad settings."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
import subprocess
import sys
import time

from tests.support.servers import ROOT, GatewayProcess, gateway_process


def cli(
    *args: str, gw: GatewayProcess, state: pathlib.Path, **env: str
) -> tuple[int, dict[str, object], str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRETRADE_ADDR": gw.order_address,
        "PRETRADE_ADMIN_ADDR": gw.admin_address,
        "PRETRADE_ACTOR": "risk-desk",
        "XDG_STATE_HOME": str(state),
        **env,
    }
    for name in ("PRETRADE_API_KEY", "PRETRADE_ADMIN_TOKEN", "PRETRADE_ADMIN_TOKEN_FILE"):
        if name not in env:
            full_env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args[:1], "--json", *args[1:]],
        capture_output=True, text=True, env=full_env, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


PLACE = ("order", "place", "--account", "alice", "--symbol", "BTC-USDT", "--side", "buy",
         "--qty", "0.5", "--price", "60000")  # fmt: skip


def test_generated_token_cli_and_audit(redis_url: str, tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    token_file = state / "pretrade-gateway" / "admin-token"
    with gateway_process(redis_url, tmp_path, auth=True) as gw:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

        # Ops on the same machine: no flag needed, the CLI reads the token file.
        rc, issued, err = cli(
            "admin", "issue-key", "--account", "alice", "--channel", "program",
            "--label", "grid bot", "--reason", "onboarding", gw=gw, state=state,
        )  # fmt: skip
        assert rc == 0, err
        api_key = str(issued["api_key"])
        key_id = issued["key"]["key_id"]  # type: ignore[index]

        # Anyone else: refused (exit code 4: the credential), with a hint.
        rc, _, err = cli("admin", "restrictions", gw=gw, state=tmp_path / "elsewhere")
        assert rc == 4 and "UNAUTHENTICATED" in err and "--admin-token-file" in err
        rc, _, err = cli("admin", "restrictions", gw=gw, state=state, PRETRADE_ADMIN_TOKEN="x" * 32)
        assert rc == 4 and "UNAUTHENTICATED" in err and "check --token" in err

        rc, refused, _ = cli(*PLACE, gw=gw, state=state)
        assert rc == 1 and (refused["code"], refused["reason"]) == (
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
        )
        rc, placed, err = cli(*PLACE, gw=gw, state=state, PRETRADE_API_KEY=api_key)
        assert rc == 0 and placed["status"] == "ORDER_STATUS_NEW", err
        rc, mismatch, _ = cli(
            "order", "--key", api_key, "place", "--account", "bob", *PLACE[4:], gw=gw, state=state
        )
        assert rc == 1 and mismatch["reason"] == "ACCOUNT_MISMATCH"
        rc, _, err = cli(
            "admin", "set-account", "alice", "frozen", "--reason", "review", gw=gw, state=state
        )
        assert rc == 0, err
        rc, listed, _ = cli("admin", "list-keys", "--account", "alice", gw=gw, state=state)
        assert [k["key_id"] for k in listed["keys"]] == [key_id]  # type: ignore[union-attr]
        rc, revoked, _ = cli("admin", "revoke-key", str(key_id), "--reason", "rotated",
                             gw=gw, state=state)  # fmt: skip
        assert rc == 0 and revoked["key"]["revoked"] is True  # type: ignore[index]
        rc, refused, _ = cli(*PLACE, gw=gw, state=state, PRETRADE_API_KEY=api_key)
        assert rc == 1 and refused["metadata"]["problem"] == "revoked"  # type: ignore[index]
        log = _wait_for_log(gw, '"revoke_api_key"')

    secret = api_key.split(".")[1]
    for leaked in (token, secret, hashlib.sha256(secret.encode()).hexdigest()):
        assert leaked not in log
    actions = [json.loads(line) for line in log.splitlines() if '"admin.action"' in line]
    assert [a["action"] for a in actions] == [
        "issue_api_key",
        "set_account_state",
        "revoke_api_key",
    ]
    for action in actions:
        assert (action["principal"], action["actor"]) == ("token:admin-token", "risk-desk")
    assert actions[0]["target"] == key_id
    assert actions[0]["new"] == 'active accounts=alice channel=program label="grid bot"'
    assert actions[2]["new"].startswith("revoked accounts=alice")
    created = [json.loads(line) for line in log.splitlines() if "admin.token_created" in line]
    assert created and created[0]["path"] == str(token_file)


def _wait_for_log(gw: GatewayProcess, needle: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = gw.log()
        if needle in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{needle} never logged:\n{gw.log()}")


def test_keys_work_and_lapse_across_gateways(redis_url: str, tmp_path: pathlib.Path) -> None:
    token = "shared-admin-token-0123456789"
    env = {"PRETRADE_ADMIN_TOKEN": token}
    state = tmp_path / "state"
    with (
        gateway_process(redis_url, tmp_path, auth=True, env=env) as a,
        gateway_process(redis_url, tmp_path, auth=True, env=env) as b,
    ):
        rc, issued, err = cli(
            "admin", "issue-key", "--account", "alice", "--channel", "interactive",
            "--reason", "r", gw=a, state=state, PRETRADE_ADMIN_TOKEN=token,
        )  # fmt: skip
        assert rc == 0, err
        api_key = str(issued["api_key"])
        # Written through a, known to b (published with the write).
        assert _poll(lambda: cli(*PLACE, gw=b, state=state, PRETRADE_API_KEY=api_key)[0] == 0)
        rc, _, _ = cli("admin", "revoke-key", str(issued["key"]["key_id"]),  # type: ignore[index]
                       "--reason", "r", gw=a, state=state, PRETRADE_ADMIN_TOKEN=token)  # fmt: skip
        assert rc == 0
        assert _poll(lambda: cli(*PLACE, gw=b, state=state, PRETRADE_API_KEY=api_key)[0] == 1)
        _, refused, _ = cli(*PLACE, gw=b, state=state, PRETRADE_API_KEY=api_key)
        assert refused["metadata"]["problem"] == "revoked"  # type: ignore[index]


def _poll(condition: object, attempts: int = 20) -> bool:
    for _ in range(attempts):
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_auth_off_says_so_loudly(redis_url: str, tmp_path: pathlib.Path) -> None:
    with gateway_process(redis_url, tmp_path) as gw:
        log = gw.log()
    assert "WARNING: --auth off" in log and "local development only" in log.lower()
    assert '"auth.off"' in log and '"auth": "OFF"' in log
    assert not (tmp_path / "state" / "pretrade-gateway" / "admin-token").exists()


def test_bad_security_settings_stop_the_start(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path)}
    cases = [
        (["--admin-token", "short"], "admin token must be"),
        (["--tls-cert", str(tmp_path / "c.pem")], "give both a certificate and its key"),
        (["--admin-tls-client-ca", str(tmp_path / "ca.pem")], "needs a server certificate"),
        (["--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "k")], "cannot read"),
        (["--admin-token-file", str(tmp_path)], "cannot read admin token file"),
    ]
    for flags, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--redis-url", "redis://127.0.0.1:1/0",
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *flags],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 2, (flags, done.stderr)
        assert message in done.stderr, (flags, done.stderr)
