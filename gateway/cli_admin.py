"""Client verbs of the CLI: ``admin ...`` for ops, ``order ...`` for trying order entry.

People get tables; scripts pass ``--json``. A refused call prints the gRPC
status, the ``ErrorInfo`` reason and metadata, and any bad fields, and exits 1;
an unreachable gateway says so and exits 3.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from rich.console import Console
from rich.table import Table

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, order_entry_pb2_grpc
from gateway._generated.pretrade.v1 import order_entry_pb2 as pb

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
CALL_TIMEOUT_S = 5.0

Call = Callable[[aio.Channel, argparse.Namespace], Awaitable[Message]]

_ACCOUNT_STATES = {
    n.removeprefix("ACCOUNT_STATE_").lower(): v for n, v in apb.AccountState.items() if v
}
_SYMBOL_STATUSES = {
    n.removeprefix("SYMBOL_STATUS_").lower(): v for n, v in apb.SymbolStatus.items() if v
}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PRETRADE_{name}", default)


def _common(parser: argparse.ArgumentParser, addr_flag: str, env: str, default: str) -> None:
    parser.add_argument(
        addr_flag, dest="address", default=_env(env, default),
        help=f"gateway address (env PRETRADE_{env}; default: {default})",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    from gateway.cli_keys import add_tls_flags

    add_tls_flags(parser, "ADMIN_" if env.startswith("ADMIN") else "")


def _verb(verbs: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A verb that also takes ``--json`` after its own arguments."""
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help)
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON instead of tables",
    )
    return parser


def _change(parser: argparse.ArgumentParser, ttl: bool = True) -> None:
    parser.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    parser.add_argument(
        "--actor", default=_env("ACTOR", getpass.getuser()),
        help="who (env PRETRADE_ACTOR; default: your user name)",
    )  # fmt: skip
    if ttl:
        parser.add_argument(
            "--ttl", help="lapse on its own after this long (500ms, 30s, 5m, 2h, 1d)"
        )


