"""The linked-account CLI verbs parse and their help renders; the trusted proxy header flag."""

from __future__ import annotations

import pytest

from gateway.cli import build_parser, main


@pytest.mark.parametrize(
    "verb",
    [
        "link",
        "unlink",
        "show-group",
        "groups",
        "set-group",
        "suspects",
        "link-suspects",
        "set-leverage",
    ],
)
def test_help_renders(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["admin", verb, "--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_arguments() -> None:
    parse = build_parser().parse_args
    args = parse(["admin", "link", "alice", "bob", "--group", "g1", "--reason", "r"])
    assert (args.account_ids, args.group) == (["alice", "bob"], "g1")
    args = parse(["admin", "link-suspects", "ip", "203.0.113.9", "--reason", "r", "--json"])
    assert (args.kind, args.value, args.json) == ("ip", "203.0.113.9", True)
    args = parse(["admin", "set-leverage", "--group", "g1", "--max", "3", "--reason", "r"])
    assert (args.group, args.max_leverage) == ("g1", 3)
    args = parse(["order", "place", "--account", "a", "--symbol", "S", "--side", "buy",
                  "--qty", "1", "--device-id", "phone-1"])  # fmt: skip
    assert args.device_id == "phone-1"


def test_trusted_proxy_header_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["serve"]).trusted_proxy_header is None
    monkeypatch.setenv("PRETRADE_TRUSTED_PROXY_HEADER", "X-Forwarded-For")
    assert build_parser().parse_args(["serve"]).trusted_proxy_header == "X-Forwarded-For"
