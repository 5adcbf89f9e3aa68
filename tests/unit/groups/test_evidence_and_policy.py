"""Evidence from call metadata and peers; the [association] table and stp_mode in the policy."""

from __future__ import annotations

import pathlib

import pytest

from gateway.association.evidence import (
    DEVICE_METADATA_KEY,
    Evidence,
    forwarded_ip,
    peer_ip,
    read_evidence,
)
from gateway.association.policy import AssociationPolicy
from gateway.policy import PolicyError, load_policy
from gateway.reasons import Denial, Reason
from gateway.symbol_limits import SelfTradePrevention, SymbolLimits, stp_mode

GOOD = (
    '[[symbol]]\nsymbol = "BTC-USDT"\nproduct = "spot"\nbase_asset = "BTC"\nquote_asset = "USDT"\n'
)


@pytest.mark.parametrize(
    ("peer", "ip"),
    [("ipv4:10.1.2.3:5000", "10.1.2.3"), ("ipv6:[::1]:5000", "::1"),
     ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"), ("ipv6:[::ffff:10.0.0.9]:1", "10.0.0.9"),
     ("unix:/tmp/sock", ""), ("", ""), ("ipv4:nonsense:1", "")],
)  # fmt: skip
def test_peer_ip(peer: str, ip: str) -> None:
    assert peer_ip(peer) == ip


@pytest.mark.parametrize(
    ("header", "ip"),
    [("203.0.113.7", "203.0.113.7"), ("1.1.1.1, 198.51.100.2", "198.51.100.2"),
     ("spoofed, 198.51.100.2:4431", "198.51.100.2"), ("[2001:db8::5]:80", "2001:db8::5"),
     ("2001:db8::5", "2001:db8::5"), ("unknown", ""), ("", "")],
)  # fmt: skip
def test_forwarded_ip_is_the_last_address(header: str, ip: str) -> None:
    assert forwarded_ip(header) == ip


def test_read_evidence() -> None:
    meta = [(DEVICE_METADATA_KEY, "dev-1"), ("x-forwarded-for", "203.0.113.7")]
    assert read_evidence(meta, "ipv4:10.0.0.1:1") == Evidence("dev-1", "10.0.0.1")
    assert read_evidence(meta, "ipv4:10.0.0.1:1", "x-forwarded-for") == Evidence(
        "dev-1", "203.0.113.7"
    )
    # Configured but absent: the peer; present but unreadable: no IP (not the proxy's own).
    assert read_evidence([], "ipv4:10.0.0.1:1", "x-forwarded-for") == Evidence("", "10.0.0.1")
    assert (
        read_evidence([("x-forwarded-for", "junk")], "ipv4:10.0.0.1:1", "x-forwarded-for")
        == Evidence()
    )
    # The same device id twice is fine; two different ones, or a bad one, are refused.
    assert read_evidence([(DEVICE_METADATA_KEY, "d"), (DEVICE_METADATA_KEY, b"d")], "") == Evidence(
        "d"
    )
    for bad in ([(DEVICE_METADATA_KEY, "a"), (DEVICE_METADATA_KEY, "b")],
                [(DEVICE_METADATA_KEY, "has space")], [(DEVICE_METADATA_KEY, "{tag}")],
                [(DEVICE_METADATA_KEY, "x" * 129)], [(DEVICE_METADATA_KEY, "")]):  # fmt: skip
        denial = read_evidence(bad, "")
        assert isinstance(denial, Denial) and denial.reason is Reason.INVALID_REQUEST
        assert [v.field for v in denial.violations] == [DEVICE_METADATA_KEY]


def _load(tmp_path: pathlib.Path, text: str) -> object:
    (tmp_path / "p.toml").write_text(text)
    return load_policy(tmp_path / "p.toml")


def test_association_table(tmp_path: pathlib.Path) -> None:
    policy = _load(tmp_path, GOOD + '[association]\nwindow = "1h"\nmax_accounts_per_ip = 0\n')
    assert policy.association == AssociationPolicy(3_600_000, 3, 0)  # type: ignore[attr-defined]
    assert policy.association.threshold("ip") == 0  # type: ignore[attr-defined]
    assert _load(tmp_path, GOOD).association == AssociationPolicy()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "line", "words"),
    [('window = "10s"', 7, "association.window: between 1m and 31d"),
     ("window = 5", 7, "association.window: must be a duration"),
     ("max_accounts_per_device = 100", 7, "between 1 and 99"),
     ('max_accounts_per_ip = "3"', 7, "must be an integer"),
     ("colour = 1", 7, "association.colour: unknown key")],
)  # fmt: skip
def test_association_errors_name_the_line(
    tmp_path: pathlib.Path, table: str, line: int, words: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        _load(tmp_path, GOOD + "[association]\n" + table + "\n")
    assert caught.value.line == line and words in caught.value.reason


def test_stp_mode_per_symbol(tmp_path: pathlib.Path) -> None:
    policy = _load(tmp_path, GOOD + 'stp_mode = "none"\n')
    limits = policy.symbols["BTC-USDT"].limits  # type: ignore[attr-defined]
    assert stp_mode(limits) is SelfTradePrevention.NONE
    assert stp_mode(SymbolLimits()) is SelfTradePrevention.EXPIRE_TAKER
    assert SymbolLimits.from_fields(limits.to_fields()) == limits
    with pytest.raises(PolicyError) as caught:
        _load(tmp_path, GOOD + 'stp_mode = "expire_both"\n')
    assert (
        caught.value.line == 6
        and "stp_mode: must be one of expire_taker, none" in caught.value.reason
    )
