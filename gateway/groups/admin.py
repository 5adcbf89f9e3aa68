"""Admin RPCs for linked accounts, mixed into :class:`gateway.admin.AdminService`.

``LinkAccounts``, ``UnlinkAccount``, ``GetGroup``, ``ListGroups``, and the
group target of ``SetAccountState``. Every change is written to Redis and
published (one script per record), applied to this gateway's snapshot at once,
and logged as ``admin.action`` with who, why, and the old and new values.
Views come from this gateway's snapshot: what it enforces now.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf import timestamp_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.counters.keys import group_subject
from gateway.fields import check_change_meta, check_ident, check_ttl, ttl_not_for
from gateway.groups.tables import GROUP_RE, GROUP_RULE, MAX_GROUP_MEMBERS
from gateway.model import AccountState, FlagKind, StateRecord
from gateway.ops_records import OpsRecord
from gateway.reasons import FieldViolation
from gateway.refusals import abort_if_invalid as _abort_if
from gateway.refusals import abort_invalid as _abort_invalid
from gateway.snapshot import Snapshot, now_ms
from gateway.validation import ACCOUNT_RE, ACCOUNT_RULE

if TYPE_CHECKING:
    from gateway.engine import Gatekeeper

log = structlog.get_logger("gateway.admin")

Context = aio.ServicerContext[Any, Any]
MAX_LINK = MAX_GROUP_MEMBERS
DEFAULT_PAGE = 100
MAX_PAGE = 1000


class GroupAdmin:
    """The linked-account RPCs (see the module doc)."""

    _keeper: Gatekeeper

    async def LinkAccounts(
        self, request: apb.LinkAccountsRequest, context: Context
    ) -> apb.LinkAccountsResponse:
        bad: list[FieldViolation] = []
        if request.group_id:
            check_ident(bad, "group_id", request.group_id, GROUP_RE, GROUP_RULE)
        accounts = list(dict.fromkeys(request.account_ids))
        if not accounts:
            bad.append(FieldViolation("account_ids", "required: the accounts to link"))
        elif len(accounts) > MAX_LINK:
            bad.append(FieldViolation("account_ids", f"at most {MAX_LINK} per call"))
        for index, account in enumerate(accounts):
            check_ident(bad, f"account_ids[{index}]", account, ACCOUNT_RE, ACCOUNT_RULE)
        check_change_meta(bad, request.reason, request.actor)
        await _abort_if(context, bad)

        groups = self._keeper.snapshot.groups
        current = {account: groups.group_of(account) for account in accounts}
        if request.group_id:
            group_id = request.group_id
            elsewhere = {a: g for a, g in current.items() if g and g != group_id}
            if elsewhere:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"already linked to another group: {_listing(elsewhere)}; unlink first",
                )
        else:
            found = sorted({g for g in current.values() if g})
            if len(found) > 1:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the accounts are in different groups ({', '.join(found)}): name the group "
                    "and unlink the others first",
                )
            group_id = found[0] if found else _new_group_id(groups.group_ids())
        after = set(groups.members_of(group_id)) | set(accounts)
        if len(after) < 2:
            await _abort_invalid(
                context, [FieldViolation("account_ids", "a group links at least two accounts")]
            )
        if len(after) > MAX_GROUP_MEMBERS:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"group {group_id} would have {len(after)} members (at most {MAX_GROUP_MEMBERS})",
            )

        linked: list[str] = []
        refused: dict[str, str] = {}
        snapshot = self._keeper.snapshot
        memberships = self._keeper.memberships
        for account in sorted(accounts):
            if current[account] == group_id:
                continue
            result = await memberships.link(account, group_id, request.reason, request.actor)
            if not result.ok:
                refused[account] = result.held
                break
            snapshot.apply(FlagKind.GROUP_MEMBER, account, result.new, result.version)
            linked.append(account)
        if refused:
            # Linked elsewhere meanwhile (through another gateway): undo this call's links,
            # so that it is all or nothing.
            for account in linked:
                undone = await memberships.unlink(account, group_id)
                if undone.ok:
                    snapshot.apply(FlagKind.GROUP_MEMBER, account, None, undone.version)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"already linked to another group: {_listing(refused)}; nothing was linked",
            )
        log.info(
            "admin.action",
            action="link_accounts",
            actor=request.actor,
            reason=request.reason,
            target=group_id,
            old=sorted(set(groups.members_of(group_id)) - set(linked)),
            new=list(groups.members_of(group_id)),
            linked=linked,
        )
        return apb.LinkAccountsResponse(
            group=group_view(self._keeper, group_id, now_ms()), linked=linked
        )

    async def UnlinkAccount(
        self, request: apb.UnlinkAccountRequest, context: Context
    ) -> apb.UnlinkAccountResponse:
        bad: list[FieldViolation] = []
        check_ident(bad, "account_id", request.account_id, ACCOUNT_RE, ACCOUNT_RULE)
        check_change_meta(bad, request.reason, request.actor)
        await _abort_if(context, bad)
        snapshot = self._keeper.snapshot
        group_id = snapshot.groups.group_of(request.account_id)
        if not group_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"account {request.account_id} is not linked to any group",
            )
        result = await self._keeper.memberships.unlink(request.account_id, group_id)
        if not result.ok:
            await context.abort(
                grpc.StatusCode.ABORTED,
                f"account {request.account_id} changed group meanwhile "
                f"(now {result.held or 'none'}); look again and retry",
            )
        snapshot.apply(FlagKind.GROUP_MEMBER, request.account_id, None, result.version)
        log.info(
            "admin.action",
            action="unlink_account",
            actor=request.actor,
            reason=request.reason,
            target=request.account_id,
            old=group_id,
            new=None,
        )
        return apb.UnlinkAccountResponse(
            group_id=group_id, group=group_view(self._keeper, group_id, now_ms())
        )

    async def GetGroup(
        self, request: apb.GetGroupRequest, context: Context
    ) -> apb.GetGroupResponse:
        bad: list[FieldViolation] = []
        target = request.WhichOneof("target")
        if target is None:
            bad.append(FieldViolation("target", "required: group_id or account_id"))
        elif target == "group_id":
            check_ident(bad, "group_id", request.group_id, GROUP_RE, GROUP_RULE)
        else:
            check_ident(bad, "account_id", request.account_id, ACCOUNT_RE, ACCOUNT_RULE)
        await _abort_if(context, bad)
        groups = self._keeper.snapshot.groups
        if target == "account_id":
            group_id = groups.group_of(request.account_id)
            if not group_id:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"account {request.account_id} is not linked to any group",
                )
        else:
            group_id = request.group_id
            if not groups.members_of(group_id) and group_id not in groups.states:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no group {group_id}")
        return apb.GetGroupResponse(group=group_view(self._keeper, group_id, now_ms()))

    async def ListGroups(
        self, request: apb.ListGroupsRequest, context: Context
    ) -> apb.ListGroupsResponse:
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            await _abort_invalid(context, [FieldViolation("page_size", f"at most {MAX_PAGE}")])
        try:
            after = _decode_token(request.page_token)
        except ValueError:
            await _abort_invalid(
                context, [FieldViolation("page_token", "not a token from this API")]
            )
        groups = self._keeper.snapshot.groups
        at = now_ms()
        chosen = [
            g
            for g in groups.group_ids()
            if g > after and (not request.restricted_only or groups.state(g, at) is not None)
        ][: page_size + 1]
        token = _encode_token(chosen[page_size - 1]) if len(chosen) > page_size else ""
        return apb.ListGroupsResponse(
            groups=[group_view(self._keeper, g, at) for g in chosen[:page_size]],
            next_page_token=token,
        )

    async def _set_group_state(
        self, request: apb.SetAccountStateRequest, context: Context
    ) -> apb.SetAccountStateResponse:
        """``SetAccountState`` with ``group_id``: one record every member's check consults."""
        bad: list[FieldViolation] = []
        if request.account_id:
            bad.append(FieldViolation("account_id", "give account_id or group_id, not both"))
        check_ident(bad, "group_id", request.group_id, GROUP_RE, GROUP_RULE)
        if request.state not in AccountState._value2member_map_:
            bad.append(
                FieldViolation("state", "required: ACTIVE, REDUCE_ONLY, FROZEN or DEACTIVATED")
            )
        check_change_meta(bad, request.reason, request.actor)
        clears = int(request.state) == AccountState.ACTIVE
        ttl_ms = check_ttl(bad, request, refused_because=ttl_not_for("ACTIVE", clears))
        await _abort_if(context, bad)
        keeper = self._keeper
        groups = keeper.snapshot.groups
        if not clears and not groups.members_of(request.group_id):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no group {request.group_id}: link accounts into it first",
            )
        state = AccountState(request.state)
        fields = (
            None
            if clears
            else {"value": str(int(state)), "reason": request.reason, "actor": request.actor}
        )
        kind = FlagKind.GROUP_STATE
        result = await keeper.flags.write(kind, request.group_id, fields, ttl_ms)
        keeper.snapshot.apply(kind, request.group_id, result.new, result.version)
        previous = AccountState(int(result.old["value"])) if result.old else AccountState.ACTIVE
        log.info(
            "admin.action",
            action="set_group_state",
            actor=request.actor,
            reason=request.reason,
            target=request.group_id,
            members=list(groups.members_of(request.group_id)),
            old=previous.name,
            new=state.name,
            ttl_ms=ttl_ms or None,
        )
        return apb.SetAccountStateResponse(
            previous_state=int(previous),  # type: ignore[arg-type]
            group=group_view(keeper, request.group_id, now_ms()),
        )


