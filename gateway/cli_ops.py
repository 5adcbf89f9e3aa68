"""CLI for operations: audit trail, kill switch, shadow mode, health; ``serve``'s ops flags.

Lists print as tables for people and as JSON with ``--json``; ``admin tail``
prints one line (or one JSON object) per decision as it is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from grpc import aio
from rich.console import Console
from rich.table import Table

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway._generated.pretrade.v1 import admin_pb2_grpc, errors_pb2
from gateway.settings import Settings

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
EXIT_CREDENTIAL = 4
CALL_TIMEOUT_S = 5.0

_SCOPES = {n.removeprefix("KILL_SWITCH_SCOPE_").lower(): v
           for n, v in apb.KillSwitchScope.items() if v}  # fmt: skip
_DECISIONS = {n.removeprefix("DECISION_").lower(): v for n, v in apb.Decision.items() if v}
_REASONS = {n.removeprefix("REASON_"): v for n, v in errors_pb2.Reason.items() if v}

Opt = Callable[[argparse.ArgumentParser, str, str, "str | None", str], None]


# -- serve ---------------------------------------------------------------------------


def add_serve_ops_options(serve: argparse.ArgumentParser, opt: Opt) -> None:
    opt(serve, "--metrics-listen", "METRICS_LISTEN", None,
        "Prometheus /metrics address, e.g. 127.0.0.1:9464 (default: off)")  # fmt: skip
    opt(serve, "--instance", "INSTANCE", None,
        "this gateway's name in audit records and metrics (default: host:pid)")  # fmt: skip
    opt(serve, "--audit-accepts", "AUDIT_ACCEPTS", "1",
        "accepted orders in the audit trail: 1 all, N one in N, 0 none")  # fmt: skip
    opt(serve, "--audit-max-len", "AUDIT_MAX_LEN", "1000000",
        "approximate bound on the decision stream's length (0: none)")  # fmt: skip
    opt(serve, "--audit-max-age", "AUDIT_MAX_AGE", None,
        "drop decision records older than this, e.g. 7d (default: no age bound)")  # fmt: skip
    opt(serve, "--refusal-log-rate", "REFUSAL_LOG_RATE", "100",
        "refusal log lines a second at most, the rest counted (0: none)")  # fmt: skip


def serve_ops_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """Apply and check the ops flags (ValueError with the flag's name when bad)."""
    from gateway.cli import parse_duration_ms

    metrics = args.metrics_listen or None
    if metrics is not None:
        host, _, port = metrics.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"--metrics-listen: not HOST:PORT: {metrics!r}")
    accept_every = _non_negative("--audit-accepts", args.audit_accepts)
    max_len = _non_negative("--audit-max-len", args.audit_max_len)
    max_age_ms = 0
    if args.audit_max_age:
        try:
            max_age_ms = parse_duration_ms(args.audit_max_age)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"--audit-max-age: {exc}") from None
    return replace(
        settings,
        metrics_listen=metrics,
        instance=args.instance or "",
        audit_accept_every=accept_every,
        audit_max_len=max_len,
        audit_max_age_ms=max_age_ms,
        refusal_log_per_s=_non_negative("--refusal-log-rate", args.refusal_log_rate),
    )


def _non_negative(flag: str, text: str) -> int:
    if not str(text).isdigit():
        raise ValueError(f"{flag}: not a whole number >= 0: {text!r}")
    return int(text)


# -- exchange and health -----------------------------------------------------------


async def serve_exchange_with_health(listen: str) -> aio.Server:
    """The standalone reference exchange, with gRPC health and reflection (for containers)."""
    from gateway.exchange import ReferenceExchange, add_to_server
    from gateway.server import add_health_and_reflection

    server = aio.server()
    add_to_server(server, ReferenceExchange())
    await add_health_and_reflection(server, ("pretrade.v1.OrderEntry", "pretrade.v1.ExecutionFeed"))
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server


def add_health_command(commands: Any) -> None:
    p = commands.add_parser(
        "health", help="check a gateway's (or the exchange's) gRPC health",
        description="Exit 0 when SERVING, 1 when not, 3 when unreachable (container healthchecks).",
    )  # fmt: skip
    p.add_argument("--addr", default="127.0.0.1:50051", help="address to check")
    p.add_argument("--service", default="", help='service name ("" for the whole server)')
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(handler=_run_health)


