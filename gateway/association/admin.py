"""``ListSuspectedAssociations``, mixed into :class:`gateway.admin.AdminService`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2
from grpc import aio

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.association.evidence import DEVICE_RE, DEVICE_RULE, normalize_ip
from gateway.association.store import Suspect
from gateway.reasons import FieldViolation, invalid
from gateway.refusals import to_grpc_status

if TYPE_CHECKING:
    from gateway.engine import Gatekeeper

Context = aio.ServicerContext[Any, Any]
DEFAULT_PAGE = 100
MAX_PAGE = 1000

_KIND_FROM_PB = {apb.EVIDENCE_KIND_DEVICE: "device", apb.EVIDENCE_KIND_IP: "ip"}
_KIND_TO_PB = {v: k for k, v in _KIND_FROM_PB.items()}


class SuspectAdmin:
    _keeper: Gatekeeper

    async def ListSuspectedAssociations(
        self, request: apb.ListSuspectedAssociationsRequest, context: Context
    ) -> apb.ListSuspectedAssociationsResponse:
        bad: list[FieldViolation] = []
        kind = _KIND_FROM_PB.get(request.kind, "")
        if request.kind and not kind:
            bad.append(FieldViolation("kind", "unknown value"))
        value = request.value
        ip_value = normalize_ip(value) if value else ""
        device_ok = bool(value) and DEVICE_RE.fullmatch(value) is not None
        if value and kind == "ip" and not ip_value:
            bad.append(FieldViolation("value", "not an IP address"))
        elif value and kind == "device" and not device_ok:
            bad.append(FieldViolation("value", f"not a device id ({DEVICE_RULE})"))
        elif value and not ip_value and not device_ok:
            bad.append(FieldViolation("value", f"a device id ({DEVICE_RULE}) or an IP address"))
        page_size = request.page_size or DEFAULT_PAGE
        if page_size > MAX_PAGE:
            bad.append(FieldViolation("page_size", f"at most {MAX_PAGE}"))
        offset = 0
        if request.page_token:
            if not request.page_token.isdigit():
                bad.append(FieldViolation("page_token", "not a token from this API"))
            else:
                offset = int(request.page_token)
        if bad:
            status = to_grpc_status(invalid(*bad))
            await context.abort(status.code, status.details, status.trailing_metadata)

        policy = self._keeper.evidence.policy
        groups = self._keeper.snapshot.groups
        chosen: list[apb.SuspectedAssociation] = []
        for suspect in await self._keeper.evidence.store.suspects(policy.window_ms):
            if kind and suspect.kind != kind:
                continue
            if value and suspect.value != (ip_value if suspect.kind == "ip" else value):
                continue
            message = _suspect(suspect, policy.threshold(suspect.kind), groups.group_of)
            if request.unlinked_only and message.linked:
                continue
            chosen.append(message)
        page = chosen[offset : offset + page_size]
        more = len(chosen) > offset + page_size
        return apb.ListSuspectedAssociationsResponse(
            suspects=page, next_page_token=str(offset + page_size) if more else ""
        )


def _suspect(suspect: Suspect, max_accounts: int, group_of: Any) -> apb.SuspectedAssociation:
    accounts = [
        apb.AccountSighting(
            account_id=account, last_seen=_timestamp(seen), group_id=group_of(account)
        )
        for account, seen in suspect.accounts
    ]
    groups = {a.group_id for a in accounts}
    return apb.SuspectedAssociation(
        kind=_KIND_TO_PB[suspect.kind],
        value=suspect.value,
        accounts=accounts,
        max_accounts=max_accounts,
        flagged_at=_timestamp(suspect.flagged_ms),
        linked=len(groups) == 1 and "" not in groups,
    )


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
