"""CLI verbs for linked accounts and association suspects (``pretrade-gateway admin ...``)."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.message import Message
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.cli_admin import _ACCOUNT_STATES, CALL_TIMEOUT_S, _admin, _change, _ttl, _verb

_KINDS = {"device": apb.EVIDENCE_KIND_DEVICE, "ip": apb.EVIDENCE_KIND_IP}


def add_group_commands(verbs: Any) -> None:
    p = _verb(verbs, "link", help="link accounts into one group (shared limits, state, STP)")
    p.description = (
        "Link the accounts into GROUP (--group), or into the group some of them are already "
        "in, or into a new group. Accounts linked to another group are refused."
    )
    p.add_argument("account_ids", nargs="+", metavar="ACCOUNT")
    p.add_argument("--group", default="", help="the group id (default: found or new)")
    _change(p, ttl=False)
    p.set_defaults(call=_link)

    p = _verb(verbs, "unlink", help="take an account out of its group (it keeps its own state)")
    p.add_argument("account_id")
    _change(p, ttl=False)
    p.set_defaults(call=_unlink)

    p = _verb(verbs, "show-group", help="show a group: members, state, leverage cap")
    p.add_argument("group_id", nargs="?", default="")
    p.add_argument("--account", default="", help="the group of this account instead")
    p.set_defaults(call=_show_group)

    p = _verb(verbs, "groups", help="list linked groups")
    p.add_argument("--restricted", action="store_true", help="only groups not ACTIVE")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token", default="")
    p.set_defaults(call=_groups)

    p = _verb(verbs, "set-group", help="set the state of every account of a group at once")
    p.description = (
        "Each member gets the most restrictive of its own state and the group's; "
        "an account unlinked later keeps only its own."
    )
    p.add_argument("group_id")
    p.add_argument("state", choices=sorted(_ACCOUNT_STATES))
    _change(p)
    p.set_defaults(call=_set_group)

    p = _verb(verbs, "suspects", help="list devices and IPs shared by too many accounts")
    p.add_argument("--kind", choices=sorted(_KINDS))
    p.add_argument("--value", default="", help="only this device id or IP address")
    p.add_argument("--unlinked", action="store_true", help="leave out those already linked")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token", default="")
    p.set_defaults(call=_suspects)

    p = _verb(verbs, "link-suspects", help="link the accounts seen with one device or IP")
    p.description = "Look up the suspected association and link its accounts into one group."
    p.add_argument("kind", choices=sorted(_KINDS))
    p.add_argument("value", help="the device id or IP address")
    p.add_argument("--group", default="", help="the group id (default: found or new)")
    _change(p, ttl=False)
    p.set_defaults(call=_link_suspects)


async def _link(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.LinkAccountsRequest(
        group_id=args.group, account_ids=args.account_ids, reason=args.reason, actor=args.actor
    )
    return await _admin(channel).LinkAccounts(request, timeout=CALL_TIMEOUT_S)


async def _unlink(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.UnlinkAccountRequest(
        account_id=args.account_id, reason=args.reason, actor=args.actor
    )
    return await _admin(channel).UnlinkAccount(request, timeout=CALL_TIMEOUT_S)


async def _show_group(channel: aio.Channel, args: argparse.Namespace) -> Message:
    if bool(args.group_id) == bool(args.account):
        raise SystemExit("pretrade-gateway: show-group: give GROUP or --account ACCOUNT")
    if args.account:
        request = apb.GetGroupRequest(account_id=args.account)
    else:
        request = apb.GetGroupRequest(group_id=args.group_id)
    return await _admin(channel).GetGroup(request, timeout=CALL_TIMEOUT_S)


async def _groups(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ListGroupsRequest(
        page_size=args.page_size, page_token=args.page_token, restricted_only=args.restricted
    )
    return await _admin(channel).ListGroups(request, timeout=CALL_TIMEOUT_S)


async def _set_group(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.SetAccountStateRequest(
        group_id=args.group_id, state=_ACCOUNT_STATES[args.state],
        reason=args.reason, actor=args.actor, ttl=_ttl(args),
    )  # fmt: skip
    return await _admin(channel).SetAccountState(request, timeout=CALL_TIMEOUT_S)


async def _suspects(channel: aio.Channel, args: argparse.Namespace) -> Message:
    request = apb.ListSuspectedAssociationsRequest(
        kind=_KINDS.get(args.kind or "", apb.EVIDENCE_KIND_UNSPECIFIED), value=args.value,
        unlinked_only=args.unlinked, page_size=args.page_size, page_token=args.page_token,
    )  # fmt: skip
    return await _admin(channel).ListSuspectedAssociations(request, timeout=CALL_TIMEOUT_S)


async def _link_suspects(channel: aio.Channel, args: argparse.Namespace) -> Message:
    admin = _admin(channel)
    found = await admin.ListSuspectedAssociations(
        apb.ListSuspectedAssociationsRequest(kind=_KINDS[args.kind], value=args.value),
        timeout=CALL_TIMEOUT_S,
    )
    if not found.suspects:
        raise SystemExit(
            f"pretrade-gateway: link-suspects: no suspected association for {args.kind} "
            f"{args.value} (see `admin suspects`)"
        )
    accounts = [sighting.account_id for sighting in found.suspects[0].accounts]
    request = apb.LinkAccountsRequest(
        group_id=args.group, account_ids=accounts, reason=args.reason, actor=args.actor
    )
    return await admin.LinkAccounts(request, timeout=CALL_TIMEOUT_S)