def _run_health(args: argparse.Namespace) -> int:
    return asyncio.run(_health(args))


async def _health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with aio.insecure_channel(args.addr) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except aio.AioRpcError as exc:
            print(f"{args.addr}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return EXIT_UNREACHABLE if exc.code() in _UNREACHABLE else EXIT_REFUSED
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.addr}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_REFUSED


_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# -- credentials ---------------------------------------------------------------------


def admin_channel(args: argparse.Namespace) -> aio.Channel:
    """The admin channel: TLS flags, and the token (or the token file's) on every call."""
    from gateway.cli_keys import client_channel

    return client_channel(args)


def credential_refused(exc: aio.AioRpcError, args: argparse.Namespace) -> bool:
    if getattr(args, "command", "") != "admin":
        return False
    if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
        return True
    return exc.code() is grpc.StatusCode.PERMISSION_DENIED and not exc.trailing_metadata()


def report_credential_refused(exc: aio.AioRpcError, args: argparse.Namespace) -> int:
    from gateway.cli_keys import credential_hint

    hint = "check --token / PRETRADE_ADMIN_TOKEN" if args.token else credential_hint(args)
    print(
        f"pretrade-gateway: {args.address} refused the credential "
        f"({exc.code().name}: {exc.details()}); {hint}",
        file=sys.stderr,
    )
    return EXIT_CREDENTIAL


# -- admin verbs -----------------------------------------------------------------------


def add_ops_verbs(verbs: Any, change: Callable[..., None]) -> None:
    """``decisions``, ``tail``, ``actions``, ``kill-switch ...``, ``shadow ...``."""
    p = verbs.add_parser("decisions", help="list recorded decisions (newest first)")
    _decision_filters(p)
    _time_range(p)
    _paging(p)
    p.add_argument("--all", action="store_true", help="follow page tokens to the end")
    p.set_defaults(call=_decisions, render=_decisions_table)

    p = verbs.add_parser("tail", help="print decisions as they are recorded (Ctrl-C stops)")
    _decision_filters(p)
    p.add_argument("--after-id", default="", help="start after this record id")
    p.add_argument("--count", type=int, default=0, help="stop after this many records")
    p.set_defaults(handler=_run_tail)

    p = verbs.add_parser("actions", help="list admin changes (newest first)")
    p.add_argument("--actor", default="")
    p.add_argument("--action", default="", help="e.g. kill_switch, set_account_state")
    p.add_argument("--target", default="", help='e.g. an account id, a symbol, "venue"')
    _time_range(p)
    _paging(p)
    p.set_defaults(call=_actions, render=_actions_table)

    kill = verbs.add_parser("kill-switch", help="halt new orders: venue, product, account, group")
    kill_verbs = kill.add_subparsers(dest="kill_verb", required=True, metavar="VERB")
    p = kill_verbs.add_parser("engage", help="halt new orders and amends at a scope")
    _scope(p)
    change(p)
    p.set_defaults(call=_engage)
    p = kill_verbs.add_parser("release", help="let orders through again at a scope")
    _scope(p)
    change(p, ttl=False)
    p.set_defaults(call=_release)
    p = kill_verbs.add_parser("list", help="kill switches in force")
    p.set_defaults(call=_kill_list, render=_kill_table)

    shadow = verbs.add_parser("shadow", help="shadow mode: rules that record but do not refuse")
    shadow_verbs = shadow.add_subparsers(dest="shadow_verb", required=True, metavar="VERB")
    p = shadow_verbs.add_parser("set", help="shadow a rule (on) or enforce it again (off)")
    p.add_argument("rule", help="a refusal reason, e.g. ACCOUNT_FROZEN, or '*' for every rule")
    p.add_argument("mode", choices=["on", "off"])
    change(p)
    p.set_defaults(call=_shadow_set)
    p = shadow_verbs.add_parser("list", help="shadowed rules, and the rules that can be")
    p.set_defaults(call=_shadow_list, render=_shadow_table)


def _decision_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", default="")
    p.add_argument("--group", default="")
    p.add_argument("--symbol", default="")
    p.add_argument("--reason", default="", type=_reason, help="e.g. ACCOUNT_FROZEN")
    p.add_argument("--decision", default="", choices=["", *_DECISIONS])