def add_admin_commands(commands: Any) -> None:
    admin = commands.add_parser(
        "admin", help="operations and risk controls (talks to the admin port)",
        description=(
            "Change and inspect account and symbol states and behavioural limits "
            "on a running gateway."
        ),
    )  # fmt: skip
    _common(admin, "--admin-addr", "ADMIN_ADDR", "127.0.0.1:50052")
    admin.add_argument(
        "--token", "--admin-token", dest="token",
        default=os.environ.get("PRETRADE_ADMIN_TOKEN") or None,
        help="admin credential, sent as 'authorization: Bearer ...' (env PRETRADE_ADMIN_TOKEN; "
        "without it, the token file is read)",
    )  # fmt: skip
    verbs = admin.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = _verb(verbs, "set-account", help="set an account's state")
    p.add_argument("account_id")
    p.add_argument("state", choices=sorted(_ACCOUNT_STATES))
    _change(p)
    p.set_defaults(call=_set_account)

    p = _verb(verbs, "show-account", help="show an account's state")
    p.add_argument("account_id")
    p.set_defaults(call=_show_account)

    p = _verb(verbs, "set-symbol", help="set a symbol's trading status")
    p.add_argument("symbol")
    p.add_argument("status", choices=sorted(_SYMBOL_STATUSES))
    _change(p)
    p.set_defaults(call=_set_symbol)

    p = _verb(
        verbs, "upsert-symbol", help="create or replace a symbol's definition (limits included)"
    )
    p.description = "Replace the whole spec: limits not given are removed."
    p.add_argument("symbol")
    p.add_argument("--product", required=True, help='e.g. "spot", "perpetual"')
    p.add_argument("--base", required=True, help="base asset, e.g. BTC")
    p.add_argument("--quote", required=True, help="quote asset, e.g. USDT")
    _limit_flags(p)
    _change(p, ttl=False)
    p.set_defaults(call=_upsert_symbol)

    p = _verb(verbs, "set-symbol-limits", help="change some of a symbol's limits, keep the rest")
    p.description = (
        "Change only the limits given (UpsertSymbol with an update mask). An empty value "
        "('') removes a decimal limit; 0 removes --max-leverage and --reference-max-age."
    )
    p.add_argument("symbol")
    _limit_flags(p)
    _change(p, ttl=False)
    p.set_defaults(call=_set_symbol_limits)

    p = _verb(
        verbs, "set-leverage", help="lower leverage for a symbol, an account or a group at run time"
    )
    p.description = (
        "Set a run-time leverage limit. It can only lower what the symbol allows: "
        "the lowest of all caps applies."
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--symbol")
    target.add_argument("--account")
    target.add_argument("--group", help="a linked group (every member)")
    p.add_argument("--max", dest="max_leverage", type=int, default=0, help="cap, e.g. 20")
    p.add_argument(
        "--bracket", action="append", default=[], metavar="FLOOR:CAP:LEV",
        help="a notional bracket row (symbols only; repeat in order; empty CAP on the last row)",
    )  # fmt: skip
    p.add_argument("--clear", action="store_true", help="remove the run-time limit")
    _change(p)
    p.set_defaults(call=_set_leverage)

    p = _verb(verbs, "set-reference-price", help="pin a symbol's reference price (or --clear)")
    p.description = "Pin the price that bands and market-order notionals are measured against."
    p.add_argument("symbol")
    p.add_argument("price", nargs="?", default="", help="decimal price, e.g. 64000")
    p.add_argument("--clear", action="store_true", help="back to the upstream's last trade")
    _change(p)
    p.set_defaults(call=_set_reference_price)

    p = _verb(verbs, "show-symbol", help="show a symbol's definition and status")
    p.add_argument("symbol")
    p.set_defaults(call=_show_symbol)

    p = _verb(verbs, "restrictions", help="list restricted accounts and symbols")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token", default="")
    p.set_defaults(call=_restrictions)

    from gateway.cli_ops import add_ops_verbs
    from gateway.counters.cli import add_limit_commands
    from gateway.groups.cli import add_group_commands

    add_limit_commands(verbs)
    add_ops_verbs(verbs, _change)
    add_group_commands(verbs)

    from gateway.cli_keys import add_admin_credential_flags, add_key_commands

    add_key_commands(verbs)
    add_admin_credential_flags(admin)

    admin.set_defaults(handler=_run_admin)


def add_order_commands(commands: Any) -> None:
    order = commands.add_parser(
        "order", help="send order-entry calls (place, cancel, amend) to a gateway",
        description="A small order-entry client, for trying the gateway out.",
    )  # fmt: skip
    _common(order, "--addr", "ADDR", "127.0.0.1:50051")
    from gateway.cli_keys import add_api_key_flag

    add_api_key_flag(order)
    verbs = order.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = _verb(verbs, "place", help="place an order")
    p.add_argument("--account", required=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--side", required=True, choices=["buy", "sell"])
    p.add_argument("--type", default="limit", choices=["limit", "market"])
    p.add_argument("--qty", required=True, help="decimal quantity, e.g. 0.5")
    p.add_argument("--price", default="", help="decimal price (limit orders)")
    p.add_argument("--leverage", type=int, default=0)
    p.add_argument("--reduce-only", action="store_true")
    p.add_argument("--tif", choices=["gtc", "ioc", "fok"])
    p.add_argument("--client-order-id", default="")
    _channel_flag(p)
    p.set_defaults(call=_place)

    p = _verb(verbs, "cancel", help="cancel an order")
    p.add_argument("--account", required=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--order-id", default="")
    p.add_argument("--client-order-id", default="")
    _device_flag(p)
    p.set_defaults(call=_cancel)

    p = _verb(verbs, "amend", help="change a resting order's quantity and/or price")
    p.add_argument("--account", required=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--order-id", default="")
    p.add_argument("--client-order-id", default="")
    p.add_argument("--qty", default="")
    p.add_argument("--price", default="")
    _channel_flag(p)
    p.set_defaults(call=_amend)

    order.set_defaults(handler=_run_admin)


# -- running -------------------------------------------------------------------


def _run_admin(args: argparse.Namespace) -> int:
    return asyncio.run(_call(args))


async def _call(args: argparse.Namespace) -> int:
    from gateway.cli_keys import client_channel

    console = Console()
    async with client_channel(args) as channel:
        try:
            response = await args.call(channel, args)
        except aio.AioRpcError as exc:
            return _report_error(exc, args)
    if args.json:
        print(json_format.MessageToJson(response, preserving_proto_field_name=True))
    else:
        console.print(getattr(args, "render", _render)(response))
    return 0


def _report_error(exc: aio.AioRpcError, args: argparse.Namespace) -> int:
    from gateway.cli_ops import credential_refused, report_credential_refused

    if credential_refused(exc, args):
        return report_credential_refused(exc, args)
    if exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ) and not _has_details(exc):
        print(f"pretrade-gateway: cannot reach {args.address}: {exc.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE
    info = _error_details(exc)
    if args.json:
        import json

        print(json.dumps({"code": exc.code().name, "message": exc.details(), **info}, indent=2))
    else:
        err = Console(stderr=True)
        err.print(f"[bold red]{exc.code().name}[/]: {exc.details()}")
        if info.get("reason"):
            err.print(f"  reason: [bold]{info['reason']}[/]")
        for key, value in sorted(info.get("metadata", {}).items()):
            err.print(f"  {key}: {value}")
        for violation in info.get("field_violations", []):
            err.print(f"  field [bold]{violation['field']}[/]: {violation['description']}")
        if "retry_delay_ms" in info:
            err.print(f"  retry after: {info['retry_delay_ms']} ms")
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            from gateway.cli_keys import credential_hint

            err.print(f"  hint: {credential_hint(args)}")
    return EXIT_REFUSED


def _has_details(exc: aio.AioRpcError) -> bool:
    return rpc_status.from_call(exc) is not None  # type: ignore[arg-type]


def _error_details(exc: aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    if status is None:
        return out
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            out.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif detail.Unpack(bad):
            out["field_violations"] = [
                {"field": v.field, "description": v.description} for v in bad.field_violations
            ]
        elif detail.Unpack(retry):
            out["retry_delay_ms"] = retry.retry_delay.ToMilliseconds()
    return out


def _render(message: Message) -> Any:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    table = Table(show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value")
    for key, value in _flatten(data):
        table.add_row(key, value)
    return table


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows.extend(_flatten(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(data, list):
        if not data:
            rows.append((prefix, "(none)"))
        for index, value in enumerate(data):
            rows.extend(_flatten(value, f"{prefix}[{index}]"))
    else:
        rows.append((prefix, str(data)))
    return rows


# -- admin verbs ---------------------------------------------------------------


def _admin(channel: aio.Channel) -> admin_pb2_grpc.AdminAsyncStub:
    return admin_pb2_grpc.AdminStub(channel)


def _ttl(args: argparse.Namespace) -> duration_pb2.Duration | None:
    if not getattr(args, "ttl", None):
        return None
    from gateway.cli import parse_duration_ms

    ttl = duration_pb2.Duration()
    ttl.FromMilliseconds(parse_duration_ms(args.ttl))
    return ttl


async def _set_account(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.SetAccountStateRequest(
        account_id=args.account_id, state=_ACCOUNT_STATES[args.state],
        reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    return await _admin(channel).SetAccountState(request, timeout=CALL_TIMEOUT_S)


async def _show_account(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.GetAccountRequest(account_id=args.account_id)
    return await _admin(channel).GetAccount(request, timeout=CALL_TIMEOUT_S)


async def _set_symbol(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.SetSymbolStatusRequest(
        symbol=args.symbol, status=_SYMBOL_STATUSES[args.status],
        reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    return await _admin(channel).SetSymbolStatus(request, timeout=CALL_TIMEOUT_S)


async def _upsert_symbol(channel: aio.Channel, args: argparse.Namespace) -> Message:
    spec, _ = _limits_spec(args)
    spec.product, spec.base_asset, spec.quote_asset = args.product, args.base, args.quote
    request = apb.UpsertSymbolRequest(spec=spec, reason=args.reason, actor=args.actor)
    return await _admin(channel).UpsertSymbol(request, timeout=CALL_TIMEOUT_S)


async def _set_symbol_limits(channel: aio.Channel, args: argparse.Namespace) -> Message:
    spec, paths = _limits_spec(args)
    if not paths:
        raise SystemExit("pretrade-gateway: set-symbol-limits: give at least one limit to change")
    request = apb.UpsertSymbolRequest(
        spec=spec, reason=args.reason, actor=args.actor,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )  # fmt: skip
    return await _admin(channel).UpsertSymbol(request, timeout=CALL_TIMEOUT_S)


async def _set_leverage(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.SetLeverageLimitRequest(
        max_leverage=args.max_leverage, brackets=[_bracket(text) for text in args.bracket],
        clear=args.clear, reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    if args.symbol:
        request.symbol = args.symbol
    elif args.group:
        request.group_id = args.group
    else:
        request.account_id = args.account
    return await _admin(channel).SetLeverageLimit(request, timeout=CALL_TIMEOUT_S)


async def _set_reference_price(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.SetReferencePriceRequest(
        symbol=args.symbol, price=args.price, clear=args.clear,
        reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    return await _admin(channel).SetReferencePrice(request, timeout=CALL_TIMEOUT_S)


# -- symbol limit flags ----------------------------------------------------------

#: (flag, SymbolSpec field, help) for the decimal limits.
_DECIMAL_LIMITS = (
    ("--tick-size", "tick_size", "prices must be multiples of this"),
    ("--lot-size", "lot_size", "quantities must be multiples of this"),
    ("--min-qty", "min_quantity", "smallest quantity"),
    ("--max-qty", "max_quantity", "largest quantity"),
    ("--min-notional", "min_notional", "smallest quantity x price"),
    ("--max-notional", "max_notional", "largest quantity x price"),
    ("--band-buy-up", "band_buy_up_pct", "a buy at most this %% above the reference"),
    ("--band-buy-down", "band_buy_down_pct", "a buy at most this %% below the reference"),
    ("--band-sell-up", "band_sell_up_pct", "a sell at most this %% above the reference"),
    ("--band-sell-down", "band_sell_down_pct", "a sell at most this %% below the reference"),
)
_STALE = {"inherit": 0, "refuse_market": 1, "skip_band": 2}
_STP = {"inherit": 0, "expire_taker": 1, "none": 2}


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    for flag, name, help_ in _DECIMAL_LIMITS:
        metavar = "PCT" if name.endswith("_pct") else "DECIMAL"
        parser.add_argument(flag, dest=f"limit_{name}", default=None, metavar=metavar, help=help_)
    parser.add_argument(
        "--max-leverage", dest="limit_max_leverage", type=int, default=None, metavar="N",
        help="flat leverage cap (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--bracket", dest="limit_leverage_brackets", action="append", default=None,
        metavar="FLOOR:CAP:LEV", help="leverage bracket row (repeat in order)",
    )  # fmt: skip
    parser.add_argument("--no-brackets", action="store_true", help="remove the leverage brackets")
    parser.add_argument(
        "--reference-max-age", dest="limit_reference_max_age", default=None, metavar="DURATION",
        help="reference price goes stale after this long (e.g. 30s; 0s: the product's)",
    )  # fmt: skip
    parser.add_argument("--stale-reference", choices=sorted(_STALE), default=None)
    parser.add_argument("--program-trading", choices=["allowed", "forbidden"], default=None)
    parser.add_argument(
        "--stp-mode", choices=sorted(_STP), default=None,
        help="self-trade prevention between linked accounts (inherit: expire_taker)",
    )  # fmt: skip


def _limits_spec(args: argparse.Namespace) -> tuple[apb.SymbolSpec, list[str]]:
    """The SymbolSpec the limit flags describe, and the fields they name."""
    from gateway.cli import parse_duration_ms

    spec = apb.SymbolSpec(symbol=args.symbol)
    paths: list[str] = []
    for _, name, _ in _DECIMAL_LIMITS:
        value = getattr(args, f"limit_{name}")
        if value is not None:
            setattr(spec, name, value)
            paths.append(name)
    if args.limit_max_leverage is not None:
        spec.max_leverage = args.limit_max_leverage
        paths.append("max_leverage")
    if args.limit_leverage_brackets is not None or args.no_brackets:
        spec.leverage_brackets.extend(_bracket(t) for t in args.limit_leverage_brackets or ())
        paths.append("leverage_brackets")
    if args.limit_reference_max_age is not None:
        spec.reference_max_age_ms = parse_duration_ms(args.limit_reference_max_age)
        paths.append("reference_max_age_ms")
    if args.stale_reference is not None:
        spec.stale_reference = _STALE[args.stale_reference]  # type: ignore[assignment]
        paths.append("stale_reference")
    if args.program_trading is not None:
        spec.program_trading_forbidden = args.program_trading == "forbidden"
        paths.append("program_trading_forbidden")
    if args.stp_mode is not None:
        spec.stp_mode = _STP[args.stp_mode]  # type: ignore[assignment]
        paths.append("stp_mode")
    return spec, paths


def _bracket(text: str) -> apb.LeverageBracket:
    parts = text.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise SystemExit(f"pretrade-gateway: bad bracket {text!r}: use FLOOR:CAP:LEVERAGE")
    return apb.LeverageBracket(
        notional_floor=parts[0], notional_cap=parts[1], max_leverage=int(parts[2])
    )


def _channel_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel", choices=["program", "interactive"], default=None,
        help="sent as x-pretrade-channel metadata (absent: program); ignored with an API key, "
        "whose own channel counts",
    )  # fmt: skip
    _device_flag(parser)


def _device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device-id", default=None, help="sent as x-pretrade-device-id metadata"
    )  # fmt: skip


def _channel_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    channel = (("x-pretrade-channel", args.channel),) if getattr(args, "channel", None) else ()
    return channel + _device_metadata(args)


def _device_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    device = getattr(args, "device_id", None)
    return (("x-pretrade-device-id", device),) if device else ()


async def _show_symbol(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.GetSymbolRequest(symbol=args.symbol)
    return await _admin(channel).GetSymbol(request, timeout=CALL_TIMEOUT_S)


async def _restrictions(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ListRestrictionsRequest(page_size=args.page_size, page_token=args.page_token)
    return await _admin(channel).ListRestrictions(request, timeout=CALL_TIMEOUT_S)


# -- order verbs ---------------------------------------------------------------


def _orders(channel: aio.Channel) -> order_entry_pb2_grpc.OrderEntryAsyncStub:
    return order_entry_pb2_grpc.OrderEntryStub(channel)


async def _place(channel: aio.Channel, args: argparse.Namespace) -> Message:
    tif = {None: pb.TIME_IN_FORCE_UNSPECIFIED, "gtc": pb.TIME_IN_FORCE_GTC,
           "ioc": pb.TIME_IN_FORCE_IOC, "fok": pb.TIME_IN_FORCE_FOK}[args.tif]  # fmt: skip
    request = pb.PlaceOrderRequest(
        account_id=args.account,
        symbol=args.symbol,
        side=pb.SIDE_BUY if args.side == "buy" else pb.SIDE_SELL,
        type=pb.ORDER_TYPE_LIMIT if args.type == "limit" else pb.ORDER_TYPE_MARKET,
        quantity=args.qty,
        price=args.price,
        leverage=args.leverage,
        reduce_only=args.reduce_only,
        client_order_id=args.client_order_id,
        time_in_force=tif,
    )
    return await _orders(channel).PlaceOrder(
        request, timeout=CALL_TIMEOUT_S, metadata=_channel_metadata(args)
    )


async def _cancel(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = pb.CancelOrderRequest(
        account_id=args.account, symbol=args.symbol,
        order_id=args.order_id, client_order_id=args.client_order_id,
    )  # fmt: skip
    return await _orders(channel).CancelOrder(
        request, timeout=CALL_TIMEOUT_S, metadata=_device_metadata(args)
    )


async def _amend(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = pb.AmendOrderRequest(
        account_id=args.account, symbol=args.symbol,
        order_id=args.order_id, client_order_id=args.client_order_id,
        quantity=args.qty, price=args.price,
    )  # fmt: skip
    return await _orders(channel).AmendOrder(
        request, timeout=CALL_TIMEOUT_S, metadata=_channel_metadata(args)
    )
