"""CLI verbs for the behavioural limits: ``pretrade-gateway admin set-limit`` and friends."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.message import Message
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.cli_admin import CALL_TIMEOUT_S, _admin, _change, _ttl
from gateway.counters.limits import LimitKind

KINDS = [kind.value for kind in LimitKind]


def add_limit_commands(verbs: Any) -> None:
    p = verbs.add_parser(
        "set-limit",
        help="set a behavioural limit at run time (overrides the policy files)",
        description=(
            "Set KIND to VALUE for every account (default), a product, a symbol or an account. "
            'Values: rate caps "10/1s,100/10s"; large_notional "250000"; daily_open "5000"; '
            'cancel_ratio "min_orders=100,max_ratio=0.95"; min_resting "500ms".'
        ),
    )
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=", ".join(KINDS))
    p.add_argument("value", metavar="VALUE")
    _scope(p)
    _change(p)
    p.set_defaults(call=_set_limit)

    p = verbs.add_parser("remove-limit", help="remove a runtime limit override")
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=", ".join(KINDS))
    _scope(p)
    _change(p, ttl=False)
    p.set_defaults(call=_remove_limit)

    p = verbs.add_parser(
        "limits", help="show the limits that apply to an account on a symbol, and where from"
    )
    p.add_argument("account_id")
    p.add_argument("symbol")
    p.add_argument("--usage", action="store_true", help="also show the counters' current values")
    p.set_defaults(call=_limits)

    p = verbs.add_parser("limit-overrides", help="list the runtime limit overrides in force")
    p.set_defaults(call=_overrides)


def _scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--account", help="for one account (on every symbol)")
    group.add_argument("--symbol", help="for one symbol")
    group.add_argument("--product", help='for every symbol of a product, e.g. "perpetual"')


def _target(args: argparse.Namespace) -> dict[str, Any]:
    if args.account:
        return {"scope": apb.LIMIT_SCOPE_ACCOUNT, "key": args.account}
    if args.symbol:
        return {"scope": apb.LIMIT_SCOPE_SYMBOL, "key": args.symbol}
    if args.product:
        return {"scope": apb.LIMIT_SCOPE_PRODUCT, "key": args.product}
    return {"scope": apb.LIMIT_SCOPE_DEFAULT, "key": ""}


def _kind(args: argparse.Namespace) -> int:
    return apb.LimitKind.Value(f"LIMIT_KIND_{LimitKind(args.kind).name}")


async def _set_limit(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.SetLimitRequest(
        **_target(args), kind=_kind(args), value=args.value,  # type: ignore[arg-type]
        reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    return await _admin(channel).SetLimit(request, timeout=CALL_TIMEOUT_S)


async def _remove_limit(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.RemoveLimitRequest(
        **_target(args), kind=_kind(args),  # type: ignore[arg-type]
        reason=args.reason, actor=args.actor,
    )  # fmt: skip
    return await _admin(channel).RemoveLimit(request, timeout=CALL_TIMEOUT_S)


async def _limits(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.GetEffectiveLimitsRequest(
        account_id=args.account_id, symbol=args.symbol, include_usage=args.usage
    )
    return await _admin(channel).GetEffectiveLimits(request, timeout=CALL_TIMEOUT_S)


async def _overrides(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ListLimitOverridesRequest()
    return await _admin(channel).ListLimitOverrides(request, timeout=CALL_TIMEOUT_S)