def _time_range(p: argparse.ArgumentParser) -> None:
    help_ = "a duration ago (30s, 10m, 2h, 1d) or an ISO 8601 time"
    p.add_argument("--since", type=_when, help=help_)
    p.add_argument("--until", type=_when, help=help_)


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")


def _scope(p: argparse.ArgumentParser) -> None:
    p.add_argument("scope", choices=list(_SCOPES))
    p.add_argument("id", nargs="?", default="", help="product, account or group id (not venue)")


def _reason(text: str) -> str:
    name = text.strip().upper().removeprefix("REASON_")
    if name and name not in _REASONS:
        raise argparse.ArgumentTypeError(
            f"unknown reason {text!r} (one of: {', '.join(sorted(_REASONS))})"
        )
    return name


def _when(text: str) -> timestamp_pb2.Timestamp:
    from gateway.cli import parse_duration_ms

    stamp = timestamp_pb2.Timestamp()
    try:
        ago_ms = parse_duration_ms(text)
    except argparse.ArgumentTypeError:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a time: {text!r} (use a duration ago like 10m, or ISO 8601)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        stamp.FromDatetime(moment)
        return stamp
    stamp.GetCurrentTime()
    stamp.FromMilliseconds(stamp.ToMilliseconds() - ago_ms)
    return stamp


def _stub(channel: aio.Channel) -> Any:
    return admin_pb2_grpc.AdminStub(channel)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "account_id": args.account,
        "group_id": args.group,
        "symbol": args.symbol,
        "reason": _REASONS.get(args.reason, 0),
        "decision": _DECISIONS.get(args.decision, 0),
    }


def _times(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("since", "until") if getattr(args, k) is not None}


def _ttl(args: argparse.Namespace) -> Any:
    from gateway.cli_admin import _ttl as ttl

    return ttl(args)


