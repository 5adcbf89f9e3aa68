"""Admin credentials: certificate subjects, token files, what ``serve`` accepts."""

from __future__ import annotations

import pathlib
import stat

import pytest

from gateway.admin_auth import (
    ADMIN_ROLE_OU,
    AdminAuthError,
    admin_credentials,
    check_token,
    first_token,
    read_token_file,
    subject_values,
)
from gateway.tls import ServerTLS, TLSConfigError


@pytest.mark.parametrize(
    ("subject", "units"),
    [
        ("OU=pretrade-admin,CN=alice", ["pretrade-admin"]),
        ("CN=alice,OU=desk,OU=pretrade-admin,O=Venue", ["desk", "pretrade-admin"]),
        ("CN=alice+OU=pretrade-admin", ["pretrade-admin"]),
        # Escaped separators are part of a value: a name cannot smuggle in a unit.
        ("CN=x\\,OU=pretrade-admin", []),
        ("CN=x\\2COU=pretrade-admin", []),
        ("OU=pretrade\\-admin", ["pretrade-admin"]),
        ("OU=pretrade-admin\\,x", ["pretrade-admin,x"]),
        ("CN=OU=pretrade-admin", []),
        ("", []),
    ],
)
def test_subject_units(subject: str, units: list[str]) -> None:
    assert subject_values(subject, "OU") == units


def test_tokens_must_be_long_and_plain() -> None:
    assert check_token("  " + "a" * 16 + "\n", "x") == "a" * 16
    for bad in ("short", "a" * 513, "a" * 16 + " b", "a" * 16 + "\x01", "é" * 16):
        with pytest.raises(AdminAuthError):
            check_token(bad, "x")


def test_token_file_format(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(
        "# ops tokens\n\nalice-laptop "
        + "a" * 20
        + "\n"
        + "b" * 20
        + "  # ci\nci-runner "
        + "c" * 20
    )
    assert read_token_file(path) == {
        "alice-laptop": "a" * 20,
        "tokens:4": "b" * 20,
        "ci-runner": "c" * 20,
    }
    assert first_token(path) == "a" * 20
    path.write_text("# nothing\n")
    with pytest.raises(AdminAuthError, match="holds no token"):
        read_token_file(path)
    assert first_token(path) is None and first_token(tmp_path / "absent") is None
    path.write_text("name short\n")
    with pytest.raises(AdminAuthError, match=r"tokens:1"):
        read_token_file(path)


def test_serve_generates_a_private_token_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state" / "pretrade-gateway" / "admin-token"
    first = admin_credentials(None, path, None)
    token = path.read_text().strip()
    assert first.tokens == {"admin-token": token} and len(token) >= 40
    assert first.cert_role is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # A restart reuses it, so the CLI keeps working.
    assert admin_credentials(None, path, None).tokens == first.tokens


def test_serve_credential_choices(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "admin-token"
    ca = tmp_path / "ca.pem"
    # An explicit token wins and no file is written.
    explicit = admin_credentials("t" * 24, path, None)
    assert explicit.tokens == {"admin-token": "t" * 24} and not path.exists()
    with pytest.raises(AdminAuthError):
        admin_credentials("short", path, None)
    # With a client CA, certificates are the credential: nothing is generated.
    certs_only = admin_credentials(None, path, ca)
    assert certs_only.tokens == {} and certs_only.cert_role == ADMIN_ROLE_OU
    assert not path.exists()
    # An existing file is read in either case.
    path.write_text("ops " + "o" * 20 + "\n")
    assert admin_credentials(None, path, ca).tokens == {"ops": "o" * 20}


def test_tls_flags_go_together(tmp_path: pathlib.Path) -> None:
    cert, key, ca = tmp_path / "c", tmp_path / "k", tmp_path / "ca"
    assert ServerTLS.from_paths("admin", None, None, None) is None
    assert ServerTLS.from_paths("admin", cert, key, ca) == ServerTLS(cert, key, ca)
    for args in ((cert, None, None), (None, key, None), (None, None, ca)):
        with pytest.raises(TLSConfigError):
            ServerTLS.from_paths("admin", *args)
    with pytest.raises(TLSConfigError, match="cannot read"):
        ServerTLS(cert, key).credentials()
