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
