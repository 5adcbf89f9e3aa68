"""``pretrade-gateway``: run the gateway or the reference exchange, and talk to them.

Every flag has a ``PRETRADE_*`` environment twin (shown in ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gateway.settings import Settings, default_state_dir


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"PRETRADE_{name}", default)


def _opt(
    parser: argparse.ArgumentParser, flag: str, env: str, default: str | None, help_: str
) -> None:
    shown = f" (env PRETRADE_{env}; default: {default})" if default else f" (env PRETRADE_{env})"
    parser.add_argument(flag, default=_env(env, default), help=help_ + shown)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrade-gateway",
        description=(
            "Pre-trade enforcement gateway for crypto exchange order entry. "
            "Screens every order against account and symbol states and limits kept in Redis, "
            "and forwards accepted orders to the exchange."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (proxy mode) in front of an order-entry service",
        description=(
            "Serve pretrade.v1.OrderEntry, screen each call, forward accepted calls upstream. "
            "Without --redis-url a private redis-server is started (AOF on, data in --redis-dir); "
            "without --upstream the reference exchange runs in-process."
        ),
    )
    _opt(serve, "--listen", "LISTEN", "127.0.0.1:50051", "order-entry address")
    _opt(serve, "--admin-listen", "ADMIN_LISTEN", "127.0.0.1:50052", "admin address")
    _opt(
        serve,
        "--redis-url",
        "REDIS_URL",
        None,
        "Redis to use: redis://127.0.0.1:6380/0, or a cluster: "
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    )
    _opt(
        serve,
        "--redis-dir",
        "REDIS_DIR",
        str(default_state_dir() / "redis"),
        "data directory of the private redis-server",
    )
    _opt(serve, "--upstream", "UPSTREAM", None, "upstream order-entry service HOST:PORT")
    _opt(serve, "--policy", "POLICY", "limits", "policy file or directory")
    _opt(serve, "--log-level", "LOG_LEVEL", "info", "debug, info, warning or error")
    from gateway.cli_ops import add_serve_ops_options

    add_serve_ops_options(serve, _opt)
    _opt(
        serve,
        "--trusted-proxy-header",
        "TRUSTED_PROXY_HEADER",
        None,
        "take client IPs from this header's last address (e.g. x-forwarded-for); "
        "only when a trusted proxy sets it",
    )
    from gateway.reliability.options import add_reliability_options

    add_reliability_options(serve)
    _security_options(serve)

    exchange = commands.add_parser(
        "exchange",
        help="run the reference exchange alone",
        description=(
            "Serve pretrade.v1.OrderEntry and ExecutionFeed from an in-memory matching engine."
        ),
    )
    _opt(exchange, "--listen", "EXCHANGE_LISTEN", "127.0.0.1:50061", "exchange address")
    _opt(exchange, "--log-level", "LOG_LEVEL", "info", "debug, info, warning or error")

    from gateway.cli_admin import add_admin_commands, add_order_commands

    add_admin_commands(commands)
    add_order_commands(commands)
    from gateway.cli_ops import add_health_command

    add_health_command(commands)
    return parser


def _security_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--auth", choices=["on", "off"], default=_env("AUTH", "on"),
        help="on: order entry needs an API key, admin an admin credential; off: neither "
        "(local development only) (env PRETRADE_AUTH; default: on)",
    )  # fmt: skip
    _opt(
        serve,
        "--admin-token",
        "ADMIN_TOKEN",
        None,
        "admin token (prefer the env var: flags show in ps); the token file is then not read",
    )
    _opt(
        serve,
        "--admin-token-file",
        "ADMIN_TOKEN_FILE",
        str(default_state_dir() / "admin-token"),
        "admin tokens, one per line (TOKEN or NAME TOKEN); created with a random token "
        "when missing and no admin client CA is given",
    )
    for port, flag, env in (("order-entry", "--tls", "TLS"), ("admin", "--admin-tls", "ADMIN_TLS")):
        _opt(serve, f"{flag}-cert", f"{env}_CERT", None, f"{port} port TLS certificate chain (PEM)")
        _opt(serve, f"{flag}-key", f"{env}_KEY", None, f"{port} port TLS private key (PEM)")
        _opt(
            serve,
            f"{flag}-client-ca",
            f"{env}_CLIENT_CA",
            None,
            f"{port} port: require client certificates signed by this CA (mutual TLS)",
        )


def _path(value: str | None) -> pathlib.Path | None:
    return pathlib.Path(value) if value else None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = (
        args.handler if hasattr(args, "handler") else _run
    )
    return handler(args)


def _run(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging

    configure_logging(args.log_level)
    if args.command == "serve":
        return _serve(args)
    return _exchange(args)


def _serve(args: argparse.Namespace) -> int:
    from gateway.admin_auth import AdminAuthError
    from gateway.embedded_redis import RedisNotFoundError
    from gateway.policy import PolicyError
    from gateway.reliability.options import reliability_settings
    from gateway.server import serve
    from gateway.store.redis_client import cluster_target
    from gateway.tls import TLSConfigError

    try:
        cluster_target(args.redis_url or "")
    except ValueError as exc:
        print(f"pretrade-gateway: --redis-url: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        listen=args.listen,
        admin_listen=args.admin_listen,
        redis_url=args.redis_url or None,
        redis_dir=pathlib.Path(args.redis_dir),
        upstream=args.upstream or None,
        policy=pathlib.Path(args.policy),
        log_level=args.log_level,
        trusted_proxy_header=(args.trusted_proxy_header or "").strip().lower() or None,
        **reliability_settings(args),
        auth=args.auth == "on",
        admin_token=args.admin_token or None,
        admin_token_file=pathlib.Path(args.admin_token_file),
        tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key),
        tls_client_ca=_path(args.tls_client_ca),
        admin_tls_cert=_path(args.admin_tls_cert),
        admin_tls_key=_path(args.admin_tls_key),
        admin_tls_client_ca=_path(args.admin_tls_client_ca),
    )
    from gateway.cli_ops import serve_ops_settings

    try:
        settings = serve_ops_settings(settings, args)
    except ValueError as exc:
        print(f"pretrade-gateway: {exc}", file=sys.stderr)
        return 2
    if not settings.auth:
        print(
            "pretrade-gateway: WARNING: --auth off: no API key for order entry and no admin "
            "credential. Anyone who reaches the ports can trade for any account and change "
            "every control. For local development only.",
            file=sys.stderr,
        )
    try:
        _run_loop(serve(settings))
    except (RedisNotFoundError, PolicyError, AdminAuthError, TLSConfigError) as exc:
        print(f"pretrade-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _exchange(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        _run_loop(_run_exchange(args.listen))
    return 0


async def _run_exchange(listen: str) -> None:
    import signal

    import structlog

    from gateway.cli_ops import serve_exchange_with_health

    server = await serve_exchange_with_health(listen)
    structlog.get_logger("gateway.exchange").info("exchange.ready", address=listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(5.0)


def _run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(coro)
    else:
        uvloop.run(coro)


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``"1500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` -> milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 2h, 1d)"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
