"""The [counters] and [limits.*] tables: examples load, mistakes name the file, line and reason."""

import pathlib
from decimal import Decimal

import pytest

from gateway.counters.limits import DEFAULT_SCOPE, CancelRatio, LimitKind, Scope, ScopeRef, Window
from gateway.policy import PolicyError, load_policy

ROOT = pathlib.Path(__file__).resolve().parents[3]

SYMBOLS = """\
[[symbol]]
symbol = "BTC-USDT"
product = "spot"
base_asset = "BTC"
quote_asset = "USDT"
"""

LIMITS = """\
[counters]
day_start = "08:30"
order_memory = "2d"
timeout = "250ms"

[limits.default]
order_rate = ["10/1s", "100/10s", "200000/1d"]
cancel_rate = "20/1s,200/10s"
cancel_ratio = { min_orders = 100, max_ratio = 0.95 }

[limits.product.perpetual]
daily_open = 5000
min_resting = "500ms"

[limits.symbol."BTC-USDT"]
large_notional = "250000"
large_order_rate = ["2/1s"]

[limits.account."mm-1"]
order_rate = ["500/1s"]
"""


def test_shipped_policy_still_loads() -> None:
    policy = load_policy(ROOT / "limits")
    assert policy.root == ROOT / "limits"


def test_limits_load(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "venue.toml"
    path.write_text(SYMBOLS + "\n" + LIMITS)
    counters = load_policy(path).counters
    assert counters.day_start_ms == (8 * 60 + 30) * 60_000
    assert counters.order_memory_ms == 2 * 86_400_000
    assert counters.timeout_ms == 250
    default = counters.table(DEFAULT_SCOPE)
    assert default[LimitKind.ORDER_RATE] == (
        Window(1000, 10),
        Window(10_000, 100),
        Window(86_400_000, 200_000),
    )
    assert default[LimitKind.CANCEL_RATIO] == CancelRatio(100, Decimal("0.95"))
    perp = counters.table(ScopeRef(Scope.PRODUCT, "perpetual"))
    assert perp == {LimitKind.DAILY_OPEN: 5000, LimitKind.MIN_RESTING: 500}
    btc = counters.table(ScopeRef(Scope.SYMBOL, "BTC-USDT"))
    assert btc[LimitKind.LARGE_NOTIONAL] == Decimal(250000)
    assert counters.table(ScopeRef(Scope.ACCOUNT, "mm-1"))[LimitKind.ORDER_RATE] == (
        Window(1000, 500),
    )


def test_limits_may_be_split_over_files(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text(SYMBOLS + '[limits.default]\norder_rate = "10/1s"\n')
    (tmp_path / "b.toml").write_text('[limits.default]\ncancel_rate = "20/1s"\n')
    table = load_policy(tmp_path).counters.table(DEFAULT_SCOPE)
    assert set(table) == {LimitKind.ORDER_RATE, LimitKind.CANCEL_RATE}


def test_defaults_without_counters_section(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text(SYMBOLS)
    counters = load_policy(tmp_path).counters
    assert counters.empty and counters.day_start_ms == 0


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[counters]\nday_start = '25:00'\n", 2, "counters.day_start: not a time of day"),
        ("[counters]\ncolour = 'x'\n", 2, "counters: unknown key 'colour'"),
        ("[counters]\ntimeout = '1m'\n", 2, "counters.timeout: from 1ms to 10s"),
        ("[counters]\nday_start = 8\n", 2, "expected a string"),
        ("[limits.default]\norder_rate = '10/1s'\nspeed = 3\n", 3, "unknown limit 'speed'"),
        (
            "[limits.default]\ncancel_rate = '1/1s'\n\n[limits.symbol.X]\norder_rate = ['ten/1s']\n",
            5,
            "limits.symbol.X.order_rate: rate window 'ten/1s'",
        ),
        ("[limits.product.Perp]\ndaily_open = 1\n", 1, "limits.product.Perp: 1-32 of a-z"),
        ("[limits.symbol.btc]\ndaily_open = 1\n", 1, "limits.symbol.btc"),
        ("[limits.desk.x]\ndaily_open = 1\n", 1, "unknown scope 'desk'"),
        ("[limits.default]\ndaily_open = -5\n", 2, "daily_open: expected a whole number"),
        ("[limits.default]\nmin_resting = '5 s'\n", 2, "not a duration"),
        ("[limits]\ndefault = 5\n", 2, "limits.default: must be a table"),
        (
            "[limits.default]\norder_rate = '1/1s'\n[limits.product.spot]\n"
            "cancel_ratio = { min_orders = 1, max_ratio = 0.1234567 }\n",
            4,
            "decimal places",
        ),
    ],
)
def test_broken_limits_name_file_line_and_reason(
    tmp_path: pathlib.Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "venue.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.path, info.value.line) == (path, line)
    assert words in info.value.reason


def test_same_limit_in_two_files_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text('[limits.default]\norder_rate = "10/1s"\n')
    (tmp_path / "b.toml").write_text('\n[limits.default]\norder_rate = "20/1s"\n')
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.path == tmp_path / "b.toml" and info.value.line == 3
    assert "declared twice" in info.value.reason


def test_setting_in_two_files_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text('[counters]\nday_start = "00:00"\n')
    (tmp_path / "b.toml").write_text('[counters]\nday_start = "01:00"\n')
    with pytest.raises(PolicyError, match="set in two files"):
        load_policy(tmp_path)


def test_the_commented_example_in_the_shipped_file_is_valid(tmp_path: pathlib.Path) -> None:
    text = (ROOT / "limits" / "default.toml").read_text()
    example = text.split("# Behavioural limits", 1)[1].splitlines()
    body = "\n".join(
        line[2:] for line in example if line.startswith("# ") and ("=" in line or "[" in line[2:3])
    )
    (tmp_path / "default.toml").write_text(text)
    (tmp_path / "example.toml").write_text(body)
    counters = load_policy(tmp_path).counters
    assert len(counters.tables) == 4 and counters.timeout_ms == 500
    # As shipped, nothing is in force.
    assert load_policy(ROOT / "limits").counters.empty
