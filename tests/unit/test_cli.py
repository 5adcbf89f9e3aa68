import argparse

import pytest

from gateway.cli import build_parser, parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("1d", 86_400_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5", "1.5s", "-1s", "1w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration_ms(text)


def test_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRETRADE_LISTEN", "127.0.0.1:6000")
    monkeypatch.setenv("PRETRADE_REDIS_URL", "redis://127.0.0.1:7000/0")
    args = build_parser().parse_args(["serve"])
    assert (args.listen, args.redis_url) == ("127.0.0.1:6000", "redis://127.0.0.1:7000/0")
    args = build_parser().parse_args(["serve", "--listen", "127.0.0.1:6001"])
    assert args.listen == "127.0.0.1:6001"


@pytest.mark.parametrize(
    "argv",
    [
        ["admin", "--json", "show-account", "alice"],
        ["admin", "show-account", "alice", "--json"],
        ["order", "place", "--account", "a", "--symbol", "S", "--side", "buy", "--qty", "1", "--json"],
    ],
)  # fmt: skip
def test_json_flag_before_or_after_the_verb(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).json is True


def test_json_defaults_to_tables() -> None:
    assert build_parser().parse_args(["admin", "show-account", "alice"]).json is False


def test_security_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (
        ("AUTH", "off"), ("ADMIN_TOKEN", "t" * 20), ("ADMIN_TOKEN_FILE", "/x/tokens"),
        ("TLS_CERT", "c.pem"), ("TLS_KEY", "k.pem"), ("TLS_CLIENT_CA", "ca.pem"),
        ("ADMIN_TLS_CERT", "ac.pem"), ("ADMIN_TLS_KEY", "ak.pem"), ("ADMIN_TLS_CLIENT_CA", "aca.pem"),
    ):  # fmt: skip
        monkeypatch.setenv(f"PRETRADE_{name}", value)
    args = build_parser().parse_args(["serve"])
    assert (args.auth, args.admin_token, args.admin_token_file) == ("off", "t" * 20, "/x/tokens")
    assert (args.tls_cert, args.tls_key, args.tls_client_ca) == ("c.pem", "k.pem", "ca.pem")
    assert (args.admin_tls_cert, args.admin_tls_key, args.admin_tls_client_ca) == (
        "ac.pem", "ak.pem", "aca.pem",
    )  # fmt: skip
    # Clients: order entry and admin read their own variables.
    monkeypatch.setenv("PRETRADE_API_KEY", "pk_x.y")
    monkeypatch.setenv("PRETRADE_TLS_CA", "order-ca.pem")
    monkeypatch.setenv("PRETRADE_ADMIN_TLS_CA", "admin-ca.pem")
    monkeypatch.setenv("PRETRADE_ADMIN_CLIENT_CERT", "me.pem")
    order = build_parser().parse_args(["order", "cancel", "--account", "a", "--symbol", "S"])
    assert (order.api_key, order.tls_ca, order.client_cert) == ("pk_x.y", "order-ca.pem", None)
    admin = build_parser().parse_args(["admin", "list-keys"])
    assert (admin.token, admin.tls_ca, admin.client_cert) == (
        "t" * 20,
        "admin-ca.pem",
        "me.pem",
    )


def test_auth_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRETRADE_AUTH", raising=False)
    assert build_parser().parse_args(["serve"]).auth == "on"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--auth", "maybe"])


@pytest.mark.parametrize("verb", ["issue-key", "revoke-key", "list-keys"])
def test_key_verbs_have_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["admin", verb, "--help"])
    assert exit_.value.code == 0 and verb in capsys.readouterr().out


def test_issue_key_arguments() -> None:
    args = build_parser().parse_args(
        ["admin", "issue-key", "--account", "alice", "--account", "alice.sub1",
         "--channel", "program", "--reason", "r", "--ttl", "30d"]
    )  # fmt: skip
    assert (args.accounts, args.channel, args.ttl) == (["alice", "alice.sub1"], "program", "30d")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["admin", "issue-key", "--account", "a", "--reason", "r"])
