"""Policy files: the shipped ones load; broken ones are refused with file, line and reason."""

import pathlib

import pytest

from gateway.policy import PolicyError, load_policy

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_shipped_policy_loads() -> None:
    policy = load_policy(ROOT / "limits")
    assert {"BTC-USDT", "ETH-USDT", "BTC-USDT-PERP"} <= set(policy.symbols)
    assert policy.symbols["BTC-USDT-PERP"].product == "perpetual"
    assert len(policy.version) == 12


GOOD = (
    '[[symbol]]\nsymbol = "BTC-USDT"\nproduct = "spot"\nbase_asset = "BTC"\nquote_asset = "USDT"\n'
)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[[symbol]\n", 1, "not valid TOML"),
        (GOOD + "[[symbol]]\nsymbol = 'ETH-USDT'\nproduct = 'spot'\n", 6, "base_asset: required"),
        (
            GOOD
            + "[[symbol]]\nsymbol = 'ETH-USDT'\nproduct = 'Bad'\nbase_asset = 'E'\nquote_asset = 'U'\n",
            8,
            "symbol[1].product",
        ),
        (GOOD.replace('"BTC-USDT"', '"btc"'), 2, "symbol[0].symbol"),
        (GOOD + "colour = 1\n", 6, "symbol[0].colour: unknown key"),
        ("colour = 1\n" + GOOD, 1, "top level: unknown key 'colour'"),
        (GOOD + GOOD, 7, "declared twice"),
        (GOOD.replace('"spot"', '"Spot!"'), 3, "symbol[0].product"),
    ],
)
def test_broken_file_names_file_line_and_reason(
    tmp_path: pathlib.Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "venue.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.path == path
    assert info.value.line == line
    assert words in info.value.reason


def test_missing_path(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PolicyError, match="no such policy"):
        load_policy(tmp_path / "nope")


def test_directory_merges_files_in_name_order(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text(GOOD.replace("BTC-USDT", "ETH-USDT").replace('"BTC"', '"ETH"'))
    policy = load_policy(tmp_path)
    assert list(policy.symbols) == ["BTC-USDT", "ETH-USDT"]