async def _decisions(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ListDecisionsRequest(
        **_filters(args), **_times(args), page_size=args.page_size, page_token=args.page_token
    )
    response: apb.ListDecisionsResponse = await _stub(channel).ListDecisions(
        request, timeout=CALL_TIMEOUT_S
    )
    pages = 1
    while args.all and response.next_page_token and pages < 1000:
        request.page_token = response.next_page_token
        more = await _stub(channel).ListDecisions(request, timeout=CALL_TIMEOUT_S)
        response.decisions.extend(more.decisions)
        response.next_page_token = more.next_page_token
        pages += 1
    return response


async def _actions(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ListAdminActionsRequest(
        actor=args.actor, action=args.action, target=args.target, **_times(args),
        page_size=args.page_size, page_token=args.page_token,
    )  # fmt: skip
    response: Message = await _stub(channel).ListAdminActions(request, timeout=CALL_TIMEOUT_S)
    return response


async def _engage(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.KillSwitchRequest(
        scope=_SCOPES[args.scope], id=args.id, reason=args.reason, actor=args.actor,
        ttl=_ttl(args),
    )  # fmt: skip
    response: Message = await _stub(channel).KillSwitch(request, timeout=CALL_TIMEOUT_S)
    return response


async def _release(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ReleaseKillSwitchRequest(
        scope=_SCOPES[args.scope], id=args.id, reason=args.reason, actor=args.actor
    )
    response: Message = await _stub(channel).ReleaseKillSwitch(request, timeout=CALL_TIMEOUT_S)
    return response


async def _kill_list(channel: aio.Channel, args: argparse.Namespace) -> Message:
    response: Message = await _stub(channel).ListKillSwitches(
        apb.ListKillSwitchesRequest(), timeout=CALL_TIMEOUT_S
    )
    return response


async def _shadow_set(channel: aio.Channel, args: argparse.Namespace) -> Message:
    rule = args.rule if args.rule == "*" else args.rule.upper()
    request = apb.SetShadowRequest(
        rule=rule, enabled=args.mode == "on", reason=args.reason, actor=args.actor,
        ttl=_ttl(args),
    )  # fmt: skip
    response: Message = await _stub(channel).SetShadow(request, timeout=CALL_TIMEOUT_S)
    return response


async def _shadow_list(channel: aio.Channel, args: argparse.Namespace) -> Message:
    response: Message = await _stub(channel).ListShadowRules(
        apb.ListShadowRulesRequest(), timeout=CALL_TIMEOUT_S
    )
    return response


# -- tail --------------------------------------------------------------------------------


def _run_tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 0


async def _tail(args: argparse.Namespace) -> int:
    from gateway.cli_admin import _report_error

    console = Console(highlight=False)
    request = apb.WatchDecisionsRequest(**_filters(args), after_id=args.after_id)
    seen = 0
    async with admin_channel(args) as channel:
        try:
            async for record in _stub(channel).WatchDecisions(request):
                if args.json:
                    print(_json_line(record), flush=True)
                else:
                    console.print(_decision_line(record))
                seen += 1
                if args.count and seen >= args.count:
                    break
        except aio.AioRpcError as exc:
            return _report_error(exc, args)
    return 0


def _json_line(message: Message) -> str:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(data, sort_keys=True)


# -- tables ------------------------------------------------------------------------------


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    moment = stamp.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _reason_name(value: int) -> str:
    if not value:
        return ""
    try:
        return errors_pb2.Reason.Name(value).removeprefix("REASON_")  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def _decision_name(value: int) -> str:
    return apb.Decision.Name(value).removeprefix("DECISION_").lower()  # type: ignore[arg-type]


def _decision_line(r: apb.DecisionRecord) -> str:
    parts = [_time(r.time), r.instance, _decision_name(r.decision), _reason_name(r.reason),
             r.method, r.account_id, r.symbol, f"rid={r.request_id}"]  # fmt: skip
    if r.shadowed:
        parts.append("shadowed=" + ",".join(_reason_name(s) for s in r.shadowed))
    return "  ".join(p for p in parts if p)


def _decisions_table(response: apb.ListDecisionsResponse) -> Any:
    table = Table(show_header=True, header_style="bold", title="decisions (newest first)")
    for column in ("time", "decision", "reason", "method", "account", "symbol", "limit",
                   "instance", "request id"):  # fmt: skip
        table.add_column(column)
    for r in response.decisions:
        reason = _reason_name(r.reason)
        if r.shadowed and r.decision != apb.DECISION_SHADOW:
            reason += " (shadowed: " + ",".join(_reason_name(s) for s in r.shadowed) + ")"
        table.add_row(_time(r.time), _decision_name(r.decision), reason, r.method,
                      r.account_id, r.symbol, r.limit, r.instance, r.request_id)  # fmt: skip
    return _with_token(table, response.next_page_token)


def _actions_table(response: apb.ListAdminActionsResponse) -> Any:
    table = Table(show_header=True, header_style="bold", title="admin actions (newest first)")
    for column in ("time", "action", "target", "old", "new", "actor", "reason", "ttl"):
        table.add_column(column)
    for a in response.actions:
        table.add_row(_time(a.time), a.action, a.target, a.old_value, a.new_value, a.actor,
                      a.reason, f"{a.ttl_ms} ms" if a.ttl_ms else "")  # fmt: skip
    return _with_token(table, response.next_page_token)


def _kill_table(response: apb.ListKillSwitchesResponse) -> Any:
    table = Table(show_header=True, header_style="bold", title="kill switches in force")
    for column in ("scope", "id", "reason", "actor", "engaged", "expires"):
        table.add_column(column)
    for k in response.kill_switches:
        scope = apb.KillSwitchScope.Name(k.scope).removeprefix("KILL_SWITCH_SCOPE_").lower()
        table.add_row(scope, k.id, k.reason, k.actor, _time(k.engaged_at), _time(k.expires_at))
    return table


def _shadow_table(response: apb.ListShadowRulesResponse) -> Any:
    table = Table(show_header=True, header_style="bold", title="shadowed rules")
    for column in ("rule", "reason", "actor", "since", "expires"):
        table.add_column(column)
    for rule in response.rules:
        table.add_row(rule.rule, rule.reason, rule.actor, _time(rule.updated_at),
                      _time(rule.expires_at))  # fmt: skip
    table.caption = "shadowable: " + " ".join(response.shadowable)
    return table


def _with_token(table: Table, token: str) -> Any:
    if token:
        table.caption = f"more: --page-token {token}"
    return table


__all__: Sequence[str] = [
    "add_health_command",
    "add_ops_verbs",
    "add_serve_ops_options",
    "admin_channel",
    "serve_exchange_with_health",
    "serve_ops_settings",
]
