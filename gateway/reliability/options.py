"""The ``serve`` flags of the reliability settings (each with a ``PRETRADE_*`` twin)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from gateway.reliability.failure import (
    DEFAULT_DEADLINE_MS,
    DEFAULT_FAIL_OPEN,
    Operation,
    check_deadline_ms,
    parse_fail_open,
)
from gateway.reliability.idempotency import DEFAULT_WINDOW_MS, check_window_ms

DEFAULT_GRACE_MS = 5000


def _typed(check: Any) -> Any:
    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(check, "__name__", "value")
    return parse


def _ms(check: Any = None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"not a whole number of milliseconds: {text!r}") from None
        return check(value) if check is not None else value

    return _typed(parse)


def _grace_ms(value: int) -> int:
    if not 0 <= value <= 600_000:
        raise ValueError(f"the shutdown grace must be from 0 to 600000 ms, not {value}")
    return value


def add_reliability_options(parser: argparse.ArgumentParser) -> None:
    def env(name: str, default: str) -> str:
        return os.environ.get(f"PRETRADE_{name}", default)

    default_open = ",".join(sorted(op.value for op in DEFAULT_FAIL_OPEN))
    parser.add_argument(
        "--redis-timeout-ms",
        type=_ms(check_deadline_ms),
        default=env("REDIS_TIMEOUT_MS", str(DEFAULT_DEADLINE_MS)),
        metavar="MS",
        help="deadline of a Redis call on the order path; past it the failure policy decides "
        f"(env PRETRADE_REDIS_TIMEOUT_MS; default: {DEFAULT_DEADLINE_MS})",
    )
    parser.add_argument(
        "--fail-open",
        type=_typed(parse_fail_open),
        default=env("FAIL_OPEN", default_open),
        metavar="OPS",
        help="operations let through uncounted while Redis is unavailable, comma-separated from "
        f"{', '.join(op.value for op in Operation)}, or none; the others are refused with "
        f"STORE_UNAVAILABLE (env PRETRADE_FAIL_OPEN; default: {default_open})",
    )
    parser.add_argument(
        "--idempotency-window-ms",
        type=_ms(check_window_ms),
        default=env("IDEMPOTENCY_WINDOW_MS", str(DEFAULT_WINDOW_MS)),
        metavar="MS",
        help="a PlaceOrder retried with the same account and client_order_id within this long "
        "is not counted again; 0 turns this off "
        f"(env PRETRADE_IDEMPOTENCY_WINDOW_MS; default: {DEFAULT_WINDOW_MS})",
    )
    parser.add_argument(
        "--shutdown-grace-ms",
        type=_ms(_grace_ms),
        default=env("SHUTDOWN_GRACE_MS", str(DEFAULT_GRACE_MS)),
        metavar="MS",
        help="on SIGTERM/SIGINT, how long calls in flight may take to finish "
        f"(env PRETRADE_SHUTDOWN_GRACE_MS; default: {DEFAULT_GRACE_MS})",
    )


def reliability_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~gateway.settings.Settings` fields the flags above set."""
    fail_open: frozenset[Operation] = args.fail_open
    return {
        "redis_timeout_ms": args.redis_timeout_ms,
        "fail_open": fail_open,
        "idempotency_window_ms": args.idempotency_window_ms,
        "grace_s": args.shutdown_grace_ms / 1000,
    }