# -- views ---------------------------------------------------------------------------


def group_view(keeper: Gatekeeper, group_id: str, at_ms: int) -> apb.Group:
    snapshot = keeper.snapshot
    groups = snapshot.groups
    members = groups.members_of(group_id)
    message = apb.Group(
        group_id=group_id,
        state=apb.ACCOUNT_STATE_ACTIVE,
        counting_subject=group_subject(group_id),
        tracked_orders=sum(snapshot.own_orders.count(m) for m in members),
    )
    for account in members:
        membership = groups.members[account]
        own = snapshot.account_state(account, at_ms)
        member = apb.GroupMember(
            account_id=account,
            reason=membership.reason,
            actor=membership.actor,
            linked_at=_timestamp(membership.updated_ms),
            state=own.value if own is not None else apb.ACCOUNT_STATE_ACTIVE,  # type: ignore[arg-type]
        )
        message.members.append(member)
    record = groups.state(group_id, at_ms)
    if record is not None:
        _fill_state(message, record)
    leverage: OpsRecord[int] | None = snapshot.ops_record(FlagKind.GROUP_LEVERAGE, group_id, at_ms)
    if leverage is not None:
        message.leverage_limit.CopyFrom(
            apb.LeverageLimit(
                max_leverage=leverage.value,
                reason=leverage.reason,
                actor=leverage.actor,
                updated_at=_timestamp(leverage.updated_ms),
            )
        )
        if leverage.expires_ms:
            message.leverage_limit.expires_at.CopyFrom(_timestamp(leverage.expires_ms))
    return message


