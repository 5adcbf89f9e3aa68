"""CLI: API key verbs (``admin issue-key``, ``revoke-key``, ``list-keys``) and client credentials.

Order verbs send ``--key`` (``PRETRADE_API_KEY``); admin verbs send
``--admin-token`` (``PRETRADE_ADMIN_TOKEN``), else the first token of
``--admin-token-file`` (by default the file ``serve`` writes its generated
token to), so ops on the gateway's own machine need no flag at all.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any

from google.protobuf.message import Message
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.settings import default_state_dir

_CHANNELS = {"program": apb.ORDER_CHANNEL_PROGRAM, "interactive": apb.ORDER_CHANNEL_INTERACTIVE}


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PRETRADE_{name}", default)


def add_tls_flags(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """``--tls-ca``, ``--client-cert``, ``--client-key`` with ``PRETRADE_[ADMIN_]*`` twins."""
    for flag, env, help_ in (
        ("--tls-ca", "TLS_CA", "CA that signed the gateway's certificate: use TLS"),
        ("--client-cert", "CLIENT_CERT", "client certificate for mutual TLS (PEM)"),
        ("--client-key", "CLIENT_KEY", "its private key (PEM)"),
    ):
        parser.add_argument(
            flag,
            dest=flag.lstrip("-").replace("-", "_"),
            default=_env(env_prefix + env),
            help=f"{help_} (env PRETRADE_{env_prefix}{env})",
        )


def add_api_key_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        dest="api_key",
        default=_env("API_KEY"),
        help="API key from 'admin issue-key' (env PRETRADE_API_KEY; prefer the env var)",
    )
    parser.set_defaults(credential=lambda args: args.api_key)


def add_admin_credential_flags(parser: argparse.ArgumentParser) -> None:
    """``--admin-token-file``; ``--token`` (``--admin-token``) is declared with the parser."""
    default_file = str(default_state_dir() / "admin-token")
    parser.add_argument(
        "--admin-token-file",
        default=_env("ADMIN_TOKEN_FILE", default_file),
        help=f"read the admin token from here when no token is given "
        f"(env PRETRADE_ADMIN_TOKEN_FILE; default: {default_file})",
    )
    parser.set_defaults(credential=_admin_credential)


def _admin_credential(args: argparse.Namespace) -> str | None:
    from gateway.admin_auth import first_token

    if args.token:
        return str(args.token)
    return first_token(pathlib.Path(args.admin_token_file))


def client_channel(args: argparse.Namespace) -> aio.Channel:
    from gateway.client import open_channel
    from gateway.tls import TLSConfigError

    credential = args.credential(args) if hasattr(args, "credential") else None
    try:
        return open_channel(
            args.address,
            bearer=credential or None,
            ca=_path(args.tls_ca),
            cert=_path(args.client_cert),
            key=_path(args.client_key),
        )
    except TLSConfigError as exc:
        raise SystemExit(f"pretrade-gateway: {exc}") from exc


def credential_hint(args: argparse.Namespace) -> str:
    if args.command == "order":
        return "send an API key: --key or PRETRADE_API_KEY (ops issue one with 'admin issue-key')"
    return (
        "send the admin token: --token or PRETRADE_ADMIN_TOKEN, or --admin-token-file "
        "(the gateway writes a generated one to its state directory, "
        f"{default_state_dir() / 'admin-token'})"
    )


def _path(value: str | None) -> pathlib.Path | None:
    return pathlib.Path(value) if value else None


# -- admin verbs -----------------------------------------------------------------


def add_key_commands(verbs: Any) -> None:
    from gateway.cli_admin import _change, _verb

    p = _verb(verbs, "issue-key", help="issue an order-entry API key (shown once)")
    p.description = (
        "Issue an API key bound to one or more accounts and to a channel. The key is printed "
        "once and cannot be shown again; the gateway keeps only its hash."
    )
    p.add_argument(
        "--account", dest="accounts", action="append", required=True,
        help="account the key may act for (repeat for sub-accounts)",
    )  # fmt: skip
    p.add_argument(
        "--channel", required=True, choices=sorted(_CHANNELS),
        help="program (bots) or interactive (people); the program-trading rule uses it",
    )  # fmt: skip
    p.add_argument("--label", default="", help="who holds the key or what it is for")
    _change(p)
    p.set_defaults(call=_issue_key)

    p = _verb(verbs, "revoke-key", help="revoke an API key at once, on every gateway")
    p.add_argument("key_id", help="the key's id (pk_...), as issue-key and list-keys show it")
    _change(p, ttl=False)
    p.set_defaults(call=_revoke_key)

    p = _verb(verbs, "list-keys", help="list API keys (never their secrets)")
    p.add_argument("--account", default="", help="only keys bound to this account")
    p.add_argument("--include-revoked", action="store_true")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token", default="")
    p.set_defaults(call=_list_keys)


async def _issue_key(channel: aio.Channel, args: argparse.Namespace) -> Message:
    from gateway.cli_admin import CALL_TIMEOUT_S, _admin, _ttl

    request = apb.IssueApiKeyRequest(
        account_ids=args.accounts, channel=_CHANNELS[args.channel], label=args.label,
        reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    response = await _admin(channel).IssueApiKey(request, timeout=CALL_TIMEOUT_S)
    if args.json:
        return response
    print(
        "Store this API key now: it cannot be shown again. "
        "Send it as PRETRADE_API_KEY or authorization: Bearer <key>.",
        file=sys.stderr,
    )
    # Whole, on a line of its own: a table would cut it to the terminal's width.
    print(response.api_key, flush=True)
    shown = apb.IssueApiKeyResponse()
    shown.CopyFrom(response)
    shown.api_key = "(printed above)"
    return shown


async def _revoke_key(channel: aio.Channel, args: argparse.Namespace) -> Message:
    from gateway.cli_admin import CALL_TIMEOUT_S, _admin

    request = apb.RevokeApiKeyRequest(key_id=args.key_id, reason=args.reason, actor=args.actor)
    return await _admin(channel).RevokeApiKey(request, timeout=CALL_TIMEOUT_S)


async def _list_keys(channel: aio.Channel, args: argparse.Namespace) -> Message:
    from gateway.cli_admin import CALL_TIMEOUT_S, _admin

    request = apb.ListApiKeysRequest(
        account_id=args.account, include_revoked=args.include_revoked,
        page_size=args.page_size, page_token=args.page_token,
    )  # fmt: skip
    return await _admin(channel).ListApiKeys(request, timeout=CALL_TIMEOUT_S)