def fill_account_group(message: apb.Account, snapshot: Snapshot, account_id: str) -> None:
    """Add the account's group and the state enforced (its own or its group's, the stricter)."""
    at = now_ms()
    message.group_id = snapshot.groups.group_of(account_id)
    found = snapshot.groups.effective_state(snapshot.account_state(account_id, at), account_id, at)
    state = found[0].value if found is not None else apb.ACCOUNT_STATE_ACTIVE
    message.effective_state = state  # type: ignore[assignment]


def _fill_state(message: apb.Group, record: StateRecord) -> None:
    message.state = record.value  # type: ignore[assignment]
    message.state_reason = record.reason
    message.state_actor = record.actor
    message.state_updated_at.CopyFrom(_timestamp(record.updated_ms))
    if record.expires_ms:
        message.state_expires_at.CopyFrom(_timestamp(record.expires_ms))


# -- helpers -------------------------------------------------------------------------


def _new_group_id(taken: Iterable[str]) -> str:
    used = set(taken)
    while True:
        candidate = f"g-{secrets.token_hex(5)}"
        if candidate not in used:
            return candidate


def _listing(accounts: dict[str, str]) -> str:
    return ", ".join(f"{a} ({g})" for a, g in sorted(accounts.items()))


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("bad token") from exc
